"""Reference scans (RelMax / ActMax) and the store: brute force, resume, distributed, refusal, extension."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from zoo import random_images, small_cnn, torchvision_model

from crp_widgets.engine import CRP, CRPError
from crp_widgets.engine.scan import scan
from crp_widgets.engine.store import StoreMismatchError, Tables, open_store, statistics

LAYERS = ["4", "6", "10"]
ROOT = pathlib.Path(__file__).resolve().parents[1]


def dataset(n=40, seed=0):
    return random_images(n, seed)


@pytest.fixture(scope="module")
def model():
    return small_cnn(seed=3)


@pytest.fixture(scope="module")
def scanned(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("store")
    data = dataset()
    store = scan(CRP(model), data, LAYERS, path, k=6, class_k=3, batch_size=8, progress=False)
    return store, data


def brute_force(model, data, layers, batch_size=8, label="true", normalize=False):
    """Per-sample maximisation targets, computed independently with ``CRP.attribute``."""
    crp = CRP(model)
    rows = {layer: [] for layer in layers}
    labels = []
    for start in range(0, len(data), batch_size):
        items = [data[i] for i in range(start, min(start + batch_size, len(data)))]
        x, y = torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items])
        if label == "predicted":
            y = crp.predict(x).argmax(1)
        labels.append(y)
        result = crp.attribute(x, target=y, record=layers)
        for layer in layers:
            relevance = result.relevance_maps[layer].flatten(2) if result.relevance_maps[layer].ndim > 2 else None
            if relevance is None:
                relevance = result.relevance_maps[layer].unsqueeze(-1)
                activation = result.activations[layer].unsqueeze(-1)
            else:
                activation = result.activations[layer].flatten(2)
            if normalize:
                relevance = relevance / relevance.abs().sum((1, 2), keepdim=True)
            rows[layer].append((relevance, activation))
    out = {}
    for layer in layers:
        relevance = torch.cat([r for r, _ in rows[layer]])
        activation = torch.cat([a for _, a in rows[layer]])
        out[layer] = {
            ("relevance", "sum"): (relevance.sum(-1), relevance.argmax(-1)),
            ("relevance", "max"): relevance.max(-1),
            ("activation", "sum"): (activation.sum(-1), activation.argmax(-1)),
            ("activation", "max"): activation.max(-1),
        }
    return out, torch.cat(labels)


def expected_top(values, positions, channel, k, members=None):
    """Top-k sample indices of one channel: largest value first, ties by smaller index."""
    candidates = range(values.shape[0]) if members is None else members
    order = sorted(candidates, key=lambda i: (-float(values[i, channel]), i))[:k]
    return [(i, float(values[i, channel]), int(positions[i, channel])) for i in order]


def flat(neuron, shape):
    """Flattened spatial index of a reference's neuron."""
    index = 0
    for i, size in zip(neuron[1:], shape[1:]):
        index = index * size + i
    return index


@pytest.mark.parametrize(
    "mode", [("relevance", "sum"), ("relevance", "max"), ("activation", "sum"), ("activation", "max")]
)
def test_top_k_equals_brute_force(model, scanned, mode):
    store, data = scanned
    truth, _ = brute_force(model, data, LAYERS)
    for layer in LAYERS:
        values, positions = truth[layer][mode]
        shape = store.layers[layer]["shape"]
        for channel in range(values.shape[1]):
            refs = store.references(layer, channel, mode=mode[0], target=mode[1], k=6)
            got = [(r.index, r.value, flat(r.neuron, shape)) for r in refs]
            want = expected_top(values, positions, channel, 6)
            assert [g[0] for g in got] == [w[0] for w in want], (layer, channel)
            assert [g[1] for g in got] == pytest.approx([w[1] for w in want], rel=1e-5, abs=1e-12)
            assert [g[2] for g in got] == [w[2] for w in want]
            assert all(r.neuron[0] == channel for r in refs)


