"""An exploration as one self-contained HTML file: the explorer's own views, without a kernel or a network.

:func:`export` computes, in the kernel, what the explorer's views would show for the chosen samples and layers, by
running the views themselves on a copy of the session that computes on the calling thread, and records the state
each view would receive from the kernel (its synced traits, images as PNG bytes, arrays as float32 bytes). The
file holds that state once (identical values and buffers are stored once; everything is gzip-compressed and
base64-encoded once), the front-end bundles of the views (``crp_widgets/static``) and the page's runtime
(``js/export.ts``): a small stand-in for the kernel that gives each view a model object serving ``get``, ``set``,
``on``, ``save_changes`` and ``send`` from the recorded state, and answers the views' requests (a click on a sample,
a layer or a channel) from it. What the file does not hold, each view says so.

Per sample and layer the file holds the sample's heatmap, the channel ranking, the conditional heatmaps of the top
``channels`` channels, the concept atlas and the attribution graph of the layer's channel in focus; per layer and
channel among those, the references (RelMax and ActMax; crops and masked crops); and the code of
every view it can show.
"""

import base64
import datetime
import gzip
import hashlib
import html
import json
import math
import os
import pathlib
import platform
import struct
import tempfile

import anywidget
import comm
import numpy as np
import torch

from ..engine import CRPError, describe
from .atlas import ConceptAtlas
from .channels import ChannelSelector
from .code import CodeContext, _join, atlas_code, channels_code, gallery_code, graph_code, heatmaps_code, sample_code
from .component import STATIC
from .gallery import ReferenceGallery
from .graph import AttributionGraphView
from .heatmaps import ConditionalHeatmaps, heatmap_caption, kept_info
from .layers import layer_menu
from .sample import SampleView, predictions, thumbnail
from .session import ExplorerState
from .worker import Worker

__all__ = ["ExportError", "export", "read_export"]

FORMAT = 1
VIEWS = ("sample", "channels", "heatmaps", "gallery", "atlas", "graph")
BUNDLES = (*VIEWS, "export")
GALLERY_MODES = ("relevance", "activation")
GALLERY_VIEWS = ("crop", "masked")
# Traits every view has that the page sets itself (or that say nothing about what the view shows).
PAGE_TRAITS = frozenset({"busy", "computing", "snippet"})
DATA_ID = "crpx-data"
BUNDLES_ID = "crpx-bundles"


class ExportError(OSError):
    """The export file cannot be written where it was asked for (the message says why)."""


class _Offline(comm.DummyComm):
    """The comm of the views an export runs: no kernel, so nothing is sent (nor serialised) on every change."""

    kernel = None


def _offline_views(explorer, session, state, channels):
    """The explorer's six views on the synchronous session copy, with the explorer's options."""
    quiet = {"comm": _Offline(target_name="jupyter.widget")}
    gallery = explorer.gallery
    views = {
        "sample": SampleView(session, state, page_size=1, opacity=explorer.sample.opacity, **quiet),
        "channels": ChannelSelector(session, state, top_k=explorer.channels.top_k, **quiet),
        "heatmaps": ConditionalHeatmaps(session, state, top_k=channels, opacity=explorer.heatmaps.opacity, **quiet),
        "gallery": ReferenceGallery(
            session, state, poll_interval=3600, maximization=gallery.maximization, init=gallery.init, **quiet
        ),
        "atlas": ConceptAtlas(session, state, **_options(explorer.atlas, ATLAS_OPTIONS), **quiet),
        "graph": AttributionGraphView(session, state, **_options(explorer.graph, GRAPH_OPTIONS), **quiet),
    }
    return views


ATLAS_OPTIONS = ("mode", "n_concepts", "n_segments", "compactness", "sigma", "threshold", "region_k",
                 "reference_count")  # fmt: skip
GRAPH_OPTIONS = ("width", "expand_k", "drill_k")


def _options(view, names):
    return {name: getattr(view, name) for name in names}


def _synced(view):
    """The names of a view's own synced traits (not those every anywidget has, nor the page's own)."""
    base = set(anywidget.AnyWidget.class_trait_names(sync=True))
    return sorted(name for name in view.trait_names(sync=True) if name not in base and name not in PAGE_TRAITS)


