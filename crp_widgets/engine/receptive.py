"""Receptive fields of neurons with the LRP flat rule (CRP paper Sec. 2.3.4, Eq. 25).

Relevance placed on one neuron is spread by the flat rule, which ignores weights and inputs, down to the input:
exactly the input positions connected to the neuron receive relevance (more where more paths connect them).
Pooling layers spread it evenly over their window, whatever unit won a max-pooling. :meth:`CRP.receptive_fields`
runs the model's graph in its flat mode; this module holds what is shared with the reference views.
"""

import torch


def bounding_box(mask):
    """``(top, bottom, left, right)`` of a 2-D boolean mask, ``(start, end)`` of a 1-D one (exclusive ends)."""
    box = []
    for dim in range(mask.ndim):
        other = [d for d in range(mask.ndim) if d != dim]
        hits = torch.nonzero(mask.any(dim=other) if other else mask).flatten()
        box += [int(hits.min()), int(hits.max()) + 1] if len(hits) else [0, 0]
    return tuple(box)
