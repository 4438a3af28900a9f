"""Concept benchmarks: dissection labels and class profiles (Islam & Tushar 2021) against the bare PyTorch cost.

Everything is measured on the same machine, in the same process.

Run: ``python benchmarks/bench_concepts.py [--only vgg16,demo,profiles] [--images 1000] [--size 64]``

1. ``vgg16``: label the 512 channels of torchvision vgg16 (``weights=None``) ``features.28`` over ``--images``
   random images of ``--size`` pixels with random synthetic masks (10 concepts, random rectangles), against the bare
   cost of the same two forward passes (``model(x)`` under ``no_grad``) plus reading the masks.
2. ``demo``: label ``features.conv3`` and ``features.conv4`` of the demo CNN over 1,000 demo images (real masks).
3. ``profiles``: CRP and Integrated Gradients class profiles of the demo CNN's four conv layers (20 samples per
   class, 16 IG steps) and the ablation table (top / bottom 1, 2, 3 %) of one class on ``features.conv4``.
4. ``occluder`` (only when named in ``--only``): an AfI global feature occluder (Wu et al., CVPR 2020) per step
   against the bare forward + backward of the same inputs, demo CNN and vgg16 at 224 (see :func:`bench_occluder`).

Timings are best-of-repeats; nothing is asserted. Works on a GPU when one is present (``--device cuda``).
"""

import argparse
import time

import numpy as np
import torch
import torchvision

from crp_widgets import demo as demo_world
from crp_widgets.engine import CRP
from crp_widgets.engine.dissection import dissect
from crp_widgets.engine.profiles import ablation_table, class_profiles