class _Pack:
    """Distinct JSON values and binary buffers, each stored once; a value refers to a buffer as ``{"$b": id}``."""

    def __init__(self):
        self.values, self._values = [], {}
        self.buffers, self._buffers = [], {}
        self.shuffled = []

    def buffer(self, data, shuffle=False):
        """The id of ``data``; ``shuffle``: float32 values stored byte plane by byte plane (they compress better)."""
        data = bytes(data)
        digest = hashlib.blake2b(data + bytes([shuffle]), digest_size=20).digest()
        if digest not in self._buffers:
            self._buffers[digest] = len(self.buffers)
            if shuffle:
                self.shuffled.append(len(self.buffers))
                data = np.frombuffer(data, np.uint8).reshape(-1, 4).T.tobytes()
            self.buffers.append(data)
        return self._buffers[digest]

    def _plain(self, value):
        if isinstance(value, (bytes, bytearray, memoryview)):
            return {"$b": self.buffer(value)}
        if isinstance(value, dict) and value.get("dtype") == "float32" and isinstance(value.get("data"), memoryview):
            return {**value, "data": {"$b": self.buffer(value["data"], shuffle=True)}}
        if isinstance(value, dict):
            return {str(k): self._plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._plain(v) for v in value]
        if isinstance(value, float) and not math.isfinite(value):
            return None  # JSON has no NaN; no view shows one
        if isinstance(value, torch.Tensor):
            return self._plain(value.tolist())
        return value

    def value(self, value):
        """The id of ``value`` (JSON-able after its buffers are taken out)."""
        plain = self._plain(value)
        key = json.dumps(plain, sort_keys=True, separators=(",", ":"))
        if key not in self._values:
            self._values[key] = len(self.values)
            self.values.append(plain)
        return self._values[key]

    def traits(self, values):
        """``{name: id}`` of a dict of trait values."""
        return {name: self.value(value) for name, value in values.items()}


def _snapshot(view, pack, names=None):
    """The view's synced traits as the kernel would send them (through each trait's own serialiser)."""
    names = names or _synced(view)
    return pack.traits(view.get_state(key=names))


# ------------------------------------------------------------------------------------------------- arguments


def _check_path(path):
    """The target and a new temporary file next to it (its name), or :class:`ExportError` saying why not."""
    path = pathlib.Path(path).expanduser()
    if path.is_dir():
        raise ExportError(f"cannot write {str(path)!r}: it is a folder; give a file name, e.g. 'exploration.html'")
    folder = path.parent if str(path.parent) else pathlib.Path(".")
    if not folder.is_dir():
        why = "is not a folder" if folder.exists() else "does not exist"
        raise ExportError(f"cannot write {str(path)!r}: the folder {str(folder)!r} {why}")
    try:
        descriptor, part = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".part")
    except OSError as error:
        raise ExportError(f"cannot write {str(path)!r}: {error.strerror or error}") from None
    os.close(descriptor)
    return path, pathlib.Path(part)


