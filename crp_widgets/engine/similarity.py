"""Concept similarity in latent space (CRP paper Sec. 4.4, Eq. 30-31, Fig. 24-26, A.9).

For every channel ``q`` of a layer, its ``k`` RelMax references ``X*(k,q)`` (full samples, not crops) are run through
the model; ``z_q^m`` is the ReLU-activated output map of channel ``q`` for reference ``x_m`` (all spatial neurons).
The similarity of channels ``q`` and ``p`` over ``q``'s references is the mean cosine of their maps (Eq. 31)::

    cos(phi)_qp = 1/k sum_{x_m in X*(k,q)} z_q^m . z_p^m / (||z_q^m|| ||z_p^m||)

and ``rho_qp = (cos(phi)_qp + cos(phi)_pq) / 2`` (Eq. 30) symmetrises it: the reference sets of ``q`` and ``p``
differ. With ReLU-activated maps ``rho`` lies in [0, 1]; ``1 - rho`` is a distance, embedded in 2-D with t-SNE.

Every reference sample is run once (its maps serve every channel that references it), in batches, with the model's
plain forward pass (:meth:`CRP.evaluate`); the cosines are vectorised over (channel, reference) pairs.
"""

import numpy as np
import torch

from .errors import CRPError, check_count

__all__ = ["concept_similarity", "embed", "similar"]


def _sample(datasets, dataset, index):
    if dataset not in datasets:
        raise CRPError(f"the store names dataset {dataset!r}; give it in `datasets` (got {sorted(datasets)})")
    item = datasets[dataset][index]
    return torch.as_tensor(item[0] if isinstance(item, (tuple, list)) else item)


def concept_similarity(crp, store, datasets, layer, k=8, mode="relevance", target="sum", batch_size=32,
                       pair_budget=2**24, progress=None):  # fmt: skip
    """The symmetrised cosine similarity ``rho`` ``[C, C]`` of the channels of ``layer`` (Eq. 30-31).

    Parameters
    ----------
    crp : CRP
        The store's model.
    store : Store
        A reference store holding ``layer``.
    datasets : dict[str, torch.utils.data.Dataset]
        The datasets named in the store (items ``(input, label)``).
    layer : str
        The layer whose channels are compared.
    k : int
        References per channel (the paper's ``X*(k,q)``; fewer when the store holds fewer).
    mode, target : str
        Which references (see :meth:`Store.references`); RelMax-sum (``"relevance"``, ``"sum"``) as in Sec. 4.4.
    batch_size : int
        Reference samples per forward pass.
    pair_budget : int
        Upper bound on the elements of one ``[pairs, C, positions]`` block of the vectorised cosine.
    progress : callable, optional
        Called as ``progress(done, total)`` after every batch; raise from it (e.g. a cancellation) to stop.

    Returns
    -------
    torch.Tensor
        ``rho``, float32 ``[C, C]``, symmetric, in [0, 1], ones on the diagonal. A channel without references
        contributes no ``cos(phi)_q.`` term (its row is then ``cos(phi)_.q / 2``); maps that are zero everywhere
        have cosine 0.
    """
    check_count(batch_size, "batch_size must be a positive integer")
    channels = store._layer(layer)["channels"]
    # X*(k,q) for every channel q, and the distinct samples they need (each is run once).
    samples, pairs_q, pairs_m = {}, [], []
    for q in range(channels):
        for reference in store.references(layer, q, mode=mode, target=target, k=k):
            m = samples.setdefault((reference.dataset, reference.index), len(samples))
            pairs_q.append(q)
            pairs_m.append(m)
    cos = torch.zeros(channels, channels, dtype=torch.float64)
    count = torch.bincount(torch.tensor(pairs_q, dtype=torch.long), minlength=channels)
    pairs_q = torch.tensor(pairs_q, dtype=torch.long)
    pairs_m = torch.tensor(pairs_m, dtype=torch.long)
    keys = list(samples)
    crp.validate_layer(layer)
    for start in range(0, len(keys), batch_size):
        x = torch.stack([_sample(datasets, *key) for key in keys[start : start + batch_size]])
        _, found = crp.evaluate(x, record=[layer])
        z = found[layer].float().clamp(min=0)  # ReLU-activated maps (footnote 13)
        z = z.movedim(crp.channel_axis(layer) % z.ndim, 1).reshape(len(x), channels, -1)  # [B, C, positions]
        z = torch.nn.functional.normalize(z, dim=2)  # z / ||z||, zero maps stay zero
        inside = (pairs_m >= start) & (pairs_m < start + len(x))
        q, m = pairs_q[inside], pairs_m[inside] - start
        step = max(1, pair_budget // (channels * z.shape[2]))
        for lo in range(0, len(q), step):
            qs, ms = q[lo : lo + step], m[lo : lo + step]
            # cos of z_q^m with every z_p^m: [pairs, C]
            values = torch.einsum("ps,pcs->pc", z[ms, qs], z[ms]).double()
            cos.index_add_(0, qs, values)
        if progress is not None:
            progress(min(start + batch_size, len(keys)), len(keys))
    cos = cos / count.clamp(min=1)[:, None]
    rho = ((cos + cos.T) / 2).float()
    rho.fill_diagonal_(1.0)
    return rho


def _rho(rho):
    rho = torch.as_tensor(rho, dtype=torch.float32)
    if rho.ndim != 2 or rho.shape[0] != rho.shape[1] or rho.shape[0] < 2:
        raise CRPError(f"rho must be a square [C, C] similarity matrix of at least 2 channels, got {list(rho.shape)}")
    return rho


def embed(rho, seed=0, perplexity=None):
    """A 2-D t-SNE embedding of the channels from the distance ``d = 1 - rho`` (Sec. 4.4, Fig. 24).

    Parameters
    ----------
    rho : torch.Tensor or numpy.ndarray
        ``[C, C]`` similarity from :func:`concept_similarity`.
    seed : int
        Random state of t-SNE (random initialisation, as a precomputed metric requires).
    perplexity : float, optional
        Default ``min(30, (C - 1) / 3)``, at least 1.

    Returns
    -------
    numpy.ndarray
        ``[C, 2]`` coordinates, one point per channel.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    rho = _rho(rho)
    distance = (1 - rho).clamp(min=0).double().numpy()
    np.fill_diagonal(distance, 0.0)
    distance = (distance + distance.T) / 2
    channels = len(distance)
    if perplexity is None:
        perplexity = max(1.0, min(30.0, (channels - 1) / 3))
    if not 0 < perplexity < channels:
        raise CRPError(f"perplexity must be between 0 and the number of channels ({channels}), got {perplexity!r}")
    # Barnes-Hut (sklearn's default) on one thread: OpenMP threads spinning on busy cores made t-SNE of a hundred
    # points take seconds instead of a fraction of one; one thread also beat exact gradients at 512 channels.
    tsne = TSNE(n_components=2, metric="precomputed", init="random", random_state=seed, perplexity=perplexity)
    with threadpool_limits(limits=1):
        return tsne.fit_transform(distance).astype(np.float32)


def similar(rho, channel, k=5):
    """The ``k`` channels most similar to ``channel`` by ``rho``: ``[(channel, rho), ...]``, most similar first."""
    rho = _rho(rho)
    channels = rho.shape[0]
    if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < channels:
        raise CRPError(f"channel {channel!r} is out of range (valid: 0 to {channels - 1})")
    check_count(k, "k must be a positive integer")
    row = rho[channel].clone()
    row[channel] = -float("inf")
    order = torch.argsort(row, descending=True, stable=True)[: min(k, channels - 1)]
    return [(int(c), float(rho[channel, c])) for c in order]
