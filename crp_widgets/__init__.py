"""crp_widgets: Concept Relevance Propagation and Relevance Maximization, explored in Jupyter."""

from . import demo
from .engine import CRP

__all__ = ["CRP", "demo"]
__version__ = "0.1.0"
