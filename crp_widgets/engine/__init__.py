"""Kernel-side engine: torch + zennit only, no widget imports.

Modules: ``composites`` (rules per architecture), ``propagation`` (executing zennit rules on a recorded forward
pass), ``forward`` (recording it), ``audit`` (what rules cannot reach), ``inspection`` (layers and input checks),
``crp`` (the :class:`CRP` controller), ``results`` (result types), ``errors``.
"""

from .composites import default_composite, describe
from .crp import CRP
from .errors import CRPError, ModelForwardError, UnknownLayerError, UnsupportedModelError
from .inspection import LayerInfo, explainable_layers
from .results import Attribution, ChannelRelevance, RegionRelevance, Subconcepts

__all__ = [
    "CRP",
    "Attribution",
    "CRPError",
    "ChannelRelevance",
    "LayerInfo",
    "ModelForwardError",
    "RegionRelevance",
    "Subconcepts",
    "UnknownLayerError",
    "UnsupportedModelError",
    "default_composite",
    "describe",
    "explainable_layers",
]