@pytest.mark.parametrize(
    "mode", [("relevance", "sum"), ("relevance", "max"), ("activation", "sum"), ("activation", "max")]
)
def test_a_layer_below_an_in_place_activation_scans_as_brute_force(model, tmp_path, mode):
    """Layer "0" feeds an in-place ReLU, which the scan's streamed pass runs in place (no copy of the layer)."""
    data = dataset(16, seed=2)
    store = scan(CRP(model), data, ["0", "4"], tmp_path, k=4, batch_size=8, progress=False)
    truth, _ = brute_force(model, data, ["0", "4"])
    for layer in ("0", "4"):
        values, positions = truth[layer][mode]
        shape = store.layers[layer]["shape"]
        for channel in range(values.shape[1]):
            refs = store.references(layer, channel, mode=mode[0], target=mode[1], k=4)
            want = expected_top(values, positions, channel, 4)
            assert [r.index for r in refs] == [w[0] for w in want], (layer, channel)
            assert [r.value for r in refs] == pytest.approx([w[1] for w in want], rel=1e-5, abs=1e-12)
            assert [flat(r.neuron, shape) for r in refs] == [w[2] for w in want]


class InputReuse(torch.nn.Module):
    """The second convolution sees the input itself besides the first's output (relevance passes conv1 or not)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.conv1 = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.pool = torch.nn.AdaptiveAvgPool2d(2)
        self.fc = torch.nn.Linear(24, 10)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv2(x + h))), 1))


RESIDUAL = {
    "resnet18": (
        lambda: torchvision_model("resnet18"),
        ["conv1", "layer1.0.conv2", "layer1.0", "layer2.1.conv1", "layer4.1"],
    ),
    "input reuse": (InputReuse, ["conv1", "conv2"]),
}


@pytest.mark.filterwarnings("ignore:the model's forward code adds")
@pytest.mark.parametrize("name", list(RESIDUAL))
@pytest.mark.parametrize("mode", [("relevance", "sum"), ("relevance", "max")])
def test_a_residual_net_with_block_layers_scans_as_brute_force(tmp_path, name, mode):
    """Relevance reaches the lowest layers both through residual blocks and past them, the blocks are layers too."""
    build, layers = RESIDUAL[name]
    model = build().eval()
    extra = [layer for layer in layers if layer.count(".") == 1]
    data = random_images(8, seed=4, classes=[str(i) for i in range(10)])
    store = scan(CRP(model, layers=extra), data, layers, tmp_path, k=3, batch_size=4, progress=False)
    truth, _ = brute_force(model, data, layers, batch_size=4)
    for layer in layers:
        values, positions = truth[layer][mode]
        for channel in range(0, values.shape[1], 7 if values.shape[1] > 8 else 1):
            refs = store.references(layer, channel, mode=mode[0], target=mode[1], k=3)
            want = expected_top(values, positions, channel, 3)
            assert [r.index for r in refs] == [w[0] for w in want], (layer, channel)
            assert [r.value for r in refs] == pytest.approx([w[1] for w in want], rel=1e-4, abs=1e-12)


def test_class_statistics_equal_brute_force(model, scanned):
    store, data = scanned
    truth, labels = brute_force(model, data, LAYERS)
    for layer in LAYERS:
        summed, _ = truth[layer][("relevance", "sum")]
        means = store.class_relevance(layer)
        for cls in range(10):
            members = (labels == cls).nonzero().flatten().tolist()
            if not members:
                assert torch.isnan(means[:, cls]).all()
                continue
            assert torch.allclose(means[:, cls], summed[members].mean(0), rtol=1e-4, atol=1e-12)
            for channel in (0, 5):
                refs = store.references(layer, channel, cls=cls, k=3)
                assert [r.index for r in refs] == [i for i, _, _ in expected_top(summed, summed, channel, 3, members)]
        channel = 5
        ranking = store.top_classes(layer, channel, k=3)
        finite = [(c, float(means[channel, c])) for c in range(10) if torch.isfinite(means[channel, c])]
        assert [c for c, _ in ranking] == [c for c, _ in sorted(finite, key=lambda t: -t[1])][:3]


def test_options_predicted_labels_and_normalisation(model, tmp_path):
    data = dataset(24, seed=5)
    store = scan(
        CRP(model), data, ["6"], tmp_path, k=4, batch_size=8, label="predicted", normalize=True, progress=False
    )
    truth, _ = brute_force(model, data, ["6"], label="predicted", normalize=True)
    values, positions = truth["6"][("relevance", "max")]
    refs = store.references("6", 2, target="max", k=4)
    assert [r.index for r in refs] == [i for i, _, _ in expected_top(values, positions, 2, 4)]
    assert all(abs(r.value) <= 1.0 for r in refs)  # Eq. 35 bounds every normalised relevance by 1
    assert store.manifest["normalize"] is True


def test_reference_dataset_extension(model, scanned, tmp_path):
    """Sec. 3.2: a second dataset scanned into the store competes for the references, which name their source."""
    base, data = scanned
    path = tmp_path / "extended"
    crp = CRP(model)
    scan(crp, data, LAYERS, path, k=6, class_k=3, batch_size=8, progress=False)
    extra = dataset(16, seed=9)
    store = scan(crp, extra, LAYERS, path, k=6, class_k=3, batch_size=8, name="extra", progress=False)
    assert [d["name"] for d in store.datasets] == ["dataset", "extra"]
    both = torch.utils.data.ConcatDataset([data, extra])
    truth, _ = brute_force(model, both, ["6"])
    values, positions = truth["6"][("activation", "max")]
    for channel in range(16):
        refs = store.references("6", channel, mode="activation", target="max", k=6)
        expected = expected_top(values, positions, channel, 6)
        assert [(r.dataset, r.index) for r in refs] == [
            ("dataset", i) if i < len(data) else ("extra", i - len(data)) for i, _, _ in expected
        ]
    assert store.samples == base.samples + len(extra)


def tables_equal(a, b, exact_sums=True):
    assert sorted(a.tables.data) == sorted(b.tables.data)
    for key, tensor in a.tables.data.items():
        if "class_relevance_sum" in key and not exact_sums:
            assert torch.allclose(tensor, b.tables.data[key], rtol=1e-12, atol=1e-300), key
        else:
            assert torch.equal(tensor, b.tables.data[key]), key


class Interrupting(torch.utils.data.Dataset):
    """A dataset whose loading raises KeyboardInterrupt once, at a given index (like Ctrl-C in a notebook)."""

    def __init__(self, data, at):
        self.data, self.at = data, at

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        if index == self.at:
            self.at = None
            raise KeyboardInterrupt
        return self.data[index]


def test_resume_after_an_interruption_gives_the_identical_store(model, scanned, tmp_path):
    store, data = scanned
    interrupting = Interrupting(data, at=21)
    crp = CRP(model)
    with pytest.raises(KeyboardInterrupt):
        scan(
            crp, interrupting, LAYERS, tmp_path, k=6, class_k=3, batch_size=8, checkpoint_every=(1, 1e9), progress=False
        )
    partial = open_store(tmp_path)
    assert not partial.complete
    assert partial.samples == 16  # two whole batches; the interrupted one is not half-counted
    assert len(partial.references("6", 0, k=6)) == 6  # partial results are readable before the scan ends
    resumed = scan(crp, interrupting, LAYERS, tmp_path, k=6, class_k=3, batch_size=8, progress=False)
    assert resumed.complete
    tables_equal(resumed, store)
    assert not list(tmp_path.glob("part-*"))


def test_a_batch_interrupted_while_merged_leaves_the_state_before_it(model, scanned):
    """A batch is staged, then committed as a whole: a failure part way through the commit restores every table."""
    store, _ = scanned
    tables = Tables(store.tables.layers, store.tables.classes, store.tables.k, store.tables.class_k)
    tables.merge(store.tables)
    tables.data = {key: tensor.clone() for key, tensor in tables.data.items()}
    before = {key: tensor.clone() for key, tensor in tables.data.items()}
    layer, channels = "6", store.tables.layers["6"]["channels"]
    labels = torch.tensor([1, 3, 3, 7])
    maps = torch.randn(4, channels, 5, generator=torch.Generator().manual_seed(0))
    tables.add(layer, statistics(maps), statistics(maps.abs()), labels, torch.arange(100, 104))
    tables.count(labels)
    late = f"{layer}|class_relevance_sum"  # staged after the top-k tables (written in place) of the layer
    columns, values = tables._staged[late]
    tables._staged[late] = (columns, values[:1])  # a shape the table cannot take: the commit fails part way
    with pytest.raises(RuntimeError):
        tables.commit()
    assert sorted(tables.data) == sorted(before)
    for key, tensor in before.items():
        assert torch.equal(tables.data[key], tensor), key
    tables.add(layer, statistics(maps), statistics(maps.abs()), labels, torch.arange(100, 104))
    tables.count(labels)
    tables.commit()
    changed = [key for key, tensor in before.items() if not torch.equal(tables.data[key], tensor)]
    assert "class_count" in changed
    assert f"{layer}|class/relevance/sum|values" in changed


SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import torch
    sys.path.insert(0, {tests!r})
    from zoo import small_cnn
    from test_scan import dataset, LAYERS
    from crp_widgets.engine import CRP
    from crp_widgets.engine.scan import scan

    class Slow(torch.utils.data.Dataset):
        def __init__(self, data, delay):
            self.data, self.delay = data, delay
        def __len__(self):
            return len(self.data)
        def __getitem__(self, index):
            time.sleep(self.delay)
            return self.data[index]

    torch.set_num_threads(1)  # under torchrun, scan() starts the gloo process group itself
    data = Slow(dataset(), float(sys.argv[2]))
    scan(CRP(small_cnn(seed=3)), data, LAYERS, sys.argv[1], k=6, class_k=3, batch_size=8,
         checkpoint_every=(1, 1e9), progress=False)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    """
)


