"""What the engine knows of a model's state (``engine/state.py``): the one private torch attribute it reads, a
tensor's in-place version counter, and passes kept apart from tracing in other threads."""

import threading

import torch
from zoo import small_cnn

from crp_widgets.engine.interventions import Edit
from crp_widgets.engine.state import ModelState, version


def test_torch_raises_the_version_counter_on_every_in_place_change():
    """Fails loudly the day a torch release renames or stops raising ``Tensor._version``."""
    weight = torch.nn.Parameter(torch.ones(3))
    start = version(weight)
    with torch.no_grad():
        weight.mul_(2)
    assert version(weight) > start
    start = version(weight)
    torch.optim.SGD([weight], lr=0.1).zero_grad()
    weight.grad = torch.ones(3)
    torch.optim.SGD([weight], lr=0.1).step()
    assert version(weight) > start


def test_the_model_state_sees_every_kind_of_change():
    model = small_cnn()
    state = ModelState(model)
    assert ModelState(model) == state
    with torch.no_grad():
        model[0].weight.add_(1)  # in place
    assert ModelState(model) != state
    state = ModelState(model)
    model[0].weight.data = model[0].weight.data.clone()  # new data under the same Parameter
    assert ModelState(model) != state
    state = ModelState(model)
    model[0].weight = torch.nn.Parameter(model[0].weight.detach().clone())  # a new Parameter
    assert ModelState(model) != state
    state = ModelState(model)
    model.load_state_dict(small_cnn(seed=1).state_dict())  # copied in place
    assert ModelState(model) != state
    state = ModelState(model)
    model[5] = torch.nn.Tanh()  # a module replaced
    assert not ModelState(model).same_modules(state)


class _Pause(Edit):
    """An edit that holds its pass inside the model until released (what a slow layer in another thread does)."""

    def __init__(self):
        self.inside, self.release = threading.Event(), threading.Event()

    def __call__(self, activation, layout):
        self.inside.set()
        self.release.wait(10)
        self.inside.clear()
        return activation

    def key(self):
        return ("pause",)


class _Watched(torch.nn.Module):
    """A block of a model being traced that notes whether another thread's pass was inside its model meanwhile."""

    def __init__(self, pause, seen):
        super().__init__()
        self.conv, self.pause, self.seen = torch.nn.Conv2d(3, 3, 3, padding=1), pause, seen

    def forward(self, x):
        if isinstance(x, torch.fx.Proxy):
            self.seen.append(self.pause.inside.is_set())
        return torch.relu(self.conv(x))


def _thread(function, errors):
    """A thread running ``function``; what it raises goes to ``errors`` (for the test's assertion)."""

    def run():
        try:
            function()
        except Exception as error:
            errors.append(error)

    return threading.Thread(target=run)


def test_tracing_waits_for_other_threads_passes():
    """torch.fx patches ``torch.nn.Module.__call__`` for all threads while it traces: a pass running meanwhile in
    another thread would go through the tracer (``NameError: module is not installed as a submodule``), and two
    overlapping traces leave the patch in place for good. The engine traces only while no pass runs."""
    from crp_widgets import CRP

    original = torch.nn.Module.__call__
    pause, seen, errors = _Pause(), [], []
    running = CRP(small_cnn())
    running.evaluate(torch.rand(1, 3, 16, 16))  # traced before the race
    traced = CRP(torch.nn.Sequential(_Watched(pause, seen), torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4)))

    first = _thread(lambda: running.evaluate(torch.rand(1, 3, 16, 16), edits={"4": pause}), errors)
    first.start()
    assert pause.inside.wait(10)
    second = _thread(lambda: traced.attribute(torch.rand(3, 16, 16), target=0), errors)
    second.start()
    second.join(1.0)  # the trace waits for the first pass
    pause.release.set()
    first.join(10)
    second.join(10)
    assert errors == []
    assert seen == [False]
    assert torch.nn.Module.__call__ is original


def test_passes_and_traces_in_many_threads_agree_with_one_thread():
    """Explorer workers, scans and the notebook explain and trace at once: no deadlock, no patch left, same results."""
    from crp_widgets import CRP

    original = torch.nn.Module.__call__
    crp = CRP(small_cnn())
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    expected = crp.attribute(x, target=3, conditions={"4": [1]}).input_relevance
    results, errors = [], []

    def explain():
        for _ in range(6):
            crp.clear_cache()
            results.append(crp.attribute(x, target=3, conditions={"4": [1]}).input_relevance)

    def trace():
        for seed in range(1, 4):
            CRP(small_cnn(seed)).attribute(x, target=1)

    threads = [_thread(explain, errors) for _ in range(3)] + [_thread(trace, errors) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads), "a thread is still waiting: a deadlock"
    assert errors == []
    assert len(results) == 18
    assert all(torch.allclose(result, expected, rtol=1e-5, atol=1e-7) for result in results)
    assert torch.nn.Module.__call__ is original
