"""Tensors to images: colormaps, overlays, crops."""