def _count(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CRPError(f"{what} must be a positive whole number, got {value!r}")
    return value


def _arguments(explorer, samples, layers, channels, references):
    """The checked samples, layers, channels and references, or the error naming what is wrong."""
    session, state = explorer.session, explorer.state
    if session.dataset is None or not len(session.dataset):
        raise CRPError("an export shows samples of a dataset; this explorer has none")
    if samples is None:
        if state.custom is not None:
            raise CRPError("the explorer shows your own image; an export holds dataset samples: pass samples=[...]")
        samples = [state.sample]
    if isinstance(samples, int):
        samples = [samples]
    samples = list(dict.fromkeys(int(_index(s)) for s in samples))
    if not samples:
        raise CRPError("samples is empty: give the dataset indices to export")
    for index in samples:
        if not 0 <= index < len(session.dataset):
            count = len(session.dataset)
            raise CRPError(f"sample {index} is out of range: the dataset has {count} samples (0 to {count - 1})")
    layers = [state.layer] if layers is None else [layers] if isinstance(layers, str) else list(layers)
    layers = list(dict.fromkeys(session.crp.validate_layer(layer) for layer in layers))
    if not layers:
        raise CRPError("layers is empty: give the layers to export")
    channels = _count(channels, "channels")
    for layer in layers:
        count = session.channel_count(layer)
        if count is not None and channels > count:
            raise CRPError(
                f"channels={channels} is more than layer {layer!r} has: it has {count} channels; give channels "
                f"from 1 to {count}"
            )
    references = _count(references, "references")
    store = session.store
    if store is not None and references > store.manifest["k"]:
        k = store.manifest["k"]
        raise CRPError(f"references={references} is more than the store holds: {k} per channel; give 1 to {k}")
    return samples, layers, channels, references


def _index(value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise CRPError(f"samples are dataset indices (whole numbers), got {value!r}")
    return value


# ------------------------------------------------------------------------------------------------ provenance


def _about(explorer, samples, layers, channels, references, target):
    """What the file was made from, and when: model, rules, data, store, the chosen views."""
    session = explorer.session
    model = session.crp.model
    parameters = sum(p.numel() for p in model.parameters())
    dataset = session.dataset
    store = session.store
    stored = None
    if store is not None:
        stored = {"name": store.path.name, "layers": list(store.layers), "k": store.manifest["k"],
                  "samples": store.samples, "complete": store.complete}  # fmt: skip
    return {
        "format": FORMAT,
        "made": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "model": f"{type(model).__module__}.{type(model).__name__}",
        "parameters": parameters,
        "rules": describe(session.crp.composite),
        "data": f"{type(dataset).__module__}.{type(dataset).__name__}, {len(dataset)} samples",
        "classes": len(session.classes),
        "store": stored,
        "samples": samples,
        "layers": layers,
        "channels": channels,
        "references": references,
        "target": None if target is None else {"class": target, "name": session.class_name(target)},
        "software": {"crp_widgets": _version(), "torch": torch.__version__, "python": platform.python_version()},
    }


def _version():
    from .. import __version__

    return __version__


# ----------------------------------------------------------------------------------------------------- export


class _Progress:
    """A progress bar (tqdm; in a notebook its widget) that can grow once the references are counted."""

    def __init__(self, total, enabled):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="exporting", unit="view")

    def grow(self, more):
        if self.bar is not None:
            self.bar.total += more
            self.bar.refresh()

    def step(self, what):
        if self.bar is not None:
            self.bar.set_postfix_str(what, refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def export(explorer, path, samples=None, layers=None, channels=16, references=8, progress=True):
    """Write ``explorer``'s exploration as one self-contained HTML file (see :meth:`Explorer.export`).

    The file is written to a temporary file next to ``path`` and renamed when complete: an error leaves nothing.

    Raises
    ------
    ExportError
        If ``path`` cannot be written (a missing folder, a folder given as the file, no permission).
    CRPError
        For a sample out of range, an unknown layer (:class:`~crp_widgets.engine.UnknownLayerError`, listing the
        valid ones), more channels than a layer has, or more references than the store holds.
    """
    samples, layers, channels, references = _arguments(explorer, samples, layers, channels, references)
    path, part = _check_path(path)
    try:
        part.write_text(_page(explorer, samples, layers, channels, references, progress), encoding="utf-8")
        os.chmod(part, 0o666 & ~_umask())  # as an ordinary new file (the temporary one is private)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return path


def _umask():
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _page(explorer, samples, layers, channels, references, progress):
    data = _collect(explorer, samples, layers, channels, references, progress)
    return _html(data)


def _collect(explorer, samples, layers, channels, references, progress):
    """Run the views over every chosen state and record what they show: the page's data (values and buffers)."""
    source = explorer.session
    session = source.copy(worker=Worker(synchronous=True), cache_size=4096)
    crp, target = session.crp, explorer.state.target
    first = explorer.state.sample if explorer.state.sample in samples else samples[0]
    start = explorer.state.layer if explorer.state.layer in layers else layers[0]
    x0 = session.item(first)[0]
    explained0 = session.explained_class(x0, target)
    focus = {}
    for layer in layers:
        chosen = explorer.state.channel if layer == explorer.state.layer else None
        focus[layer] = int(chosen) if chosen is not None else int(crp.channel_relevance(x0, layer, explained0).order[0])
    state = ExplorerState(sample=first, layer=start, target=target, channel=focus[start])
    state.bind(session)
    pack = _Pack()
    bar = _Progress(len(samples) * len(layers), progress)
    try:
        views = _offline_views(explorer, session, state, channels)
        try:
            data = _record(explorer, session, state, views, pack, samples, layers, channels, references, focus, bar)
        finally:
            for view in views.values():
                view.close()
    finally:
        bar.close()
    data["about"] = _about(explorer, samples, layers, channels, references, target)
    selected = [int(c) for c in explorer.state.conditions.get(start, [])]
    top = data["top"][f"{first}|{start}"]
    data["initial"] = {
        "sample": first,
        "layer": start,
        "channel": focus[start],
        "selected": selected if selected and all(c in top for c in selected) else [],
        "top_k": explorer.heatmaps.top_k,
    }
    data["focus"] = focus
    data["values"], data["buffers"], data["shuffled"] = pack.values, pack.buffers, pack.shuffled
    return data


def _record(explorer, session, state, views, pack, samples, layers, channels, references, focus, bar):
    """The snapshots of every view in every chosen state (see the module docstring)."""
    crp = session.crp
    data = {"samples": samples, "layers": layers, "top": {}, "views": {name: {"states": {}} for name in VIEWS},
            "code": {}}  # fmt: skip
    for name, view in views.items():
        data["views"][name]["base"] = _snapshot(view, pack)
    # The sample strip: the chosen samples only, on one page.
    items = [session.item(index) for index in samples]
    strip = views["sample"]
    strip.thumbnails = [thumbnail(session.display(x)) for x, _ in items]
    infos = [{"index": i, "label": y, "prediction": p}
             for i, (_, y), p in zip(samples, items, predictions(crp, [x for x, _ in items]))]  # fmt: skip
    strip.thumbnail_info = infos
    strip_state = _snapshot(strip, pack, ["thumbnails", "thumbnail_info"])
    strip_state.update(pack.traits({"count": len(samples), "page": 0, "page_size": len(samples),
                                    "columns": explorer.sample.columns or min(len(samples), 4)}))  # fmt: skip
    data["views"]["sample"]["base"].update(strip_state)

    views["gallery"].active = False  # references come per layer and channel, below
    references_of = {layer: {} for layer in layers}
    for layer in layers:
        for index in samples:
            with state.hold_trait_notifications():
                state.conditions = {}
                state.sample, state.layer, state.channel = index, layer, focus[layer]
            key = f"{index}|{layer}"
            if layer == layers[0]:
                explained = _snapshot(views["sample"], pack)
                data["views"]["sample"]["states"][str(index)] = {
                    name: value for name, value in explained.items() if name not in strip_state
                }
            for name in ("channels", "heatmaps", "atlas", "graph"):
                data["views"][name]["states"][key] = _snapshot(views[name], pack)
            heatmaps = views["heatmaps"]
            top = list(heatmaps.grid_info.get("channels", []))
            data["top"][key] = top
            for channel in [*top, focus[layer]]:
                references_of[layer][channel] = None
            data["code"].update(_codes(explorer, session, state, views, pack, index, layer, top, samples))
            _selected(data, session, heatmaps, pack, key, layer, top)
            bar.step(f"sample {index}, {layer}")

    for name in ("sample", "channels", "heatmaps", "atlas", "graph"):
        views[name].active = False
    gallery = views["gallery"]
    gallery.active = True
    data["counts"] = {layer: session.channel_count(layer) for layer in layers}
    store = session.store
    if store is None:
        data["views"]["gallery"]["states"]["none"] = _snapshot(gallery, pack)
    else:
        _record_references(session, state, gallery, pack, data, layers, references_of, references, bar)
    _record_empty(views, pack, data)
    _offer_held_layers(session, pack, data, layers)
    return data


def _offer_held_layers(session, pack, data, layers):
    """The layer menus offer the layers the file holds (the gallery's: those of them the store holds)."""
    store = session.store
    held = {
        "channels": layers,
        "atlas": layers,
        "gallery": [n for n in layers if store is not None and n in store.layers],
    }
    for name, offered in held.items():
        view = data["views"][name]
        if "layer_menu" not in view["base"]:
            continue
        view["base"]["layer_menu"] = pack.value(layer_menu(session.crp, offered) if offered else [])
        for traits in view["states"].values():
            traits.pop("layer_menu", None)


def _record_empty(views, pack, data):
    """What each part of a view shows when it shows nothing (its own ``clear_view``): the page's "not held"."""
    parts = {"heatmaps": ("heatmap", "grid"), "gallery": ("tiles",), "atlas": ("atlas",), "graph": ("graph", "drill")}
    for name, view in views.items():
        data["views"][name]["empty"] = {}
        for part in parts.get(name, ()):
            before = _snapshot(view, pack)
            view.clear_view(part)
            after = _snapshot(view, pack)
            data["views"][name]["empty"][part] = {key: ids for key, ids in after.items() if before.get(key) != ids}


def _record_references(session, state, gallery, pack, data, layers, references_of, references, bar):
    """The gallery of every held channel: RelMax and ActMax, as crops and masked crops."""
    bar.grow(sum(len(found) for found in references_of.values()))
    gallery.k = references
    for layer in layers:
        for channel in references_of[layer]:
            with state.hold_trait_notifications():
                state.layer, state.channel = layer, channel
            for mode in GALLERY_MODES:
                for shown in GALLERY_VIEWS:
                    with gallery.hold_trait_notifications():
                        gallery.mode, gallery.view = mode, shown
                    data["views"]["gallery"]["states"][f"{layer}|{channel}|{mode}|{shown}"] = _snapshot(gallery, pack)
            context = CodeContext(session, state)
            for mode, compare in (("relevance", False), ("activation", False), ("relevance", True)):
                for shown in GALLERY_VIEWS:
                    code = gallery_code(context, mode, compare, gallery.maximization, references, shown, gallery.init)
                    data["code"][f"gallery|{layer}|{channel}|{mode}|{int(compare)}|{shown}"] = pack.value(
                        _join(context, [code])
                    )
            bar.step(f"references of {layer} channel {channel}")


def _selected(data, session, heatmaps, pack, key, layer, top):
    """The left heatmap's caption and note when one top channel is selected (its picture is the grid's slice)."""
    info = heatmaps.heatmap_info
    whole = float(abs(heatmaps.heatmap).sum()) if heatmaps.heatmap is not None else 0.0
    name = heatmaps.grid_info.get("class")
    for position, channel in enumerate(top):
        conditions = {layer: [channel]}
        caption, about = heatmap_caption(name, conditions, session.crp.layer_names)
        base = {"about": about, "input": info.get("input"), "conditioned": True, "kept": None, "few": False}
        conditioned = float(abs(heatmaps.grid[position]).sum())
        values = {"caption": caption, "heatmap_info": kept_info(base, conditioned, whole)}
        data["views"]["heatmaps"].setdefault("selected", {})[f"{key}|{channel}"] = pack.traits(values)


def _codes(explorer, session, state, views, pack, index, layer, top, samples):
    """The code of every view in this state (and of the heatmaps with each top channel selected)."""
    context = CodeContext(session, state)
    key = f"{index}|{layer}"
    codes = {
        f"sample|{index}": sample_code(context, samples),
        f"channels|{key}": channels_code(context, explorer.channels.top_k),
        f"heatmaps|{key}|": heatmaps_code(context, explorer.heatmaps.top_k),
        f"atlas|{key}": atlas_code(context, **_options(views["atlas"], ATLAS_OPTIONS[:-1])),
        f"graph|{key}": graph_code(
            context, (layer, state.channel), views["graph"].width, views["graph"].path, views["graph"].drill_k
        ),
    }
    for channel in top:
        context.conditions = {layer: [int(channel)]}
        codes[f"heatmaps|{key}|{channel}"] = heatmaps_code(context, explorer.heatmaps.top_k)
    context.conditions = {}
    return {name: pack.value(_join(context, [code])) for name, code in codes.items()}


# ------------------------------------------------------------------------------------------------------- page


def _container(header, buffers):
    """``[4-byte header length][header JSON][buffers]``, gzip-compressed, then base64: every byte encoded once."""
    offsets, position = [], 0
    for buffer in buffers:
        offsets.append([position, len(buffer)])
        position += len(buffer)
    head = json.dumps({**header, "buffers": offsets}, separators=(",", ":"), allow_nan=False).encode("utf-8")
    raw = b"".join([struct.pack("<I", len(head)), head, *buffers])
    return base64.b64encode(gzip.compress(raw, compresslevel=6, mtime=0)).decode("ascii")


def _script_json(value):
    """JSON safe inside a ``<script>`` element (no ``<`` at all)."""
    return json.dumps(value, separators=(",", ":")).replace("<", "\\u003c")


def _bundles():
    """The views' front-end bundles and the page's runtime, as the build wrote them, and their style sheets."""
    code, styles = {}, []
    for name in BUNDLES:
        script = STATIC / f"{name}.js"
        if not script.exists():
            raise CRPError(f"the front-end bundle {script} is missing: build it with `npm run build`")
        code[name] = script.read_text(encoding="utf-8")
        sheet = STATIC / f"{name}.css"
        if sheet.exists():
            styles.append(sheet.read_text(encoding="utf-8"))
    return code, "\n".join(styles)


def _html(data):
    about = data["about"]
    code, styles = _bundles()
    payload = _container({key: value for key, value in data.items() if key != "buffers"}, data["buffers"])
    escape = html.escape
    target = about["target"]
    explains = f"class {target['name']}" if target else "each sample's predicted class"
    store = about["store"]
    stored = (f"references from the store {store['name']!r} ({store['k']} per channel, {store['samples']} samples "
              f"scanned)" if store else "no reference store")  # fmt: skip
    facts = [
        ("Model", f"{about['model']} ({about['parameters']:,} parameters)"),
        ("Rules", about["rules"]),
        ("Data", about["data"]),
        ("Explains", explains),
        ("Holds", f"samples {', '.join(map(str, about['samples']))}; layers {', '.join(about['layers'])}; the "
                  f"{about['channels']} most relevant channels of each; {stored}"),
        ("Made", f"{about['made']} with crp_widgets {about['software']['crp_widgets']}, torch "
                 f"{about['software']['torch']}"),
    ]  # fmt: skip
    rows = "".join(f"<dt>{escape(name)}</dt><dd>{escape(text)}</dd>" for name, text in facts)
    return PAGE.format(
        title=escape(f"CRP exploration of {about['model'].rsplit('.', 1)[-1]}"),
        styles=styles.replace("</", "<\\/"),
        facts=rows,
        bundles=_script_json(code),
        bundles_id=BUNDLES_ID,
        data=payload,
        data_id=DATA_ID,
    )


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="crp_widgets">
<title>{title}</title>
<style>
:root {{ color-scheme: light; }}
body {{ margin: 0; padding: 12px 16px; background: #ffffff; color: #212121;
  font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 13px; }}
.crpx-header h1 {{ margin: 0 0 4px; font-size: 18px; }}
.crpx-header p {{ margin: 0 0 6px; color: #616161; }}
.crpx-facts {{ display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0 0 10px; }}
.crpx-facts dt {{ font-weight: 600; }}
.crpx-facts dd {{ margin: 0; overflow-wrap: anywhere; }}
.crpx-status {{ margin: 6px 0; color: #616161; }}
.crpx-status:empty {{ display: none; }}
.crpx-top {{ display: flex; flex-flow: row wrap; gap: 8px; align-items: flex-start; }}
.crpx-view {{ position: relative; }}
.crpx-tabs {{ margin-top: 10px; border-bottom: 1px solid #bdbdbd; display: flex; flex-wrap: wrap; gap: 2px; }}
.crpx-tab {{ padding: 4px 14px; border: 1px solid #bdbdbd; border-bottom: none; background: #eeeeee;
  font: inherit; cursor: pointer; }}
.crpx-tab[aria-selected="true"] {{ background: #ffffff; border-top: 2px solid #1976d2; }}
.crpx-panel {{ padding: 8px 0; }}
.crpx-panel[hidden] {{ display: none; }}
.crpx-kernel {{ color: #616161; margin: 6px 0 0; }}
</style>
<style>
{styles}
</style>
</head>
<body>
<header class="crpx-header">
<h1>{title}</h1>
<p>An exploration with Concept Relevance Propagation (Achtibat et al. 2023), saved with everything it shows: it
needs no Python and no network. Click a sample, a layer or a channel; a view says so when this file does not
hold what it would show.</p>
<dl class="crpx-facts">{facts}</dl>
</header>
<div class="crpx-status" id="crpx-status">Loading the views…</div>
<main id="crpx-app"></main>
<noscript>This page shows its views with JavaScript; please allow it.</noscript>
<script type="application/json" id="{bundles_id}">{bundles}</script>
<script type="application/octet-stream" id="{data_id}">{data}</script>
<script type="module">
const bundles = JSON.parse(document.getElementById("{bundles_id}").textContent);
const url = URL.createObjectURL(new Blob([bundles.export], {{ type: "text/javascript" }}));
import(url).then((runtime) => runtime.start(document.getElementById("crpx-app"), bundles, "{data_id}"))
  .catch((error) => {{ document.getElementById("crpx-status").textContent = "This page could not start: " + error; }});
</script>
</body>
</html>
"""


def read_export(path):
    """The data of an exported file, decoded: ``(header, buffers)`` (for tests and tools; see :func:`export`)."""
    text = pathlib.Path(path).read_text(encoding="utf-8")
    start = text.index(f'id="{DATA_ID}">') + len(f'id="{DATA_ID}">')
    raw = gzip.decompress(base64.b64decode(text[start : text.index("</script>", start)]))
    (length,) = struct.unpack("<I", raw[:4])
    header = json.loads(raw[4 : 4 + length])
    body = raw[4 + length :]
    buffers = [body[offset : offset + size] for offset, size in header.pop("buffers")]
    for index in header["shuffled"]:
        buffers[index] = np.frombuffer(buffers[index], np.uint8).reshape(4, -1).T.tobytes()
    return header, buffers