def run_script(tmp_path, out, delay=0.0, processes=None, background=False):
    script = tmp_path / "scan_script.py"
    script.write_text(SCRIPT.format(tests=str(ROOT / "tests")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(script), str(out), str(delay)]
    if processes:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                   *command[1:]]  # fmt: skip
    if background:
        return subprocess.Popen(command, env=env, start_new_session=True)
    subprocess.run(command, env=env, check=True, timeout=300)
    return open_store(out)


def checkpointed_batches(path):
    part = path / "part-0.json"
    return json.loads(part.read_text())["batches_done"] if part.exists() else 0


def test_a_killed_scan_resumes_to_the_identical_store(tmp_path):
    reference = run_script(tmp_path, tmp_path / "reference")
    killed = tmp_path / "killed"
    process = run_script(tmp_path, killed, delay=0.05, background=True)
    try:
        deadline = time.monotonic() + 120
        while checkpointed_batches(killed) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, "the scan ended before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert not open_store(killed).complete
    resumed = run_script(tmp_path, killed)
    tables_equal(resumed, reference)


def test_two_process_gloo_scan_gives_the_identical_store(tmp_path):
    single = run_script(tmp_path, tmp_path / "single")
    double = run_script(tmp_path, tmp_path / "double", processes=2)
    assert double.complete
    # Float64 class sums are added in another order across processes: equal to rounding, everything else exactly.
    tables_equal(double, single, exact_sums=False)


