"""Deterministic training of `SignalNet` on the 1-D demo world; writes the shipped weights and their metadata.

Run ``python -m crp_widgets.demo.train_signals`` (about a minute on 2 CPU cores). The signals are generated in
memory from their seeds; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from . import signals
from .signal_model import SignalNet
from .signals import EXPLORE_SEED, TRAIN_SEED, SignalDataset
from .train import save_weights, train

WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS = WEIGHTS_DIR / "signal_cnn.safetensors"
METADATA = WEIGHTS_DIR / "signal_cnn.json"


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` (put in eval mode) on signals ``x`` [N, 2, L]."""
    model.eval()
    logits = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    return (logits.argmax(1) == labels).float().mean().item()


def main(argv: list[str] | None = None) -> dict:
    """Train, evaluate and save the signal model; returns the metadata written next to the weights."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=6000)
    parser.add_argument("--heldout-size", type=int, default=1200)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()
    train_set = SignalDataset(args.train_size, seed=TRAIN_SEED)
    heldout = SignalDataset(args.heldout_size, seed=EXPLORE_SEED)
    x, labels = train_set.tensors()
    generation_s = time.perf_counter() - start
    print(f"generated {len(train_set)} training signals in {generation_s:.1f} s", flush=True)

    model = SignalNet(n_classes=len(train_set.classes))
    start = time.perf_counter()
    train(model, x, labels, epochs=args.epochs, batch_size=64, prepare=torch.as_tensor)
    training_s = time.perf_counter() - start
    heldout_accuracy = accuracy(model, *heldout.tensors())
    print(f"trained in {training_s:.0f} s; held-out accuracy {heldout_accuracy:.4f}")

    metadata = {
        "model": "SignalNet",
        "classes": train_set.classes,
        "concepts": train_set.concepts,
        "world_version": signals.VERSION,
        "train": train_set.describe(),
        "heldout": heldout.describe(),
        "epochs": args.epochs,
        "threads": args.threads,
        "torch": torch.__version__,
        "heldout_accuracy": round(heldout_accuracy, 4),
        "generation_s": round(generation_s, 1),
        "training_s": round(training_s, 1),
    }
    save_weights(model, metadata, args.out / WEIGHTS.name, args.out / METADATA.name, signals.VERSION)
    return metadata


if __name__ == "__main__":
    main()
