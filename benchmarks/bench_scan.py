"""Reference scan benchmarks: throughput and memory against the bare PyTorch cost, on the same machine.

Run: ``python benchmarks/bench_scan.py [--models demo,vgg16]``

1. Scan throughput (samples/s) with all conv layers recorded, against the bare forward plus backward throughput of
   the same model and batch size (``.backward()`` of the explained outputs, parameters requiring gradients as they
   do by default). The demo CNN scans 1,024 demo images; vgg16 (224x224, ``weights=None``) 128 random images.
2. Peak resident memory of a demo scan for two dataset sizes, each in a fresh process (it should not grow with
   the dataset: the store keeps O(layers x channels x k)).
3. Rendering 8 references of one channel (receptive-field crops, heatmaps, masks) against the bare cost of their
   backward passes (one forward and backward of the 8 samples).

Timings are best-of-repeats; nothing is asserted.
"""

import argparse
import subprocess
import sys
import tempfile
import time

import torch
import torchvision

from crp_widgets import demo
from crp_widgets.engine import CRP
from crp_widgets.engine.references import ReferenceViews
from crp_widgets.engine.scan import scan


def conv_layers(model):
    return [name for name, module in model.named_modules() if isinstance(module, torch.nn.Conv2d)]


def bare_pass(model, data, batch_size):
    """Forward + backward of the explained (true-class) outputs over the dataset."""
    for x, y in torch.utils.data.DataLoader(data, batch_size=batch_size):
        x = x.detach().requires_grad_()
        model(x).gather(1, y[:, None]).sum().backward()
        model.zero_grad(set_to_none=True)


def throughputs(model, data, batch_size, repeats=1):
    """Samples per second of a scan and of the bare passes, interleaved round after round (best of each)."""
    crp = CRP(model)
    best = {"scan": float("inf"), "bare": float("inf")}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as path:
            start = time.perf_counter()
            scan(crp, data, conv_layers(model), path, k=16, batch_size=batch_size, progress=False)
            best["scan"] = min(best["scan"], time.perf_counter() - start)
        start = time.perf_counter()
        bare_pass(model, data, batch_size)
        best["bare"] = min(best["bare"], time.perf_counter() - start)
    return len(data) / best["scan"], len(data) / best["bare"]


def peak_memory(samples):
    """Peak RSS (MB) of a demo scan of ``samples`` images, in a fresh process."""
    code = (
        "import resource, tempfile, torch, json\n"
        "from crp_widgets import demo\n"
        "from crp_widgets.engine import CRP\n"
        "from crp_widgets.engine.scan import scan\n"
        f"world = demo.load(length={samples})\n"
        "data = world.dataset\n"
        "layers = [n for n, m in world.model.named_modules() if isinstance(m, torch.nn.Conv2d)]\n"
        "with tempfile.TemporaryDirectory() as path:\n"
        "    scan(CRP(world.model), data, layers, path, k=16, batch_size=64, progress=False)\n"
        "print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(output.strip().splitlines()[-1])


def render_cost(model, data, layer, repeats=3):
    """Seconds to render 8 references of one channel, and the bare forward + backward of those 8 samples."""
    crp = CRP(model)
    with tempfile.TemporaryDirectory() as path:
        store = scan(crp, data, [layer], path, k=8, batch_size=32, progress=False)
        channel = int(torch.argmax(store.class_relevance(layer).nan_to_num(0).sum(1)))
        indices = [r.index for r in store.references(layer, channel, k=8)]
        x = torch.stack([data[i][0] for i in indices])
        y = torch.tensor([int(data[i][1]) for i in indices])
        best = {"render": float("inf"), "bare": float("inf")}
        for _ in range(repeats):
            views = ReferenceViews(crp, store, {"dataset": data})  # a fresh cache every time
            crp.clear_cache()
            start = time.perf_counter()
            views.views(layer, channel, k=8)
            best["render"] = min(best["render"], time.perf_counter() - start)
            start = time.perf_counter()
            model(x.detach().requires_grad_()).gather(1, y[:, None]).sum().backward()
            model.zero_grad(set_to_none=True)
            best["bare"] = min(best["bare"], time.perf_counter() - start)
    return best["render"], best["bare"]


class RandomImages(torch.utils.data.Dataset):
    def __init__(self, n, size, classes=1000):
        generator = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 3, size, size, generator=generator)
        self.y = torch.randint(0, classes, (n,), generator=generator)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return self.x[index], self.y[index]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,vgg16")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds of scan and bare passes (best of)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.models.split(","):
        if name == "demo":
            world = demo.load(length=1024)
            data = world.dataset
            model, batch_size, layer = world.model, 64, conv_layers(world.model)[-1]
        elif name == "vgg16":
            torch.manual_seed(0)
            model = torchvision.models.vgg16(weights=None).eval()
            data, batch_size, layer = RandomImages(128, 224), 16, "features.28"
        else:
            raise SystemExit(f"unknown model {name!r}; choose from demo, vgg16")
        ours, bare = throughputs(model, data, batch_size, args.repeats)
        layers = len(conv_layers(model))
        print(f"\n{name}: scan of {len(data)} samples, batch {batch_size}, {layers} conv layers recorded")
        print(f"  scan {ours:8.1f} samples/s   bare forward+backward {bare:8.1f} samples/s   ratio {ours / bare:.2f}")
        render, bare_backward = render_cost(model, data, layer)
        print(f"  render 8 references of {layer}: {render:.3f} s   bare 8 backwards {bare_backward:.3f} s   "
              f"ratio {render / bare_backward:.2f}")  # fmt: skip
        if name == "demo":
            small, large = peak_memory(1000), peak_memory(4000)
            print(f"  peak memory: 1,000 samples {small:.0f} MB, 4,000 samples {large:.0f} MB")


if __name__ == "__main__":
    main()
