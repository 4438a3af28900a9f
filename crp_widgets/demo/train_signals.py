"""Deterministic training of `SignalNet` on the 1-D demo world; writes the shipped weights and their metadata.

Run ``python -m crp_widgets.demo.train_signals`` (about a minute on 2 CPU cores). The signals are generated in
memory from their seeds; nothing is downloaded.
"""

from __future__ import annotations

import time

import torch

from . import signals
from .signal_model import SignalNet
from .signals import EXPLORE_SEED, TRAIN_SEED, SignalDataset
from .train import WEIGHTS_DIR, accuracy, arguments, save_weights, train

WEIGHTS = WEIGHTS_DIR / "signal_cnn.safetensors"
METADATA = WEIGHTS_DIR / "signal_cnn.json"


def main(argv: list[str] | None = None) -> dict:
    """Train, evaluate and save the signal model; returns the metadata written next to the weights."""
    args = arguments(argv, __doc__, train_size=6000, heldout_size=1200, epochs=6)
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
    heldout_accuracy = accuracy(model, *heldout.tensors(), prepare=torch.as_tensor)
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
