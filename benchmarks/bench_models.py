"""Modern architectures: CRP cost as a ratio of the bare PyTorch cost of the same work, on the same machine.

Run: ``python benchmarks/bench_models.py [--repeats N] [--models resnet50,efficientnet_b0,convnext_tiny,vit_b_16]``

For each torchvision model (``weights=None``, seed 0, 224x224) and the explorer's default layer (its last block):

1. the one-time canonization: tracing the model and giving every operation its rule (seconds, no ratio);
2. one class-conditional heatmap (``CRP.attribute``) against the bare forward plus backward ("full": parameter
   gradients too, as ``.backward()`` computes them by default);
3. eight conditional heatmaps of the default layer against one forward, one backward and eight backwards from that
   layer to the input;
4. a scan of 4 batches of 8 samples recording the default layer (per batch one forward, one backward and the top-k
   tables merged; once the store created and written) against the bare forward plus backward of the 4 batches.

The candidates run interleaved, round after round, and each keeps its best time; nothing is asserted.
"""

import argparse
import tempfile
import time

import torch
import torchvision
from bench_engine import Inputs, bare_conditional, bare_heatmap, race

from crp_widgets.engine import CRP
from crp_widgets.engine.scan import scan
from crp_widgets.widgets.channels import default_layer


def canonization(model, x):
    """Seconds to trace the model and build its explainable graph (the first pass minus a cached one)."""
    crp = CRP(model)
    start = time.perf_counter()
    crp.context.graph(x)
    return time.perf_counter() - start


def scan_batches(model, layers, size, repeats, batches=4):
    """Seconds of a scan of ``batches`` batches of 8 random images, and of their bare forward plus backward."""
    crp = CRP(model)
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(8 * batches, 3, size, size, generator=generator)
    data = torch.utils.data.TensorDataset(images, torch.arange(8 * batches) % 1000)

    def scanned(_):
        with tempfile.TemporaryDirectory() as path:
            scan(crp, data, layers, path, k=4, batch_size=8, progress=False)

    def bare(_):
        for x, labels in zip(images.split(8), data.tensors[1].split(8)):
            model(x.detach().requires_grad_()).gather(1, labels[:, None]).sum().backward()
            model.zero_grad(set_to_none=True)

    times = race({"scan": scanned, "bare": bare}, repeats)
    return times["scan"], times["bare"]


def bench(name, repeats, size=224):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    if name.startswith("vit"):
        with torch.no_grad():
            model.heads.head.weight.normal_(0, 0.02)  # torchvision starts it at zero
    inputs = Inputs((1, 3, size, size))
    graph_seconds = canonization(model, inputs())
    crp = CRP(model)
    layer = default_layer(crp)
    target = int(crp.predict(inputs()).argmax(1)[0])
    rows = []
    times = race(
        {"crp": lambda x: crp.attribute(x, target=target), "full": bare_heatmap(model, target, False)}, repeats, inputs
    )
    rows.append(("1 heatmap", times["crp"], times["full"]))
    channels = list(range(8))
    times = race(
        {
            "crp": lambda x: crp.conditional_heatmaps(x, layer, channels, target=target),
            "full": bare_conditional(model, layer, target, channels, False),
        },
        repeats,
        inputs,
    )
    rows.append(("8 conditional heatmaps", times["crp"], times["full"]))
    scanned, bare = scan_batches(model, [layer], size, repeats)
    print(
        f"\n{name} {size}x{size}, default layer {layer}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"canonization (trace and rules, once per model): {graph_seconds:.2f} s")
    print("{:26} {:>9} {:>10} {:>6}".format("work", "crp (s)", "bare (s)", "ratio"))
    for label, ours, full in rows:
        print(f"{label:26} {ours:9.3f} {full:10.3f} {ours / full:6.2f}")
    print(f"{'scan, 4 batches of 8':26} {scanned:9.3f} {bare:10.3f} {bare / scanned:6.2f}")
    print("(scan: the ratio is bare time / scan time, the scan's throughput as a share of the bare one's)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="resnet50,efficientnet_b0,convnext_tiny,vit_b_16")
    args = parser.parse_args()
    for name in args.models.split(","):
        bench(name, args.repeats)


if __name__ == "__main__":
    main()
