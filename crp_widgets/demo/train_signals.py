"""Deterministic training of `SignalNet` on the 1-D demo world; writes the shipped weights and their metadata.

Run ``python -m crp_widgets.demo.train_signals`` (about a minute on 2 CPU cores). The signals are generated in
memory from their seeds; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from . import signals
from .signal_model import SignalNet
from .signals import EXPLORE_SEED, TRAIN_SEED, SignalDataset

WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS = WEIGHTS_DIR / "signal_cnn.safetensors"
METADATA = WEIGHTS_DIR / "signal_cnn.json"


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` (put in eval mode) on signals ``x`` [N, 2, L]."""
    model.eval()
    logits = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    return (logits.argmax(1) == labels).float().mean().item()


def train(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, epochs: int, batch_size: int = 64,
          lr: float = 3e-3, seed: int = 0) -> None:  # fmt: skip
    """Train ``model`` in place with AdamW and a one-cycle schedule, deterministically.

    Parameters
    ----------
    model : torch.nn.Module
        Model to train.
    x : torch.Tensor
        float32 signals [N, 2, L].
    labels : torch.Tensor
        int64 [N].
    epochs : int
        Passes over the data.
    batch_size : int
        Minibatch size.
    lr : float
        Peak learning rate.
    seed : int
        Seed of the shuffling.
    """
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = len(x) // batch_size
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=epochs * steps_per_epoch)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for step in range(steps_per_epoch):
            batch = order[step * batch_size : (step + 1) * batch_size]
            loss = nn.functional.cross_entropy(model(x[batch]), labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item()
        print(f"epoch {epoch + 1}/{epochs}: loss {total / steps_per_epoch:.4f}", flush=True)


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
    train(model, x, labels, epochs=args.epochs)
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
    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out / WEIGHTS.name), metadata={"world_version": signals.VERSION})
    (args.out / METADATA.name).write_text(json.dumps(metadata, indent=2) + "\n")
    return metadata


if __name__ == "__main__":
    main()
