"""What-if benchmark: one insertion sweep (Sec. 4.2, Fig. 21) as a ratio of the bare PyTorch cost of the same passes.

Run: ``python benchmarks/bench_whatif.py [--repeats N] [--models demo,vgg16] [--alphas 11] [--device cpu]``

For each model (the demo CNN at 64x64 with ``features.conv4``, torchvision vgg16 at 224x224 with ``weights=None``
and ``features.28``), one target sample and one donor, a square region in the middle of the image:

1. ``insertion_curve(..., track=5, target_classes=t)``: A alphas, relevance of the edited layer for class ``t`` (one
   batched forward with the blend and one backward with the CRP rules, plus the donor's forward), against the bare
   forward and backward of a batch of A copies of the input ("full": ``.backward()`` with parameter gradients;
   "input": ``torch.autograd.grad`` with respect to the input only);
2. the same without ``target_classes`` (the class that changes most is found first: 2 more plain forwards);
3. ``track=0``: the class outputs only (plain forwards under ``torch.no_grad``), against A bare no-grad forwards in
   one batch.

Fresh target inputs every round (no cache is hit); the candidates run interleaved and each keeps its best time
(:func:`bench_engine.race`); nothing is asserted.
"""

import argparse

import torch
import torchvision
from bench_engine import Inputs, race

from crp_widgets import demo
from crp_widgets.engine import CRP
from crp_widgets.engine.whatif import insertion_curve


def bare_sweep(model, target, alphas, input_only):
    """Forward and backward of a batch of ``alphas`` copies of the input (the arithmetic of one sweep)."""

    def run(x):
        x = x.expand(alphas, *x.shape[1:]).detach().clone().requires_grad_()
        output = model(x)
        if input_only:
            torch.autograd.grad(output[:, target].sum(), x)
        else:
            output[:, target].sum().backward()
            model.zero_grad(set_to_none=True)

    return run


def bare_forwards(model, alphas):
    def run(x):
        with torch.no_grad():
            model(x.expand(alphas, *x.shape[1:]))

    return run


def bench(name, model, shape, layer, alphas, repeats, device):
    model = model.to(device)
    crp = CRP(model)
    inputs = Inputs(shape)
    donor = torch.rand(shape, generator=torch.Generator().manual_seed(1)).to(device)
    mask = torch.zeros(shape[-2:], dtype=torch.bool)
    h, w = shape[-2:]
    mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = True
    steps = torch.linspace(0, 1, alphas)
    target = 1

    def sweep(track, target_classes):
        def run(x):
            crp.clear_cache()  # the candidates share the round's input: no candidate reuses another's forward pass
            insertion_curve(crp, x, donor, layer, mask, steps, track=track, target_classes=target_classes)
            if device == "cuda":
                torch.cuda.synchronize()

        return run

    def synced(fn):
        def run(x):
            fn(x)
            if device == "cuda":
                torch.cuda.synchronize()

        return run

    candidates = {
        "sweep, class given": sweep(5, target),
        "sweep, class found": sweep(5, None),
        "outputs only": sweep(0, None),
        "bare full": synced(bare_sweep(model, target, alphas, input_only=False)),
        "bare input": synced(bare_sweep(model, target, alphas, input_only=True)),
        "bare forwards": synced(bare_forwards(model, alphas)),
    }
    best = race(candidates, repeats, lambda: inputs().to(device))
    threads = torch.get_num_threads()
    print(f"\n{name} input {tuple(shape)}, layer {layer}, {alphas} alphas, {device}, torch {torch.__version__}, "
          f"{threads} threads")  # fmt: skip
    print(f"{'':22} {'s':>8} {'/ full':>7} {'/ input':>8} {'/ fwd':>7}")
    for label in ("sweep, class given", "sweep, class found"):
        s = best[label]
        print(f"{label:22} {s:8.4f} {s / best['bare full']:7.2f} {s / best['bare input']:8.2f}")
    s = best["outputs only"]
    print(f"{'outputs only':22} {s:8.4f} {'':7} {'':8} {s / best['bare forwards']:7.2f}")
    for label in ("bare full", "bare input", "bare forwards"):
        print(f"{label:22} {best[label]:8.4f}")


def main():
    """Parse the arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="demo,vgg16")
    parser.add_argument("--alphas", type=int, default=11)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    for name in args.models.split(","):
        if name == "demo":
            bench("demo", demo.load_model(), (1, 3, 64, 64), "features.conv4", args.alphas, args.repeats, args.device)
        elif name == "vgg16":
            torch.manual_seed(0)
            model = torchvision.models.vgg16(weights=None).eval()
            bench("vgg16", model, (1, 3, 224, 224), "features.28", args.alphas, args.repeats, args.device)
        else:
            raise SystemExit(f"unknown model {name!r}; choose from demo, vgg16")


if __name__ == "__main__":
    main()
