"""Deterministic training of `DemoNet` on the demo world; writes the shipped weights and their metadata.

Run ``python -m crp_widgets.demo.train`` (a few minutes on 2 CPU cores). The scene sets are generated in memory
from their seeds; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from . import world
from .data import EXPLORE_SEED, TRAIN_SEED, DemoDataset
from .model import DemoNet

WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS = WEIGHTS_DIR / "demo_cnn.safetensors"
METADATA = WEIGHTS_DIR / "demo_cnn.json"


def render_all(dataset: DemoDataset, indices: list[int] | None = None, watermark: bool | None = None) -> torch.Tensor:
    """Images of ``dataset`` (all, or those at ``indices``) as uint8 [N, 3, H, W].

    Lossless: scenes are quantised to 8 bit. ``watermark`` forces the watermark on or off, as in
    `DemoDataset.render`.
    """
    indices = range(len(dataset)) if indices is None else indices
    images = np.empty((len(indices), 3, world.SIZE, world.SIZE), dtype=np.uint8)
    for row, i in enumerate(indices):
        images[row] = np.round(dataset.render(i, watermark)[0] * 255.0)
    return torch.from_numpy(images)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to float32 in [0, 1]."""
    return images.float().div_(255.0)


@torch.no_grad()
def logits_of(model: nn.Module, images: torch.Tensor, batch_size: int = 500, prepare=to_float) -> torch.Tensor:
    """Logits of inputs (uint8 images [N, 3, H, W] by default, see ``prepare``), in batches, model in eval mode."""
    model.eval()
    return torch.cat([model(prepare(images[i : i + batch_size])) for i in range(0, len(images), batch_size)])


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, prepare=to_float) -> float:
    """Top-1 accuracy of ``model`` on inputs (uint8 images by default, see ``prepare``)."""
    return (logits_of(model, images, prepare=prepare).argmax(1) == labels).float().mean().item()


def shortcut_effect(model: nn.Module, dataset: DemoDataset, n: int = 300) -> dict[str, dict[str, float]]:
    """Score of the shortcut class with and without the watermark, on the first held-out scenes of each group.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier of the demo world.
    dataset : DemoDataset
        Held-out scenes.
    n : int
        Images per group: the shortcut class, its twin class, all other classes.

    Returns
    -------
    dict
        Per group, the mean softmax probability and logit of the shortcut class with the watermark pasted in
        (``*_with``) and removed (``*_without``), and the share of images predicted as the shortcut class.
    """
    target = dataset.classes.index(dataset.shortcut_class)
    twin = dataset.classes.index(world.TWIN_CLASS)
    labels = dataset.labels
    groups = {
        "shortcut_class": labels == target,
        "twin_class": labels == twin,
        "other_classes": (labels != target) & (labels != twin),
    }
    effect = {}
    for group, selected in groups.items():
        indices = selected.nonzero()[:n, 0].tolist()
        figures = {"n": len(indices)}
        for suffix, watermark in (("with", True), ("without", False)):
            logits = logits_of(model, render_all(dataset, indices, watermark))
            figures[f"probability_{suffix}"] = logits.softmax(1)[:, target].mean().item()
            figures[f"logit_{suffix}"] = logits[:, target].mean().item()
            figures[f"predicted_{suffix}"] = (logits.argmax(1) == target).float().mean().item()
        effect[group] = figures
    return effect


def train(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch_size: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
    prepare=to_float,
) -> None:
    """Train ``model`` in place with AdamW and a one-cycle schedule, deterministically.

    Parameters
    ----------
    model : torch.nn.Module
        Model to train.
    images : torch.Tensor
        Inputs [N, ...]: uint8 images [N, 3, H, W] by default, or anything ``prepare`` turns into a batch.
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
    prepare : callable
        Maps a minibatch of ``images`` to the model's input (default: uint8 -> float in [0, 1]).
    """
    generator = torch.Generator().manual_seed(seed)
    steps = epochs * (len(images) // batch_size)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for step in range(len(images) // batch_size):
            batch = order[step * batch_size : (step + 1) * batch_size]
            loss = nn.functional.cross_entropy(model(prepare(images[batch])), labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item()
        print(f"epoch {epoch + 1}/{epochs}: loss {total / (len(images) // batch_size):.4f}", flush=True)


def arguments(argv, doc: str, train_size: int, heldout_size: int, epochs: int) -> argparse.Namespace:
    """The command line of a training script (defaults given), with torch made deterministic on its threads."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=train_size)
    parser.add_argument("--heldout-size", type=int, default=heldout_size)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    return args


def main(argv: list[str] | None = None) -> dict:
    """Train, evaluate and save the demo model; returns the metadata written next to the weights."""
    args = arguments(argv, __doc__, train_size=20000, heldout_size=3000, epochs=5)
    start = time.perf_counter()
    train_set = DemoDataset(args.train_size, seed=TRAIN_SEED)
    heldout = DemoDataset(args.heldout_size, seed=EXPLORE_SEED)
    images = render_all(train_set)
    generation_s = time.perf_counter() - start
    print(f"rendered {len(train_set)} training scenes in {generation_s:.1f} s", flush=True)

    model = DemoNet(n_classes=len(train_set.classes))
    start = time.perf_counter()
    train(model, images, train_set.labels, epochs=args.epochs)
    training_s = time.perf_counter() - start
    heldout_accuracy = accuracy(model, render_all(heldout), heldout.labels)
    effect = shortcut_effect(model, heldout)
    print(f"trained in {training_s:.0f} s; held-out accuracy {heldout_accuracy:.4f}; shortcut effect:")
    print(json.dumps(effect, indent=1))

    metadata = {
        "model": "DemoNet",
        "classes": train_set.classes,
        "concepts": train_set.concepts,
        "shortcut_class": train_set.shortcut_class,
        "twin_class": world.TWIN_CLASS,
        "world_version": world.VERSION,
        "train": train_set.describe(),
        "heldout": heldout.describe(),
        "epochs": args.epochs,
        "threads": args.threads,
        "torch": torch.__version__,
        "heldout_accuracy": round(heldout_accuracy, 4),
        "shortcut_effect": {g: {k: round(v, 4) for k, v in f.items()} for g, f in effect.items()},
        "generation_s": round(generation_s, 1),
        "training_s": round(training_s, 1),
    }
    save_weights(model, metadata, args.out / WEIGHTS.name, args.out / METADATA.name, world.VERSION)
    return metadata


def save_weights(model: nn.Module, metadata: dict, weights: Path, metadata_path: Path, version: str) -> None:
    """Write ``model``'s weights as safetensors (tagged with the world ``version``) and ``metadata`` as JSON."""
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights), metadata={"world_version": version})
    metadata_path.write_text(json.dumps(metadata, indent=2) + "\n")


if __name__ == "__main__":
    main()
