"""anywidget components (thin controllers over the engine)."""
