"""Relevance and Activation Maximization over a dataset (CRP paper Sec. 2.3.2-2.3.3, 3.2, A.3).

For every batch, one forward and one backward pass record the relevance and activations of all requested layers at
once; per channel the top-k samples of RelMax-sum, RelMax-max, ActMax-sum and ActMax-max (Eq. 18, 19, 23) are merged
with vectorised torch operations, with each sample's most relevant / most active neuron, plus the mean relevance per
class and class-conditional top-k. Memory is O(layers x channels x k), whatever the dataset size.

The scan checkpoints its state atomically; run again after an interruption it continues from the last checkpoint
and ends with the same store. Under ``torchrun`` every process takes every world-size-th batch and the results are
merged into one store identical to a single-process scan.
"""

import contextlib
import os
import pathlib
import threading
import time

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from . import topk
from .composites import describe
from .errors import CRPError
from .store import (
    FORMAT,
    Store,
    StoreMismatchError,
    Tables,
    dataset_fingerprint,
    model_fingerprint,
    read_json,
    statistics,
    write_json,
    write_tensors,
)


def _world():
    """``(rank, world size)`` of the current ``torch.distributed`` job; ``(0, 1)`` without one."""
    distributed = torch.distributed
    if distributed.is_available() and distributed.is_initialized():
        return distributed.get_rank(), distributed.get_world_size()
    return 0, 1


def _join_launcher():
    """Under ``torchrun`` (``WORLD_SIZE`` > 1), start the process group if the script has not: nccl on GPUs."""
    distributed = torch.distributed
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and distributed.is_available() and not distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        distributed.init_process_group(backend)


def _barrier():
    if _world()[1] > 1:
        torch.distributed.barrier()


def _split(item):
    """``(input, label or None)`` of one dataset item."""
    if isinstance(item, (tuple, list)):
        return item[0], (item[1] if len(item) > 1 else None)
    return item, None


def _collate(items):
    inputs, labels = zip(*(_split(item) for item in items))
    x = torch.stack([torch.as_tensor(i) for i in inputs])
    if any(label is None for label in labels):
        return x, None
    return x, torch.as_tensor([int(label) for label in labels], dtype=torch.int64)


def _labels(mode, output, labels, classes):
    """The class each sample's relevance is computed for (the true label by default, A.3)."""
    if mode == "true":
        if labels is None:
            raise CRPError("the dataset's items carry no labels; scan with label='predicted' or a class index")
        return labels.to(output.device)
    if mode == "predicted":
        return output.detach().argmax(dim=1)
    if isinstance(mode, int) and not isinstance(mode, bool) and 0 <= mode < classes:
        return torch.full((output.shape[0],), mode, dtype=torch.int64, device=output.device)
    raise CRPError(f"label must be 'true', 'predicted' or a class index 0 to {classes - 1}, got {mode!r}")


def _flatten(crp, layer, tensor):
    """``[B, C, S]``: a layer's maps with the channel axis second and all other axes flattened."""
    tensor = tensor.movedim(crp.channel_axis(layer) % tensor.ndim, 1)
    return tensor.reshape(tensor.shape[0], tensor.shape[1], -1)


def _normalize(relevance):
    """Per-layer relevance normalisation (A.3, Eq. 35): divide by the layer's absolute relevance per sample."""
    total = relevance.abs().sum(dim=(1, 2), keepdim=True)
    return relevance / total.clamp(min=torch.finfo(relevance.dtype).tiny)


def _cpu(stats):
    return tuple(tensor.cpu() for tensor in stats)


