"""anywidget components: thin controllers over the engine, linked through a session and a shared state."""

from .atlas import ConceptAtlas
from .channels import ChannelSelector
from .explorer import Explorer
from .gallery import ReferenceGallery
from .graph import AttributionGraphView
from .heatmap import HeatmapView
from .heatmaps import ConditionalHeatmaps
from .sample import SampleView
from .session import ExplorerState, Session

__all__ = [
    "AttributionGraphView",
    "ChannelSelector",
    "ConceptAtlas",
    "ConditionalHeatmaps",
    "Explorer",
    "ExplorerState",
    "HeatmapView",
    "ReferenceGallery",
    "SampleView",
    "Session",
]
