"""The exported page's data: what the kernel computes for the same view, the code that reproduces it, and the
errors that leave no file behind (the page itself is tested in Chromium: tests/browser/test_export_browser.py)."""

import datetime
import html.parser
import io
import math
import re

import numpy as np
import pytest
from PIL import Image

import crp_widgets as cw
from crp_widgets.engine import CRPError, UnknownLayerError, describe
from crp_widgets.widgets import export as export_module
from crp_widgets.widgets.export import ExportError, read_export
from crp_widgets.widgets.gallery import NO_STORE
from crp_widgets.widgets.worker import Worker

LAYERS = ["features.conv3", "features.conv4"]
SAMPLES = [9, 3]


@pytest.fixture(scope="module")
def demo():
    return cw.demo.load(length=120)


@pytest.fixture(scope="module")
def crp(demo):
    return cw.CRP(demo.model)


@pytest.fixture(scope="module")
def store(crp, demo, tmp_path_factory):
    return cw.scan(crp, demo.dataset, LAYERS, tmp_path_factory.mktemp("store"), k=8, progress=False)


def make_explorer(crp, demo, store=None):
    explorer = cw.Explorer(crp, demo.dataset, store=store, classes=demo.classes, worker=Worker(synchronous=True))
    for name in ("gallery", "atlas", "graph"):
        getattr(explorer, name).active = True
    return explorer


@pytest.fixture(scope="module")
def exported(crp, demo, store, tmp_path_factory):
    """An export of two samples and two layers, six channels and four references each, and the explorer."""
    explorer = make_explorer(crp, demo, store)
    explorer.state.sample = 9
    path = explorer.export(tmp_path_factory.mktemp("export") / "exploration.html", samples=SAMPLES, layers=LAYERS,
                           channels=6, references=4, progress=False)  # fmt: skip
    header, buffers = read_export(path)
    return explorer, path, header, buffers


def resolve(value, buffers):
    """A recorded value with its buffers as bytes (as the page turns them into DataViews)."""
    if isinstance(value, dict):
        if set(value) == {"$b"}:
            return buffers[value["$b"]]
        return {key: resolve(item, buffers) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, buffers) for item in value]
    return value


def held(header, buffers, view, key, trait):
    return resolve(header["values"][header["views"][view]["states"][key][trait]], buffers)


def array(value):
    return np.frombuffer(value["data"], dtype=value["dtype"]).reshape(value["shape"])


def kernel_state(view, names):
    """The traits a view sends to the front end, serialised by the traits themselves (PNG bytes, float32 bytes)."""
    return _bytes(view.get_state(key=names))