class _Scanner:
    """Runs one dataset through the model for one process, with checkpoints."""

    def __init__(self, crp, dataset, store_path, manifest, dataset_id, options):
        self.crp = crp
        self.dataset = dataset
        self.path = store_path
        self.manifest = manifest
        self.dataset_id = dataset_id
        self.options = options
        self.rank, self.world = _world()
        self.layers = list(manifest["layers"])

    def empty(self):
        m = self.manifest
        return Tables(m["layers"], m["classes"], m["k"], m["class_k"])

    def batches(self):
        """The global batch numbers this process handles (every world-size-th)."""
        count = -(-len(self.dataset) // self.options["batch_size"])
        return list(range(self.rank, count, self.world))

    def resume(self):
        """The checkpointed state of this process and how many of its batches it covers."""
        part = self.path / f"part-{self.rank}.json"
        if not part.exists():
            return self.empty(), 0
        progress = read_json(part)
        if progress["world"] != self.world or progress["dataset"] != self.dataset_id:
            raise StoreMismatchError(
                f"the scan in progress at {str(self.path)!r} ran with {progress['world']} processes on dataset number "
                f"{progress['dataset']}; resume it with the same setup, or delete its part-*.json files"
            )
        m = self.manifest
        data = load_file(self.path / progress["file"])
        return Tables(m["layers"], m["classes"], m["k"], m["class_k"], data), progress["batches_done"]

    def checkpoint(self, tables, done):
        """Write this process's state atomically (data first, then the JSON naming it)."""
        generation = f"{time.time_ns():x}"
        name = f"part-{self.rank}-{generation}.safetensors"
        write_tensors(self.path / name, tables.data)
        json_path = self.path / f"part-{self.rank}.json"
        previous = read_json(json_path)["file"] if json_path.exists() else None
        progress = {"file": name, "batches_done": done, "world": self.world, "dataset": self.dataset_id}
        write_json(json_path, progress)
        if previous and previous != name:
            (self.path / previous).unlink(missing_ok=True)

    def loader(self, batches):
        size = self.options["batch_size"]
        sampler = [list(range(b * size, min((b + 1) * size, len(self.dataset)))) for b in batches]
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.options["num_workers"],
            collate_fn=_collate,
            persistent_workers=False,
        )

    def step(self, tables, x, labels, first_index):
        """Merge one batch into ``tables`` and return them; on an error ``tables`` keep the state before the batch.

        One forward and one backward pass for all layers; each layer's activation and relevance maps are reduced
        to their per-channel statistics as soon as they are computed, so no layer's maps outlive their use.
        """
        crp = self.crp
        device = next(iter(crp.model.parameters())).device
        x = x.to(device)
        activations, relevances = {}, {}

        def on_activation(layer, activation):
            activations[layer] = _cpu(statistics(_flatten(crp, layer, activation)))

        def on_relevance(layer, relevance):
            maps = _flatten(crp, layer, relevance)
            relevances[layer] = _cpu(statistics(_normalize(maps) if self.options["normalize"] else maps))

        forward = crp.record(x, self.layers, observe=on_activation)
        output = forward.output
        explained = _labels(self.options["label"], output, labels, output.shape[1])
        grad = output.detach() * torch.nn.functional.one_hot(explained, output.shape[1]).to(output.dtype)
        forward.backward(output, grad, forward.roots(), last=True, observe=on_relevance)
        keys = topk.encode(self.dataset_id, torch.arange(first_index, first_index + x.shape[0]))
        explained = explained.cpu()
        for layer in self.layers:
            if layer not in activations:
                raise CRPError(f"layer {layer!r} did not run in the forward pass; scan layers that run once per pass")
            # a layer the relevance does not reach gets none
            relevance = relevances.get(layer) or tuple(torch.zeros_like(t) for t in activations[layer])
            tables.add(layer, relevance, activations[layer], explained, keys)
        tables.count(explained)
        tables.commit()
        return tables

    def run(self):
        tables, done = self.resume()
        mine = self.batches()
        size = self.options["batch_size"]
        remaining = mine[done:]
        bar = tqdm(
            total=sum(min(size, len(self.dataset) - b * size) for b in mine),
            initial=sum(min(size, len(self.dataset) - b * size) for b in mine[:done]),
            desc=f"scan {self.manifest['datasets'][self.dataset_id]['name']}",
            unit="sample",
            disable=not self.options["progress"] or self.rank != 0,
        )
        every, last = self.options["checkpoint_every"], time.monotonic()
        try:
            for count, (batch, (x, labels)) in enumerate(zip(remaining, self.loader(remaining)), start=done + 1):
                tables = self.step(tables, x, labels, batch * size)
                done = count
                bar.update(x.shape[0])
                if self.options["stop"].is_set():
                    raise ScanStoppedError(f"stopped after {done} of {len(mine)} batches; scan again to continue")
                if count % every[0] == 0 or time.monotonic() - last > every[1]:
                    self.checkpoint(tables, count)
                    last = time.monotonic()
        except BaseException:
            # KeyboardInterrupt or an error: keep what is done (the state before any half-processed batch).
            self.checkpoint(tables, done)
            raise
        finally:
            bar.close()
        return tables