def _best(function, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class SyntheticMasks:
    """Random rectangles for ``concepts`` concepts per image (each present with probability 1/2), deterministic."""

    def __init__(self, images, size, concepts=10, seed=0):
        rng = np.random.default_rng(seed)
        self.size = size
        self.boxes = []
        for _ in range(images):
            boxes = {}
            for c in range(concepts):
                if rng.random() < 0.5:
                    top, left = rng.integers(0, size // 2, 2)
                    height, width = rng.integers(size // 8, size // 2, 2)
                    boxes[f"concept{c}"] = (top, left, height, width)
            self.boxes.append(boxes)

    def __call__(self, index):
        masks = {}
        for name, (top, left, height, width) in self.boxes[index].items():
            mask = np.zeros((self.size, self.size), bool)
            mask[top : top + height, left : left + width] = True
            masks[name] = mask
        return masks


def bench_vgg16(images=1000, size=64, batch_size=50, repeats=1, device="cpu"):
    """Dissect vgg16 ``features.28`` (512 channels) over ``images`` random images; bare: two forward passes."""
    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None).eval().to(device)
    data = torch.utils.data.TensorDataset(torch.rand(images, 3, size, size), torch.zeros(images, dtype=torch.int64))
    masks = SyntheticMasks(images, size)
    crp = CRP(model)

    def labelled():
        dissect(crp, data, "features.28", masks, batch_size=batch_size)
        _sync(device)

    def bare():
        with torch.no_grad():
            for _ in range(2):
                for start in range(0, images, batch_size):
                    model(data.tensors[0][start : start + batch_size].to(device))
        for index in range(images):
            masks(index)
        _sync(device)

    seconds = {"dissect": _best(labelled, repeats), "bare": _best(bare, repeats)}
    return {
        "images": images,
        "size": size,
        "device": str(device),
        **seconds,
        "ratio": seconds["dissect"] / seconds["bare"],
    }


def bench_demo(images=1000, repeats=1, device="cpu"):
    """Dissect the demo CNN's features.conv3 and features.conv4 over ``images`` demo images with their masks."""
    world = demo_world.load(length=images)
    crp = CRP(world.model.to(device))
    found = {}
    for layer in ("features.conv3", "features.conv4"):
        labels = None

        def run(layer=layer):
            nonlocal labels
            labels = dissect(crp, world.dataset, layer, world.masks, batch_size=64)

        found[layer] = {
            "seconds": _best(run, repeats),
            "labels": labels.counts(),
            "mean_iou": float(labels.best_iou.mean()),
        }

    def bare():
        with torch.no_grad():
            for _ in range(2):
                for start in range(0, images, 64):
                    x = torch.stack([world.dataset[i][0] for i in range(start, min(images, start + 64))])
                    world.model(x.to(device))
        for index in range(images):
            world.masks(index)

    found["bare (2 forward passes + masks)"] = _best(bare, repeats)
    return found


def _spearman(a, b):
    """Spearman rank correlation of two score vectors."""
    ranks = [torch.argsort(torch.argsort(torch.as_tensor(v).double())).double() for v in (a, b)]
    ranks = [r - r.mean() for r in ranks]
    return float((ranks[0] * ranks[1]).sum() / (ranks[0].norm() * ranks[1].norm()))


def bench_profiles(per_class=20, steps=16, repeats=1, device="cpu"):
    """Class profiles (CRP, IG) of the demo CNN's conv layers and one ablation table."""
    world = demo_world.load(length=max(200, 10 * per_class))
    crp = CRP(world.model.to(device))
    layers = [f"features.conv{i}" for i in range(1, 5)]
    found, profiles = {}, {}
    for method in ("crp", "ig"):

        def run(method=method):
            profiles[method] = class_profiles(crp, world.dataset, layers, method, per_class, steps=steps)

        found[f"profiles {method}"] = _best(run, repeats)
    found["CRP vs IG channel ranking (Spearman, mean over classes)"] = {
        layer: round(float(np.mean([_spearman(profiles["crp"].scores(c, layer), profiles["ig"].scores(c, layer))
                                    for c in profiles["crp"].classes])), 3)
        for layer in layers
    }  # fmt: skip
    cls = world.classes.index(world.shortcut_class)
    scores = profiles["crp"].scores(cls, "features.conv4")
    table = []

    def ablation():
        table[:] = ablation_table(crp, world.dataset, "features.conv4", scores, per_class=per_class)

    found["ablation table (6 variants)"] = _best(ablation, repeats)
    found["green cross accuracy"] = {f"{r.which} {r.fraction:.0%}": float(r.after[cls]) for r in table}
    found["green cross accuracy"]["before"] = float(table[0].before[cls])
    return found


def bench_occluder(steps=20, vgg_steps=3, repeats=2, device="cpu"):
    """AfI occluder (Wu et al. 2020, Eq. 4-8) per step against the bare forward + backward of the same ``2N`` inputs.

    One step runs the model on ``x - delta`` and ``t(x - delta)`` (Eq. 5) and one backward to ``delta``, plus the
    transformations and the Adam/prox update; bare: the same forward and ``autograd.grad``, nothing else. Every step
    is the same arithmetic, so an occluder costs ``steps x`` the per-step time (vgg16: a few steps measured, 100
    extrapolated linearly). Demo CNN: 32 green crosses at 64x64; vgg16 (``weights=None``): 8 random images at 224.
    """
    from crp_widgets.engine.occluder import channel_importance, class_relevance, learn_occluder

    world = demo_world.load()
    cls = world.classes.index("green cross")
    demo_x = torch.stack([world.dataset[i][0] for i in torch.nonzero(world.dataset.labels == cls).flatten()[:32]])
    vgg = torchvision.models.vgg16(weights=None).eval()
    found, learned = {}, []  # learned: the occluder of the current model
    for name, model, x, layer, n, runs in (
        ("demo CNN", world.model, demo_x, "features.conv4", steps, repeats),
        ("vgg16 224", vgg, torch.rand(8, 3, 224, 224), "features.28", vgg_steps, 1),
    ):
        model, x = model.to(device), x.to(device)
        crp = CRP(model)
        with torch.no_grad():
            target = int(model(x[:1]).argmax())

        def occluder(crp=crp, x=x, target=target, n=n):
            learned[:] = [learn_occluder(crp, x, target, steps=n, seed=0)]
            _sync(device)

        def bare(model=model, x=x, target=target):
            delta = torch.zeros(x.shape[1:], device=device, requires_grad=True)
            for _ in range(learned[0].steps):
                logits = model(torch.cat([x - delta, x - delta]))
                torch.autograd.grad(logits[:, target].sum(), [delta])
            _sync(device)

        def forward(model=model, x=x):
            with torch.no_grad():
                model(x)
            _sync(device)

        seconds = _best(occluder, runs)
        done = learned[0].steps
        bare_s, forward_s = _best(bare, runs), _best(forward, runs)
        scores_s = _best(lambda crp=crp, x=x, layer=layer: channel_importance(crp, x, learned[0], layer), runs)
        relevance_s = _best(lambda crp=crp, x=x, layer=layer, t=target: class_relevance(crp, x, layer, t), runs)
        found[name] = {
            "images": len(x), "steps": done, "ms/step": 1e3 * seconds / done, "bare ms/step": 1e3 * bare_s / done,
            "ratio": seconds / bare_s, "100-step occluder s": 100 * seconds / done,
            "scores / forward": scores_s / forward_s, "class CRP relevance / forward": relevance_s / forward_s,
        }  # fmt: skip
    return found


def main(argv=None):
    """Run the chosen measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="vgg16,demo,profiles")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    chosen = args.only.split(",")
    if "vgg16" in chosen:
        print("vgg16 features.28:", bench_vgg16(args.images, args.size, repeats=args.repeats, device=args.device))
    if "demo" in chosen:
        print("demo dissection:", bench_demo(args.images, args.repeats, args.device))
    if "profiles" in chosen:
        print("demo profiles:", bench_profiles(repeats=args.repeats, device=args.device))
    if "occluder" in chosen:
        print("AfI occluder:", bench_occluder(device=args.device))


if __name__ == "__main__":
    main()
