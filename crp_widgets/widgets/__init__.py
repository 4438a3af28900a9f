"""anywidget components: thin controllers over the engine, linked through a session and a shared state.

The analysis views (What-if, Decision, Other classes, Similar concepts, My concepts, Global importance, Class
profiles) and the 1-D ``SignalView`` are imported when first used (they pull in bqplot and scikit-learn).
"""

import importlib

from .atlas import ConceptAtlas
from .channels import ChannelSelector
from .component import Component, Panel
from .explorer import Explorer
from .gallery import ReferenceGallery
from .graph import AttributionGraphView
from .heatmap import HeatmapView
from .heatmaps import ConditionalHeatmaps
from .sample import SampleView
from .session import ExplorerState, Session

_LAZY = {
    "ClassProfilesView": "profiles",
    "ConceptSimilarityView": "similarity",
    "DecisionView": "flipping",
    "GlobalImportanceView": "occluder",
    "InverseSearchView": "inverse",
    "SignalView": "signal",
    "UserConceptView": "concepts",
    "WhatIfView": "whatif",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AttributionGraphView",
    "ChannelSelector",
    "Component",
    "ConceptAtlas",
    "ConditionalHeatmaps",
    "Explorer",
    "ExplorerState",
    "HeatmapView",
    "Panel",
    "ReferenceGallery",
    "SampleView",
    "Session",
    *sorted(_LAZY),
]