def scan(
    crp,
    dataset,
    layers,
    path,
    k=16,
    *,
    class_k=None,
    name="dataset",
    label="true",
    normalize=False,
    batch_size=32,
    num_workers=0,
    checkpoint_every=(50, 120.0),
    progress=True,
    background=False,
):
    """Scan ``dataset`` for reference samples of every channel of ``layers`` and write a store at ``path``.

    Parameters
    ----------
    crp : CRP
        The model and its rules.
    dataset : torch.utils.data.Dataset
        Items ``(input, label)`` (or bare inputs with ``label='predicted'`` or a class index).
    layers : Sequence[str]
        Layers to scan, all at once.
    path : str or pathlib.Path
        The store directory (created; an existing store for the same model and layers is extended or resumed).
    k : int
        References kept per channel and mode (RelMax-sum, RelMax-max, ActMax-sum, ActMax-max).
    class_k : int, optional
        Class-conditional references kept per channel and class (Fig. 13); by default 8, fewer for many classes
        (``4096 // classes``, at least 1), as these tables grow with channels x classes.
    name : str
        The dataset's name in the store; scanning a second name extends the reference set (Sec. 3.2).
    label : {"true", "predicted"} or int
        The class the relevance is computed for: the true label (default), the prediction, or a fixed class.
    normalize : bool
        Per-layer relevance normalisation (A.3, Eq. 35), recommended when extending with out-of-distribution data.
    batch_size, num_workers : int
        DataLoader settings (workers load samples in parallel).
    checkpoint_every : tuple[int, float]
        Checkpoint after this many batches or seconds, whichever comes first.
    progress : bool
        Show a progress bar (tqdm, in notebooks and terminals).
    background : bool
        Scan in a background thread of this process and return at once a :class:`ScanJob`, whose store shows the
        partial results (the explorer's gallery fills while the scan runs); ``job.stop()`` interrupts it.

    Returns
    -------
    Store or ScanJob
    """
    path = pathlib.Path(path)
    layers = [crp.validate_layer(layer) for layer in layers]
    if not layers:
        raise CRPError("give at least one layer to scan")
    if len(dataset) == 0:
        raise CRPError("the dataset is empty")
    if not isinstance(k, int) or k < 1 or not (class_k is None or (isinstance(class_k, int) and class_k >= 1)):
        raise CRPError(f"k and class_k must be positive integers, got k={k!r}, class_k={class_k!r}")
    _join_launcher()
    world = _world()[1]
    manifest, dataset_id, base = _prepare(crp, dataset, layers, path, name, k, class_k, label, normalize, batch_size)
    if base is None:  # this dataset is in the store already
        return ScanJob.finished(path) if background else Store(path)
    if background and world > 1:
        raise CRPError("a background scan runs in one process; under torchrun, scan in the foreground")
    stop = threading.Event()
    options = {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "label": label,
        "normalize": normalize,
        "checkpoint_every": checkpoint_every,
        "progress": progress and not background,
        "stop": stop,
    }

    def run():
        return _run(crp, dataset, path, manifest, dataset_id, options, base)

    if background:
        return ScanJob(run, path, stop)
    return run()


class ScanStoppedError(CRPError):
    """A scan stopped on request (its checkpoint is kept; scanning again continues it)."""


class ScanJob:
    """A scan running in a background thread.

    Attributes
    ----------
    path : pathlib.Path
        The store directory.
    error : BaseException or None
        Why the scan failed, if it did (a stop request is not an error).
    """

    def __init__(self, run, path, stop):
        self.path = pathlib.Path(path)
        self.error = None
        self._stop = stop
        self._thread = threading.Thread(target=self._main, args=(run,), name="crp-widgets-scan", daemon=True)
        self._thread.start()

    @classmethod
    def finished(cls, path):
        """A job for a store whose scan is complete already."""
        return cls(lambda: None, path, threading.Event())

    def _main(self, run):
        try:
            run()
        except ScanStoppedError:
            pass
        except BaseException as error:  # kept for the caller: a background thread has no one to raise to
            self.error = error

    @property
    def store(self):
        """The store, with the results so far (``store.refresh()`` reads newer ones)."""
        return Store(self.path)

    def running(self):
        """Whether the scan is still running."""
        return self._thread.is_alive()

    def stop(self, timeout=None):
        """Stop after the current batch, keeping a checkpoint; return whether it stopped within ``timeout``."""
        self._stop.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def wait(self, timeout=None):
        """Wait for the scan to end; raise its error if it failed; return the store."""
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.store