def _bytes(value):
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, dict):
        return {key: _bytes(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_bytes(item) for item in value]
    return value


def same(a, b):
    """Equal as shown: numbers to float rounding (the engine's sums follow its cache of passes), PNG pictures to one
    level of a pixel, everything else exactly."""
    if isinstance(a, dict) and isinstance(b, dict) and a.get("dtype") == "float32" and set(a) == set(b):
        x, y = array(a), array(b)
        return x.shape == y.shape and np.allclose(x, y, rtol=1e-4, atol=1e-6 * max(1e-30, float(np.abs(y).max())))
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(same(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, bytes) and isinstance(b, bytes) and a.startswith(b"\x89PNG"):
        x, y = (np.asarray(Image.open(io.BytesIO(v)), dtype=int) for v in (a, b))
        return x.shape == y.shape and int(np.abs(x - y).max()) <= 1
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-9)
    return a == b


def test_the_file_holds_what_the_kernel_shows_for_the_same_view(exported, crp, demo):
    explorer, _, header, buffers = exported
    state = explorer.state
    for sample in SAMPLES:
        x, _ = demo.dataset[sample]
        target = int(crp.predict(x).argmax())
        state.sample = sample
        assert same(
            held(header, buffers, "sample", str(sample), "heatmap"),
            kernel_state(explorer.sample, ["heatmap"])["heatmap"],
        )
        for layer in LAYERS:
            key = f"{sample}|{layer}"
            ranking = crp.channel_relevance(x, layer, target)
            top = [int(c) for c in ranking.order[:6]]
            assert header["top"][key] == top
            grid = array(held(header, buffers, "heatmaps", key, "grid"))
            np.testing.assert_allclose(grid, crp.conditional_heatmaps(x, layer, top, target=target).numpy(), atol=1e-7)
            focus = header["focus"][layer]
            with state.hold_trait_notifications():
                state.layer, state.channel = layer, focus
            for view, names in (("channels", ["ranking", "ranking_for", "magnitude"]),
                                ("atlas", ["segments", "assignment", "segment_relevance", "concepts", "caption"]),
                                ("graph", ["graph", "drill", "heatmaps", "thumbnails"])):  # fmt: skip
                shown = kernel_state(getattr(explorer, view), names)
                for name in names:
                    assert same(held(header, buffers, view, key, name), shown[name]), (view, name, key)
    # References: RelMax and ActMax, crops and masked crops, as the gallery shows them (PNG bytes).
    layer, channel = "features.conv4", header["top"]["3|features.conv4"][2]
    gallery = explorer.gallery
    with state.hold_trait_notifications():
        state.layer, state.channel = layer, channel
    gallery.k = 4
    for mode in ("relevance", "activation"):
        for view in ("crop", "masked"):
            with gallery.hold_trait_notifications():
                gallery.mode, gallery.view = mode, view
            shown = kernel_state(gallery, ["images", "groups"])
            key = f"{layer}|{channel}|{mode}|{view}"
            assert same(held(header, buffers, "gallery", key, "images"), shown["images"])
            assert same(held(header, buffers, "gallery", key, "groups"), shown["groups"])
            assert len(shown["images"]) == 4


def test_the_held_code_gives_the_arrays_the_page_shows(exported, crp, demo, store):
    _, _, header, buffers = exported
    key = "3|features.conv4"
    grid = array(held(header, buffers, "heatmaps", key, "grid"))
    for position, channel in enumerate(header["top"][key][:3]):
        code = header["values"][header["code"][f"heatmaps|{key}|{channel}"]]
        namespace = {"crp": crp, "dataset": demo.dataset, "store": store}
        exec(code, namespace)
        assert namespace["channels"] == [channel]
        # the page shows this channel's heatmap as the grid's row, on the left and in the grid
        np.testing.assert_array_equal(namespace["heatmaps"][0].numpy(), grid[position])
        np.testing.assert_allclose(namespace["conditioned"].numpy(), grid[position], atol=1e-7)
    code = header["values"][header["code"][f"gallery|features.conv4|{header['top'][key][0]}|relevance|0|masked"]]
    namespace = {"crp": crp, "dataset": demo.dataset, "store": store}
    exec(code, namespace)
    assert len(namespace["pictures"]) == 4


class Tags(html.parser.HTMLParser):
    """The page's elements and their attributes (a script's text is data, not markup)."""

    def __init__(self):
        super().__init__()
        self.found = []

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))


def test_the_file_says_what_it_was_made_from_and_makes_no_request(exported, crp):
    _, path, header, _ = exported
    about = header["about"]
    assert about["model"] == "crp_widgets.demo.model.DemoNet"
    assert about["rules"] == describe(crp.composite)
    assert about["data"].startswith("crp_widgets.demo.data.DemoDataset, 120 samples")
    assert (datetime.datetime.now().astimezone() - datetime.datetime.fromisoformat(about["made"])).total_seconds() < 600
    assert (about["samples"], about["layers"], about["channels"], about["references"]) == (SAMPLES, LAYERS, 6, 4)
    page = path.read_text()
    for shown in ("DemoNet", describe(crp.composite), "DemoDataset", about["made"]):
        assert shown in page  # in the header, readable without JavaScript
    assert set(re.findall(r"https?://[^\s\"'<>)\\]+", page)) <= {
        "http://www.w3.org/2000/svg"
    }  # a namespace, no request
    tags = Tags()
    tags.feed(page)
    assert not [tag for tag in tags.found if tag[0] in ("link", "img", "iframe") or {"src", "href"} & set(tag[1])]
    assert [tag for tag, _ in tags.found if tag == "script"] == ["script"] * 3  # the bundles, the data, the starter


def test_defaults_the_current_sample_and_layer(crp, demo, store, tmp_path):
    explorer = make_explorer(crp, demo, store)
    explorer.state.sample = 5
    explorer.state.channel = 7
    path = explorer.export(tmp_path / "one.html", progress=False)
    header, _ = read_export(path)
    assert (header["samples"], header["layers"]) == ([5], [explorer.state.layer])
    assert (header["about"]["channels"], header["about"]["references"]) == (16, 8)
    assert header["initial"]["channel"] == 7
    assert header["focus"][explorer.state.layer] == 7
    assert len(header["top"][f"5|{explorer.state.layer}"]) == 16


def test_without_a_store_the_gallery_says_how_to_get_one(crp, demo, tmp_path):
    explorer = make_explorer(crp, demo)
    header, buffers = read_export(explorer.export(tmp_path / "bare.html", channels=3, progress=False))
    assert held(header, buffers, "gallery", "none", "message") == NO_STORE


