"""Analysis benchmarks (CRP paper Sec. 4): each measurement against the bare PyTorch cost of the same work.

Run: ``python benchmarks/bench_analyses.py [--repeats N] [--only NAME,...]``

One function per measurement, registered in ``MEASUREMENTS``; each returns rows ``(work, ours, bare, baseline)``
(seconds) and ``main`` prints them as a table with ratios. Candidates run interleaved, round after round, each
keeping its best time (:func:`bench_engine.race`); nothing is asserted.

Filter flipping (Sec. 4.1, :func:`crp_widgets.engine.flipping.filter_flipping`): one curve, most relevant channels
first, for one input: one attribution (the channel ranking), one unedited forward pass and one edited forward pass
per step, batched; by default the layers below the flipped layer run once (``share_lower``), and the second row
runs every step through the whole model. The bare baseline is the same number of plain whole forward passes
(``torch.no_grad``, the same batch size) of the model, without the ranking.
"""

import argparse
import sys
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import Inputs, race

from crp_widgets import demo
from crp_widgets.engine import CRP
from crp_widgets.engine.flipping import filter_flipping, flip_steps

BATCH = 64  # rows per forward pass, for both candidates


def bare_forwards(model, rows, batch_size=BATCH):
    """``rows`` plain forward passes of one input, in batches (no gradients)."""

    def run(x):
        with torch.no_grad():
            for start in range(0, rows, batch_size):
                model(x.expand(min(batch_size, rows - start), *x.shape[1:]))

    return run


def _flipping(name, model, shape, layer, steps, repeats):
    crp = CRP(model)

    def ours(share_lower):
        def run(x):
            crp.clear_cache()
            filter_flipping(crp, x, layer, order="most", steps=steps, batch_size=BATCH, share_lower=share_lower)

        return run

    rows = len(steps) + 1  # the unedited pass and one per step
    candidates = {"shared": ours(True), "whole": ours(False), "bare": bare_forwards(model, rows)}
    best = race(candidates, repeats, Inputs(shape))
    work = f"{name}: one flipping curve of {layer} ({len(steps)} steps, {steps[-1]} channels)"
    return [
        (work, best["shared"], best["bare"], f"{rows} forward passes"),
        (f"{name}: the same, every row a whole forward pass", best["whole"], best["bare"], f"{rows} forward passes"),
    ]


def flipping_demo(repeats):
    """Filter flipping on the demo CNN at 64x64: ``features.conv4``, every one of its 96 channels a step."""
    model = demo.load_model()
    return _flipping("demo CNN 64x64", model, (1, 3, 64, 64), "features.conv4", flip_steps(96), repeats)


def flipping_vgg16(repeats):
    """Filter flipping on vgg16 at 224x224 (``weights=None``): ``features.28``, 512 channels in 33 steps."""
    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None).eval()
    return _flipping("vgg16 224x224", model, (1, 3, 224, 224), "features.28", flip_steps(512, 32), repeats)


def similarity_vgg16(repeats):
    """Concept similarity (Sec. 4.4, Eq. 30-31) of vgg16 ``features.28`` (512 channels, ``weights=None``).

    A store of 256 random 64x64 images (RelMax top-8) is scanned first, not timed. ``rho`` (the reference samples'
    forward passes and the cosines) is compared with plain forward passes of the same distinct samples (batch 32);
    the t-SNE embedding (Barnes-Hut on one thread) with scikit-learn's ``TSNE`` at its defaults (all threads).
    """
    import tempfile

    from sklearn.manifold import TSNE

    from crp_widgets.engine.scan import scan
    from crp_widgets.engine.similarity import concept_similarity, embed

    torch.manual_seed(0)
    model, layer = torchvision.models.vgg16(weights=None).eval(), "features.28"
    crp = CRP(model)
    generator = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.rand(256, 3, 64, 64, generator=generator), torch.randint(0, 1000, (256,), generator=generator)
    )
    found = {}
    with tempfile.TemporaryDirectory() as path:
        store = scan(crp, data, [layer], path, k=8, class_k=1, batch_size=16, progress=False)
        indices = sorted({r.index for c in range(512) for r in store.references(layer, c, k=8)})

        def ours(_):
            found["rho"] = concept_similarity(crp, store, {"dataset": data}, layer, k=8, batch_size=32)

        def bare(_):
            with torch.no_grad():
                for start in range(0, len(indices), 32):
                    model(torch.stack([data[i][0] for i in indices[start : start + 32]]))

        rho = race({"ours": ours, "bare": bare}, repeats)
    distance = (1 - found["rho"]).clamp(min=0).double().numpy()
    distance[range(512), range(512)] = 0

    def sklearn_default(_):
        TSNE(metric="precomputed", init="random", random_state=0, perplexity=30).fit_transform(distance)

    tsne = race({"ours": lambda _: embed(found["rho"], seed=0), "bare": sklearn_default}, repeats)
    return [
        (f"vgg16 64x64: rho of features.28 (512 x 8 refs, {len(indices)} samples)", rho["ours"], rho["bare"],
         f"{len(indices)} forward passes"),
        ("vgg16: t-SNE of its 512 channels from 1 - rho", tsne["ours"], tsne["bare"], "sklearn TSNE defaults"),
    ]  # fmt: skip


MEASUREMENTS = {
    "flipping-demo": flipping_demo,
    "flipping-vgg16": flipping_vgg16,
    "similarity-vgg16": similarity_vgg16,
}


def main():
    """Run the chosen measurements and print each with its ratio to the bare cost."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=",".join(MEASUREMENTS), help="comma-separated: " + ", ".join(MEASUREMENTS))
    args = parser.parse_args()
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in names if name not in MEASUREMENTS]
    if unknown:
        parser.error(f"unknown measurement(s) {unknown}; choose from {list(MEASUREMENTS)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats} rounds")
    print(f"{'work':<72} {'ours':>9} {'bare':>9} {'ratio':>6}  baseline")
    for name in names:
        for work, ours, bare, baseline in MEASUREMENTS[name](args.repeats):
            print(f"{work:<72} {ours:>8.3f}s {bare:>8.3f}s {ours / bare:>6.2f}  {baseline}", flush=True)


if __name__ == "__main__":
    main()