def _run(crp, dataset, path, manifest, dataset_id, options, base):
    """Scan this process's share, merge all processes' tables into the store (rank 0) and open it."""
    rank, world = _world()
    tables = _Scanner(crp, dataset, path, manifest, dataset_id, options).run()
    parts = [tables]
    if world > 1:
        gathered = [None] * world if rank == 0 else None
        torch.distributed.gather_object(tables.data, gathered, dst=0)
        if rank == 0:
            parts = [Tables(tables.layers, tables.classes, tables.k, tables.class_k, d) for d in gathered]
    if rank == 0:
        merged = base
        for part in parts:
            merged = merged.merge(part)
        _finish(path, manifest, dataset_id, merged)
    _barrier()
    return Store(path)


def _prepare(crp, dataset, layers, path, name, k, class_k, label, normalize, batch_size):
    """Create or check the store's manifest; return it, the dataset's number and the finished tables."""
    rank = _world()[0]
    path.mkdir(parents=True, exist_ok=True)
    probe, _ = _split(dataset[0])
    probe = torch.as_tensor(probe).unsqueeze(0).to(next(iter(crp.model.parameters())).device)
    forward, _ = crp.forward_pass(probe)
    classes = int(forward.output.shape[-1])
    if class_k is None:
        class_k = max(1, min(8, 4096 // classes))
    layer_info = {}
    for layer in layers:
        tap = forward.tap(layer)
        activation, axis = tap.activation, tap.axis
        layer_info[layer] = {
            "channels": int(activation.shape[axis]),
            "shape": list(activation.movedim(axis, 1).shape[1:]),
            "channel_axis": axis,
        }
    entry = {
        "name": name,
        "length": len(dataset),
        "fingerprint": dataset_fingerprint(dataset),
        "label": label,
        "batch_size": batch_size,
        "complete": False,
    }
    manifest_path = path / "manifest.json"
    if manifest_path.exists():
        manifest = read_json(manifest_path)
        _check_compatible(manifest, path, crp, layers, k, class_k, normalize, classes)
    else:
        manifest = {
            "format": FORMAT,
            "model": {"fingerprint": model_fingerprint(crp.model), "class": type(crp.model).__name__},
            "composite": describe(crp.composite),
            "layers": layer_info,
            "classes": classes,
            "k": k,
            "class_k": class_k,
            "normalize": normalize,
            "datasets": [],
            "tables": None,
        }
    names = [d["name"] for d in manifest["datasets"]]
    if name in names:
        existing = manifest["datasets"][names.index(name)]
        if existing["fingerprint"] != entry["fingerprint"] or existing["length"] != entry["length"]:
            raise StoreMismatchError(
                f"the store at {str(path)!r} already holds a different dataset named {name!r} "
                f"({existing['length']} samples); scan this one under another name to extend the references"
            )
        if existing["complete"]:
            _barrier()
            return manifest, names.index(name), None
        dataset_id = names.index(name)
    else:
        manifest["datasets"].append(entry)
        dataset_id = len(manifest["datasets"]) - 1
    if rank == 0:
        write_json(manifest_path, manifest)
    _barrier()
    if manifest["tables"]:
        return manifest, dataset_id, Tables(layer_info, classes, k, class_k, load_file(path / manifest["tables"]))
    return manifest, dataset_id, Tables(layer_info, classes, k, class_k)


def _check_compatible(manifest, path, crp, layers, k, class_k, normalize, classes):
    where = f"the store at {str(path)!r}"
    fingerprint = model_fingerprint(crp.model)
    if manifest["model"]["fingerprint"] != fingerprint:
        raise StoreMismatchError(f"{where} was made for another model; use a new path for this one")
    if sorted(manifest["layers"]) != sorted(layers):
        raise StoreMismatchError(f"{where} holds layers {sorted(manifest['layers'])}, not {sorted(layers)}")
    settings = {"k": k, "class_k": class_k, "normalize": normalize, "classes": classes}
    for key, value in settings.items():
        if manifest[key] != value:
            raise StoreMismatchError(f"{where} was made with {key}={manifest[key]!r}, not {value!r}")


def _finish(path, manifest, dataset_id, merged):
    """Write the merged tables, then the manifest naming them, then drop the checkpoints."""
    name = f"tables-{time.time_ns():x}.safetensors"
    write_tensors(path / name, merged.data)
    previous = manifest.get("tables")
    manifest["tables"] = name
    manifest["datasets"][dataset_id]["complete"] = True
    write_json(path / "manifest.json", manifest)
    for part in path.glob("part-*"):
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
    if previous and previous != name:
        (path / previous).unlink(missing_ok=True)
