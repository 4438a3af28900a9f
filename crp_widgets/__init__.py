"""crp_widgets: Concept Relevance Propagation and Relevance Maximization, explored in Jupyter."""

from . import demo
from .engine import CRP
from .engine.references import ReferenceViews
from .engine.scan import scan
from .engine.store import Store, open_store
from .widgets import Explorer

__all__ = ["CRP", "Explorer", "ReferenceViews", "Store", "demo", "open_store", "scan"]
__version__ = "0.1.0"
