"""The reference store: what a RelMax/ActMax scan found, on disk (CRP paper Sec. 2.3.2-2.3.3, 3.2).

A store is a directory::

    manifest.json                 format, model and dataset fingerprints, layers, options, the current tables file
    tables-<generation>.safetensors
                                  top-k tables and class statistics of every finished scan
    part-<rank>.json / part-<rank>-<generation>.safetensors
                                  checkpoints of a scan in progress (one per process)

Every file is written to a temporary name and renamed into place, data files before the JSON that names them, so a
reader (or a resumed scan) always sees a consistent state. Nothing is pickled: JSON and safetensors only.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import tempfile

import torch
from safetensors.torch import load_file, save_file

from . import topk
from .errors import CRPError, check_count

FORMAT = "crp_widgets.store/1"
MODES = (("relevance", "sum"), ("relevance", "max"), ("activation", "sum"), ("activation", "max"))
CLASS_MODES = (("relevance", "sum"), ("relevance", "max"))


class StoreMismatchError(CRPError):
    """A store made for another model, layer set, dataset or set of options."""


@dataclasses.dataclass(frozen=True)
class Reference:
    """One reference sample of a channel.

    Attributes
    ----------
    dataset : str
        Name of the dataset the sample comes from (Sec. 3.2, reference dataset extension).
    index : int
        Index of the sample in that dataset.
    value : float
        Its maximization target (Eq. 18, 19, 23).
    neuron : tuple[int, ...]
        The channel's most relevant (or most active) neuron, as an index into one sample's layer output
        ``(channel, *position)``: where the receptive-field crop is centred (Sec. 2.3.4).
    """

    dataset: str
    index: int
    value: float
    neuron: tuple


def model_fingerprint(model):
    """A fingerprint of a model's parameters and buffers: names, shapes, dtypes, sums and a strided sample."""
    digest = hashlib.blake2b(digest_size=16)
    state = model.state_dict()
    for name, tensor in state.items():
        data = tensor.detach().reshape(-1)
        if data.is_floating_point():
            sample = data[:: max(1, data.numel() // 4096)].to("cpu", torch.float64)
            summary = [float(data.double().sum())]
        else:
            sample = data[:: max(1, data.numel() // 4096)].to("cpu", torch.int64)
            summary = []
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|{summary}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()


def dataset_fingerprint(dataset):
    """A fingerprint of a dataset: its length and a few evenly spaced samples (values and labels)."""
    digest = hashlib.blake2b(digest_size=16)
    length = len(dataset)
    digest.update(str(length).encode())
    for index in sorted({0, length // 3, (2 * length) // 3, length - 1} if length else set()):
        item = dataset[index]
        for part in item if isinstance(item, (tuple, list)) else (item,):
            tensor = torch.as_tensor(part)
            digest.update(f"{index}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
            digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()


def write_atomic(path, write):
    """Call ``write(temporary_path)``, then rename the result to ``path`` (atomic on POSIX)."""
    path = pathlib.Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path, data):
    """Write JSON atomically."""

    def write(temporary):
        with open(temporary, "w") as file:
            json.dump(data, file, indent=1)

    write_atomic(path, write)


def write_tensors(path, tensors):
    """Write a dict of tensors as safetensors, atomically."""
    write_atomic(path, lambda temporary: save_file({k: v.contiguous() for k, v in tensors.items()}, temporary))


def read_json(path):
    """Read a JSON file."""
    with open(path) as file:
        return json.load(file)


def statistics(maps):
    """``(peak, position, sum)`` per sample and channel ``[B, C]`` of maps ``[B, C, S]`` (Eq. 18-19, 23)."""
    peak, position = maps.max(dim=-1)
    return peak, position, maps.sum(dim=-1)


class Tables:
    """The running state of a scan: top-k tables per layer and mode, class statistics (Eq. 18-23, Fig. 13).

    Keys of ``data`` are ``"<layer>|<table>|<field>"`` so that the whole state is one flat dict of tensors.
    A batch is merged in two steps: :meth:`add` and :meth:`count` stage the changes without touching ``data``, and
    :meth:`commit` applies them all at once, so a scan interrupted while it processes a batch keeps the state before
    it. The class-conditional tables (channels x classes x k) change only in the columns of the batch's classes;
    those columns are written in place instead of copying the tables for every batch.
    """

    def __init__(self, layers, classes, k, class_k, data=None):
        self.layers = dict(layers)
        self.classes = classes
        self.k = k
        self.class_k = class_k
        self.blank = data is None
        self.data = data if data is not None else self._empty()
        self._staged = {}  # key -> a new tensor, or (columns, values) to write into the tensor's dimension 1

    def _empty(self):
        data = {"class_count": torch.zeros(self.classes, dtype=torch.float64)}
        for layer, info in self.layers.items():
            channels = info["channels"]
            for mode, target in MODES:
                self._put(data, layer, f"{mode}/{target}", topk.empty((channels,), self.k))
            for mode, target in CLASS_MODES:
                self._put(data, layer, f"class/{mode}/{target}", topk.empty((channels, self.classes), self.class_k))
            data[f"{layer}|class_relevance_sum"] = torch.zeros(channels, self.classes, dtype=torch.float64)
        return data

    @staticmethod
    def _put(data, layer, table, fields):
        for field, tensor in fields.items():
            data[f"{layer}|{table}|{field}"] = tensor

    def table(self, layer, table):
        """The ``{values, keys, positions}`` of one table."""
        return {field: self.data[f"{layer}|{table}|{field}"] for field in ("values", "keys", "positions")}

    def add(self, layer, relevance, activation, labels, keys):
        """Stage one batch of a layer given the :func:`statistics` of its relevance and activation maps."""
        channels = relevance[0].shape[1]
        batch_keys = keys.unsqueeze(0).expand(channels, -1)
        present, column = torch.unique(labels, return_inverse=True)
        for mode, (peak, position, summed) in (("relevance", relevance), ("activation", activation)):
            for target, value in (("sum", summed), ("max", peak)):
                name = f"{mode}/{target}"
                merged = topk.merge(self.table(layer, name), value.T, batch_keys, position.T)
                self._put(self._staged, layer, name, merged)
                if mode == "relevance":
                    self._stage_classes(layer, f"class/{name}", value, position, labels, keys, present)
        key = f"{layer}|class_relevance_sum"
        summed = relevance[2].T.double()
        sums = torch.zeros(channels, len(present), dtype=torch.float64).index_add(1, column, summed)
        self._staged[key] = (present, self.data[key][:, present] + sums)

    def _stage_classes(self, layer, name, value, position, labels, keys, present):
        """Class-conditional top-k (Fig. 13): each sample competes only within the class it was explained for."""
        table = {field: tensor[:, present] for field, tensor in self.table(layer, name).items()}
        member = labels.unsqueeze(0) == present.unsqueeze(1)  # [U, B]
        channels = value.shape[1]
        values = value.T.unsqueeze(1).expand(channels, len(present), -1).masked_fill(~member, -torch.inf)
        candidate_keys = keys.expand(channels, len(present), -1).masked_fill(~member, topk.EMPTY)
        positions = position.T.unsqueeze(1).expand(channels, len(present), -1)
        for field, tensor in topk.merge(table, values, candidate_keys, positions).items():
            self._staged[f"{layer}|{name}|{field}"] = (present, tensor)

    def count(self, labels):
        """Stage the count of one batch's samples per class."""
        self._staged["class_count"] = self.data["class_count"].index_add(
            0, labels, torch.ones(len(labels), dtype=torch.float64)
        )

    def commit(self):
        """Apply the staged changes; if interrupted part way, restore the state before them and re-raise."""
        staged, self._staged = self._staged, {}
        undo = []
        try:
            for key, change in staged.items():
                if isinstance(change, tuple):
                    columns, values = change
                    undo.append((key, self.data[key], columns, self.data[key][:, columns]))
                    self.data[key].index_copy_(1, columns, values.to(self.data[key].dtype))
                else:
                    undo.append((key, self.data[key], None, None))
                    self.data[key] = change
        except BaseException:
            for key, tensor, columns, values in reversed(undo):
                self.data[key] = tensor
                if columns is not None:
                    tensor.index_copy_(1, columns, values)
            raise
        self.blank = False

    def merge(self, other):
        """Merge another state of the same shape into this one (associative, see :mod:`.topk`)."""
        if self.blank:  # nothing to merge with: take the other state as it is
            self.data, self.blank = dict(other.data), other.blank
            return self
        for key, tensor in other.data.items():
            if key.endswith("|values"):
                prefix = key[: -len("|values")]
                layer, name = prefix.split("|", 1)
                self._put(self.data, layer, name, topk.merge_tables(self.table(layer, name), other.table(layer, name)))
            elif key == "class_count" or key.endswith("|class_relevance_sum"):
                self.data[key] = self.data[key] + tensor
        return self


class Store:
    """A reference store on disk, opened for reading (see the module docstring for the layout).

    Use :func:`open_store` or :func:`crp_widgets.engine.scan.scan` to get one.
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.refresh()

    def refresh(self):
        """Re-read the store (a scan may have added results since)."""
        manifest_path = self.path / "manifest.json"
        if not manifest_path.exists():
            raise CRPError(f"no reference store at {str(self.path)!r} (manifest.json is missing)")
        self.manifest = read_json(manifest_path)
        if self.manifest.get("format") != FORMAT:
            raise StoreMismatchError(
                f"the store at {str(self.path)!r} has format {self.manifest.get('format')!r}; "
                f"this version reads {FORMAT!r}"
            )
        self.layers = {name: dict(info) for name, info in self.manifest["layers"].items()}
        shape = (self.layers, self.manifest["classes"], self.manifest["k"], self.manifest["class_k"])
        try:
            tables = self.manifest.get("tables")
            self.tables = Tables(*shape, load_file(self.path / tables) if tables else None)
            # Checkpoints of scans in progress: partial results, readable before the scan ends.
            for part in sorted(self.path.glob("part-*.json")):
                progress = read_json(part)
                if not self.manifest["datasets"][progress["dataset"]]["complete"]:
                    self.tables.merge(Tables(*shape, load_file(self.path / progress["file"])))
        except FileNotFoundError:
            # A scan replaced a file between our reads: read the newer state.
            return self.refresh()
        return self

    @property
    def datasets(self):
        """The scanned datasets: name, length, fingerprint, label mode, and whether their scan finished."""
        return list(self.manifest["datasets"])

    @property
    def complete(self):
        """Whether every scan into this store has finished (otherwise results are partial)."""
        return all(dataset["complete"] for dataset in self.manifest["datasets"])

    @property
    def samples(self):
        """How many samples the current results are based on."""
        return int(self.tables.data["class_count"].sum())

    def _layer(self, layer):
        if layer not in self.layers:
            raise CRPError(
                f"layer {layer!r} is not in this reference store; it holds {', '.join(repr(n) for n in self.layers)}"
            )
        return self.layers[layer]

    def _channel(self, layer, channel):
        count = self._layer(layer)["channels"]
        if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < count:
            raise CRPError(
                f"channel {channel!r} is out of range for layer {layer!r}, which has {count} channels "
                f"(valid: 0 to {count - 1})"
            )
        return channel

    def references(self, layer, channel, mode="relevance", target="sum", k=8, cls=None):
        """The ``k`` reference samples of a channel (RelMax or ActMax, Eq. 18-23).

        Parameters
        ----------
        mode : {"relevance", "activation"}
            Relevance Maximization or Activation Maximization.
        target : {"sum", "max"}
            Maximization target over the channel's neurons.
        cls : int, optional
            Class-conditional references (Sec. 3.2, Fig. 13): only samples whose relevance was computed for that
            class. Relevance mode only.

        Returns
        -------
        list[Reference]
            Best first; fewer than ``k`` when the store keeps fewer, or fewer samples were scanned.
        """
        info = self._layer(layer)
        channel = self._channel(layer, channel)
        if mode not in ("relevance", "activation"):
            raise CRPError(f"mode must be 'relevance' (RelMax) or 'activation' (ActMax), got {mode!r}")
        if target not in ("sum", "max"):
            raise CRPError(f"target must be 'sum' or 'max', got {target!r}")
        if cls is None:
            table = {f: t[channel] for f, t in self.tables.table(layer, f"{mode}/{target}").items()}
        else:
            if mode != "relevance":
                raise CRPError("class-conditional references exist for relevance (RelMax) only")
            if isinstance(cls, bool) or not isinstance(cls, int) or not 0 <= cls < self.tables.classes:
                raise CRPError(f"class {cls!r} is out of range (valid: 0 to {self.tables.classes - 1})")
            table = {f: t[channel, cls] for f, t in self.tables.table(layer, f"class/{mode}/{target}").items()}
        check_count(k, "k must be a positive number of references")
        spatial = tuple(info["shape"][1:])  # the layer's positions, channels moved to the front
        names = [dataset["name"] for dataset in self.manifest["datasets"]]
        result = []
        for value, key, position in zip(table["values"][:k], table["keys"][:k], table["positions"][:k]):
            if int(key) == topk.EMPTY or not torch.isfinite(value):
                break
            dataset, index = topk.decode(key)
            where = tuple(int(i) for i in torch.unravel_index(position, spatial)) if spatial else ()
            result.append(Reference(names[dataset], index, float(value), (channel, *where)))
        return result

    def class_relevance(self, layer):
        """Mean relevance of every channel per class ``[C, classes]`` (NaN for classes never seen)."""
        self._layer(layer)
        counts = self.tables.data["class_count"]
        sums = self.tables.data[f"{layer}|class_relevance_sum"]
        return (sums / counts).to(torch.float32)

    def top_classes(self, layer, channel, k=5):
        """The classes that use a channel most: ``[(class, mean relevance), ...]`` (Fig. 13, 23)."""
        channel = self._channel(layer, channel)
        means = self.class_relevance(layer)[channel]
        seen = torch.nonzero(torch.isfinite(means)).flatten()
        order = seen[torch.argsort(means[seen], descending=True)][:k]
        return [(int(c), float(means[c])) for c in order]

    def check(self, model=None, layers=None, datasets=None):
        """Refuse this store for another model, layer set or dataset (:class:`StoreMismatchError`).

        ``datasets`` maps dataset names to datasets; each must match the scanned one of that name.
        """
        if model is not None:
            fingerprint = model_fingerprint(model)
            if fingerprint != self.manifest["model"]["fingerprint"]:
                raise StoreMismatchError(
                    f"the store at {str(self.path)!r} was made for another model (parameters fingerprint "
                    f"{self.manifest['model']['fingerprint'][:12]}, this model {fingerprint[:12]})"
                )
        if layers is not None and sorted(layers) != sorted(self.layers):
            raise StoreMismatchError(
                f"the store at {str(self.path)!r} holds layers {sorted(self.layers)}, not {sorted(layers)}"
            )
        for name, dataset in (datasets or {}).items():
            scanned = next((d for d in self.manifest["datasets"] if d["name"] == name), None)
            if scanned is None:
                raise StoreMismatchError(
                    f"the store at {str(self.path)!r} has no dataset {name!r}; it holds "
                    f"{', '.join(repr(d['name']) for d in self.manifest['datasets'])}"
                )
            if len(dataset) != scanned["length"] or dataset_fingerprint(dataset) != scanned["fingerprint"]:
                raise StoreMismatchError(
                    f"dataset {name!r} differs from the one scanned into the store at {str(self.path)!r} "
                    f"({len(dataset)} samples now, {scanned['length']} scanned; or different contents)"
                )
        return self


def open_store(path, model=None, layers=None, datasets=None):
    """Open a reference store, refusing it for another model, layer set or dataset when those are given."""
    return Store(path).check(model=model, layers=layers, datasets=datasets)