def test_a_mismatching_store_is_refused(model, scanned, tmp_path):
    store, data = scanned
    other = small_cnn(seed=4)
    with pytest.raises(StoreMismatchError, match="made for another model"):
        open_store(store.path, model=other)
    with pytest.raises(StoreMismatchError, match=r"holds layers \['10', '4', '6'\], not \['6'\]"):
        open_store(store.path, layers=["6"])
    with pytest.raises(StoreMismatchError, match="dataset 'dataset' differs"):
        open_store(store.path, datasets={"dataset": dataset(40, seed=1)})
    with pytest.raises(StoreMismatchError, match="has no dataset 'imagenet'"):
        open_store(store.path, datasets={"imagenet": data})
    with pytest.raises(StoreMismatchError, match="made for another model"):
        scan(CRP(other), data, LAYERS, store.path, k=6, class_k=3, progress=False)
    with pytest.raises(StoreMismatchError, match="made with k=6, not 4"):
        scan(CRP(model), data, LAYERS, store.path, k=4, class_k=3, progress=False)
    with pytest.raises(StoreMismatchError, match="already holds a different dataset named 'dataset'"):
        scan(CRP(model), dataset(40, seed=2), LAYERS, store.path, k=6, class_k=3, progress=False)
    assert open_store(store.path, model=model, layers=LAYERS, datasets={"dataset": data}).complete