def test_a_progress_bar_runs_while_it_exports(crp, demo, store, tmp_path, capsys):
    explorer = make_explorer(crp, demo, store)
    explorer.export(tmp_path / "progress.html", channels=2, references=2)
    assert "exporting" in capsys.readouterr().err


def leftovers(folder):
    return sorted(path.name for path in folder.iterdir())


def test_bad_input_gets_a_clear_error_and_leaves_no_file(crp, demo, store, tmp_path, monkeypatch):
    explorer = make_explorer(crp, demo, store)
    target = tmp_path / "out.html"
    with pytest.raises(UnknownLayerError, match=r"unknown layer 'features\.conv9'.*Valid layers: 'features\.conv1'"):
        explorer.export(target, layers=["features.conv4", "features.conv9"], progress=False)
    with pytest.raises(
        CRPError,
        match=r"channels=17 is more than layer 'features\.conv1' has: it has 16 channels; give channels "
        r"from 1 to 16",
    ):
        explorer.export(target, layers=["features.conv1"], channels=17, progress=False)
    with pytest.raises(CRPError, match="channels must be a positive whole number, got 0"):
        explorer.export(target, channels=0, progress=False)
    with pytest.raises(CRPError, match=r"references=9 is more than the store holds: 8 per channel; give 1 to 8"):
        explorer.export(target, references=9, progress=False)
    with pytest.raises(CRPError, match=r"sample 500 is out of range: the dataset has 120 samples \(0 to 119\)"):
        explorer.export(target, samples=[1, 500], progress=False)
    with pytest.raises(ExportError, match=r"the folder .*missing.* does not exist"):
        explorer.export(tmp_path / "missing" / "out.html", progress=False)
    with pytest.raises(ExportError, match="it is a folder"):
        explorer.export(tmp_path, progress=False)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ExportError, match="is not a folder"):
        explorer.export(tmp_path / "a-file" / "out.html", progress=False)
    assert leftovers(tmp_path) == ["a-file"]

    # A failure while it computes leaves no partial file, and an earlier file as it was.
    target.write_text("an earlier export")

    def broken(*args):
        raise RuntimeError("the kernel was interrupted")

    with monkeypatch.context() as patch:
        patch.setattr(export_module, "_collect", broken)
        with pytest.raises(RuntimeError, match="interrupted"):
            explorer.export(target, progress=False)
    assert leftovers(tmp_path) == ["a-file", "out.html"]
    assert target.read_text() == "an earlier export"


def test_a_folder_it_may_not_write_to_or_a_failed_write_leaves_no_file(crp, demo, tmp_path, monkeypatch):
    explorer = make_explorer(crp, demo)

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as patch:  # the tests run as root, who may write anywhere: the refusal is simulated
        patch.setattr(export_module.tempfile, "mkstemp", refused)
        with pytest.raises(ExportError, match=r"cannot write '.*out\.html': Permission denied"):
            explorer.export(tmp_path / "out.html", channels=2, progress=False)
    write = export_module.pathlib.Path.write_text

    def half_written(self, text, **kwargs):
        write(self, text[: len(text) // 2], **kwargs)
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:  # the disk fills up while the file is written
        patch.setattr(export_module.pathlib.Path, "write_text", half_written)
        with pytest.raises(OSError, match="No space left"):
            explorer.export(tmp_path / "out.html", channels=2, progress=False)
    assert leftovers(tmp_path) == []
    path = explorer.export(tmp_path / "out.html", channels=2, progress=False)
    assert leftovers(tmp_path) == ["out.html"]
    mask = export_module._umask()
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # readable as any new file, not private like a temporary


def test_the_export_leaves_the_explorer_as_it_was(crp, demo, store, tmp_path):
    explorer = make_explorer(crp, demo, store)
    explorer.state.sample = 4
    explorer.state.select("features.conv4", [6])
    before = (explorer.state.sample, explorer.state.layer, dict(explorer.state.conditions), explorer.state.channel)
    grid = explorer.heatmaps.grid.copy()
    explorer.export(tmp_path / "x.html", samples=[4, 8], layers=LAYERS, channels=2, references=2, progress=False)
    after = (explorer.state.sample, explorer.state.layer, dict(explorer.state.conditions), explorer.state.channel)
    assert after == before
    np.testing.assert_array_equal(explorer.heatmaps.grid, grid)
    header, _ = read_export(tmp_path / "x.html")
    assert header["initial"]["selected"] == ([6] if 6 in header["top"]["4|features.conv4"] else [])
