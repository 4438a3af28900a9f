"""Deterministic top-k bookkeeping for reference scans (Eq. 20-21), vectorised over channels.

Reference keys encode ``(dataset, index)`` in one int64 (:func:`encode`). Ties in value are broken by the key, so
merging is associative and commutative: the result does not depend on batch sizes, on the order batches arrive in,
on checkpoints, or on how many processes shared the work.
"""

import torch

EMPTY = -1
_INDEX_BITS = 40


def encode(dataset, index):
    """One int64 key for sample ``index`` of dataset number ``dataset``."""
    return (torch.as_tensor(dataset, dtype=torch.int64) << _INDEX_BITS) | torch.as_tensor(index, dtype=torch.int64)


def decode(key):
    """``(dataset, index)`` of a key."""
    key = int(key)
    return key >> _INDEX_BITS, key & ((1 << _INDEX_BITS) - 1)


def empty(shape, k, dtype=torch.float32):
    """An empty top-k table ``{values, keys, positions}`` of ``shape + (k,)``."""
    return {
        "values": torch.full((*shape, k), -torch.inf, dtype=dtype),
        "keys": torch.full((*shape, k), EMPTY, dtype=torch.int64),
        "positions": torch.zeros((*shape, k), dtype=torch.int32),
    }


def merge(table, values, keys, positions):
    """Merge candidates (last dimension) into a top-k table: largest values first, ties by smaller key.

    Parameters
    ----------
    table : dict[str, torch.Tensor]
        ``values``, ``keys``, ``positions`` of shape ``[..., k]``.
    values, keys, positions : torch.Tensor
        Candidates of shape ``[..., n]`` (same leading dimensions).

    Returns
    -------
    dict[str, torch.Tensor]
        The new table, of shape ``[..., k]``.
    """
    k = table["values"].shape[-1]
    all_values = torch.cat([table["values"], values.to(table["values"].dtype)], dim=-1)
    all_keys = torch.cat([table["keys"], keys], dim=-1)
    all_positions = torch.cat([table["positions"], positions.to(table["positions"].dtype)], dim=-1)
    order = torch.argsort(all_keys, dim=-1, stable=True)
    all_values, all_keys, all_positions = (t.gather(-1, order) for t in (all_values, all_keys, all_positions))
    order = torch.argsort(all_values, dim=-1, descending=True, stable=True)[..., :k]
    return {
        "values": all_values.gather(-1, order),
        "keys": all_keys.gather(-1, order),
        "positions": all_positions.gather(-1, order),
    }


def merge_tables(first, second):
    """Merge two top-k tables of the same shape."""
    return merge(first, second["values"], second["keys"], second["positions"])
