"""Engine benchmarks: CRP cost as a ratio of the bare PyTorch cost of the same work, on the same machine.

Run: ``python benchmarks/bench_engine.py [--repeats N] [--models demo,vgg16]``

For each model (the demo CNN at 64x64, torchvision vgg16 at 224x224 with ``weights=None``, seed 0):

1. one class-conditional heatmap (``CRP.attribute``) against the bare forward plus backward of the model;
2. eight conditional heatmaps of one layer (``CRP.conditional_heatmaps``; vgg16: ``features.28``) against the bare
   cost of one forward, one backward and eight backwards from that layer to the input;
3. the same eight heatmaps again for eight other channels of the same input (the explorer's next click: the cached
   forward pass and relevance at the layer are reused), against the eight bare backwards alone.

Two bare baselines are printed: "full", the standard ``.backward()`` that also computes the parameter gradients (the
model's parameters require gradients, as they do by default), and "input", ``torch.autograd.grad`` with respect to
the input only. zennit's own hook-based attribution is timed for reference. Fresh inputs are used for every
uncached repetition, so no cache is hit. The candidates of one row run interleaved, round after round, and each
keeps its best time (the machines are shared: the host's speed drifts, and the minimum is the least disturbed
run); nothing is asserted.
"""

import argparse
import time

import torch
import torchvision
from zennit.attribution import Gradient

from crp_widgets import demo
from crp_widgets.engine import CRP, default_composite


def race(candidates, repeats, setup=lambda: None):
    """Best wall time of each ``fn(setup())``, the candidates interleaved in every round.

    Interleaving makes the ratios robust to the host's speed drifting between measurements (shared machines).
    Each round uses a fresh ``setup()`` value and starts with the next candidate, so that each follows every other
    equally often (a candidate run right after another finds the caches filled with that one's code and data);
    one warm-up round is not counted.
    """
    best = dict.fromkeys(candidates, float("inf"))
    names = list(candidates)
    for round_ in range(repeats + 1):
        argument = setup()
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            fn = candidates[name]
            start = time.perf_counter()
            fn(argument)
            elapsed = time.perf_counter() - start
            if round_:
                best[name] = min(best[name], elapsed)
    return best


class Inputs:
    """Fresh inputs of one shape, so that no forward cache is ever hit."""

    def __init__(self, shape):
        self.shape = shape
        self.generator = torch.Generator().manual_seed(0)

    def __call__(self):
        return torch.rand(self.shape, generator=self.generator)


def bare_heatmap(model, target, input_only):
    def run(x):
        x = x.detach().requires_grad_()
        output = model(x)
        if input_only:
            torch.autograd.grad(output[0, target], x)
        else:
            output[0, target].backward()
            model.zero_grad(set_to_none=True)

    return run


def bare_conditional(model, layer, target, channels, input_only, skip_first=False):
    module = dict(model.named_modules())[layer]

    def run(x):
        x = x.detach().requires_grad_()
        captured = {}
        handle = module.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
        try:
            output = model(x)
        finally:
            handle.remove()
        hidden = captured["out"]
        backward = (
            (lambda t, g: torch.autograd.grad(t, x, g, retain_graph=True))
            if input_only
            else (lambda t, g: t.backward(g, retain_graph=True))
        )
        if not skip_first:
            backward(output[0, target], None)
        for channel in channels:
            grad = torch.zeros_like(hidden)
            grad[:, channel] = 1
            backward(hidden, grad)
        model.zero_grad(set_to_none=True)

    return run


def zennit_heatmap(model, composite, target):
    def run(x):
        with Gradient(model, composite) as attributor:
            attributor(x, lambda out: out * torch.nn.functional.one_hot(torch.tensor([target]), out.shape[1]))

    return run


def bench(name, model, shape, layer, repeats):
    torch.manual_seed(0)
    inputs = Inputs(shape)
    crp = CRP(model)
    target = int(crp.predict(inputs()).argmax(1)[0])
    channels = list(range(8))
    others = list(range(8, 16))

    composite = default_composite(model)
    rows = []
    times = race(
        {
            "crp": lambda x: crp.attribute(x, target=target),
            "full": bare_heatmap(model, target, False),
            "input": bare_heatmap(model, target, True),
            "zennit": zennit_heatmap(model, composite, target),
        },
        repeats,
        inputs,
    )
    rows.append(("1 heatmap", times["crp"], times["full"], times["input"], times["zennit"]))
    times = race(
        {
            "crp": lambda x: crp.conditional_heatmaps(x, layer, channels, target=target),
            "full": bare_conditional(model, layer, target, channels, False),
            "input": bare_conditional(model, layer, target, channels, True),
        },
        repeats,
        inputs,
    )
    rows.append((f"8 heatmaps {layer}", times["crp"], times["full"], times["input"], None))
    fixed = inputs()
    crp.conditional_heatmaps(fixed, layer, channels, target=target)
    times = race(
        {
            "crp": lambda _: crp.conditional_heatmaps(fixed, layer, others, target=target),
            "full": lambda _: bare_conditional(model, layer, target, others, False, skip_first=True)(fixed),
            "input": lambda _: bare_conditional(model, layer, target, others, True, skip_first=True)(fixed),
        },
        repeats,
    )
    rows.append(("8 more, cached", times["crp"], times["full"], times["input"], None))

    print(f"\n{name} input {tuple(shape)}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    header = ("work", "crp (s)", "bare full", "ratio", "bare input", "ratio", "zennit", "ratio")
    print("{:24} {:>9} {:>10} {:>6} {:>11} {:>6} {:>8} {:>6}".format(*header))
    for label, ours, full, grad, zennit in rows:
        zennit_cols = f"{zennit:8.4f} {zennit / full:6.2f}" if zennit else f"{'':8} {'':6}"
        print(f"{label:24} {ours:9.4f} {full:10.4f} {ours / full:6.2f} {grad:11.4f} {ours / grad:6.2f} {zennit_cols}")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default="demo,vgg16")
    args = parser.parse_args()
    for name in args.models.split(","):
        if name == "demo":
            world = demo.load()
            model = world.model
            x, _ = world.dataset[0]
            layer = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)][-1]
            bench("demo CNN", model, (1, *x.shape), layer, args.repeats)
        elif name == "vgg16":
            torch.manual_seed(0)
            bench("vgg16", torchvision.models.vgg16(weights=None).eval(), (1, 3, 224, 224), "features.28", args.repeats)
        else:
            raise SystemExit(f"unknown model {name!r}; choose from demo, vgg16")


if __name__ == "__main__":
    main()