def test_store_input_errors(scanned):
    store, _ = scanned
    with pytest.raises(CRPError, match=r"layer '5' is not in this reference store; it holds '4', '6', '10'"):
        store.references("5", 0)
    with pytest.raises(CRPError, match=r"channel 16 is out of range for layer '6', which has 16 channels"):
        store.references("6", 16)
    with pytest.raises(CRPError, match="mode must be 'relevance'"):
        store.references("6", 0, mode="gradient")
    with pytest.raises(CRPError, match="class-conditional references exist for relevance"):
        store.references("6", 0, mode="activation", cls=1)


class Slow(torch.utils.data.Dataset):
    def __init__(self, data, delay):
        self.data, self.delay = data, delay

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        time.sleep(self.delay)
        return self.data[index]


def test_a_background_scan_shows_partial_results_stops_and_resumes(model, scanned, tmp_path):
    store, data = scanned
    crp = CRP(model)
    options = {"k": 6, "class_k": 3, "batch_size": 8, "checkpoint_every": (1, 1e9)}
    job = scan(crp, Slow(data, 0.02), LAYERS, tmp_path, background=True, **options)
    assert job.running()
    deadline = time.monotonic() + 60
    while job.store.samples < 16 and time.monotonic() < deadline:
        time.sleep(0.05)
    partial = job.store
    assert not partial.complete
    assert 16 <= partial.samples < len(data)
    # The engine keeps answering while the scan runs (recorded forward passes of one model are serialised).
    assert crp.attribute(data[0][0], target=1).heatmap.shape == (16, 16)
    assert job.stop(timeout=60)
    assert job.error is None
    assert not open_store(tmp_path).complete
    resumed = scan(crp, data, LAYERS, tmp_path, background=True, **options).wait(timeout=120)
    assert resumed.complete
    tables_equal(resumed, store)


def test_the_model_reads_as_itself_while_another_thread_records_a_pass():
    """Passes of another thread leave the model as it is: its fingerprint and the cached pass stay the same."""
    import threading

    from crp_widgets.engine.store import model_fingerprint

    model = small_cnn()  # BatchNorm merged by the engine's canonization
    expected = model_fingerprint(model)
    crp, busy = CRP(model), CRP(model)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    first = crp.attribute(x, target=1).heatmap
    stop = threading.Event()

    def passes():
        while not stop.is_set():
            busy.attribute(torch.rand(8, 3, 16, 16), target=2)

    thread = threading.Thread(target=passes)
    thread.start()
    try:
        for _ in range(40):
            assert model_fingerprint(model) == expected
            again = crp.attribute(x, target=1).heatmap
            assert float((again - first).abs().max()) <= 1e-5 * float(first.abs().max())
            assert len(crp.context.passes) == 1  # the cached pass, not another one
    finally:
        stop.set()
        thread.join()
