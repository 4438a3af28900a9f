"""The worker: off-thread computation on two lanes, newest request wins, stale results dropped, cache, errors, analyses
that pause for clicks and can be cancelled; typed traits."""

import threading
import time

import numpy as np
import pytest
import torch

from crp_widgets.widgets.session import ExplorerState
from crp_widgets.widgets.traits import array_from_json, array_to_json
from crp_widgets.widgets.worker import Task, Worker, current_task


def test_jobs_run_off_the_calling_thread_and_results_are_cached():
    worker = Worker()
    seen = []
    caller = threading.get_ident()
    assert not worker.submit("view", "k1", lambda: threading.get_ident(), seen.append)
    assert worker.wait(5)
    assert seen[0] != caller
    # Cached: applied at once, on the calling thread, without computing again.
    assert worker.submit("view", "k1", lambda: pytest.fail("recomputed"), seen.append)
    assert seen == [seen[0], seen[0]]


def test_only_the_newest_request_of_a_view_runs_and_stale_results_are_dropped():
    worker = Worker()
    started, release = threading.Event(), threading.Event()
    computed, shown = [], []

    def slow(value):
        def compute():
            computed.append(value)
            started.set()
            release.wait(5)
            return value

        return compute

    worker.submit("view", 0, slow(0), shown.append)
    assert started.wait(5)  # job 0 is running
    for value in range(1, 6):  # rapid clicks while it runs
        worker.submit("view", value, slow(value), shown.append)
    release.set()
    assert worker.wait(5)
    assert computed == [0, 5]  # 1-4 never ran
    assert shown == [5]  # the result of 0 arrived after newer requests: cached, not shown
    assert worker.cached(0)


def test_an_older_result_never_lands_after_a_newer_cached_one():
    """A result whose application has begun finishes before a newer cached result (applied on another thread) lands."""
    worker = Worker()
    shown = []
    worker.submit("view", "new", lambda: "new", shown.append)
    assert worker.wait(5)
    applying, release = threading.Event(), threading.Event()

    def slow_apply(result):
        applying.set()
        release.wait(5)
        shown.append(result)

    worker.submit("view", "old", lambda: "old", slow_apply)  # computed on the worker, applied slowly there
    assert applying.wait(5)
    newer = threading.Thread(target=worker.submit, args=("view", "new", lambda: "recomputed", shown.append))
    newer.start()  # a cache hit: applied on this thread as soon as the worker's application is done
    time.sleep(0.2)
    release.set()
    newer.join(5)
    assert worker.wait(5)
    assert shown == ["new", "old", "new"]


def test_views_are_independent_and_errors_reach_the_view():
    worker = Worker()
    shown, failed = [], []
    worker.submit("a", None, lambda: 1 / 0, shown.append, failed.append)
    worker.submit("b", None, lambda: "fine", shown.append, failed.append)
    assert worker.wait(5)
    assert shown == ["fine"]
    assert isinstance(failed[0], ZeroDivisionError)
    worker.submit("a", None, lambda: "recovered", shown.append, failed.append)
    assert worker.wait(5)
    assert shown == ["fine", "recovered"]


def test_waiting_jobs_run_by_priority():
    worker = Worker()
    started, release = threading.Event(), threading.Event()
    order = []
    worker.submit("busy", None, lambda: started.set() or release.wait(5), lambda _: None)
    assert started.wait(5)
    worker.submit("graph", None, lambda: order.append("graph"), lambda _: None, priority=2)
    worker.submit("gallery", None, lambda: order.append("gallery"), lambda _: None, priority=1)
    worker.submit("heatmap", None, lambda: order.append("heatmap"), lambda _: None, priority=0)
    release.set()
    assert worker.wait(5)
    assert order == ["heatmap", "gallery", "graph"]


def test_synchronous_worker_for_scripts():
    worker = Worker(synchronous=True)
    shown = []
    assert worker.submit("view", "key", lambda: threading.get_ident(), shown.append)
    assert shown == [threading.get_ident()]


def test_rapid_requests_never_queue_minutes_of_work():
    worker = Worker()
    shown = []
    start = time.perf_counter()
    for value in range(200):
        worker.submit("view", value, lambda v=value: time.sleep(0.01) or v, shown.append)
    assert worker.wait(10)
    assert time.perf_counter() - start < 1.0  # at most a couple of jobs ran, not 200 x 10 ms
    assert shown[-1] == 199


def test_array_trait_serialisation_round_trip():
    region = np.zeros((4, 5), dtype=bool)
    region[1:3, 2:4] = True
    payload = array_to_json(region.astype(np.uint8))
    assert isinstance(payload["data"], memoryview)  # sent as a binary buffer, not base64
    assert payload["shape"] == [4, 5]
    assert payload["dtype"] == "uint8"
    assert np.array_equal(array_from_json(payload), region.astype(np.uint8))
    heat = torch.linspace(-1, 1, 6).reshape(2, 3)
    assert np.allclose(array_from_json(array_to_json(heat.numpy())), heat.numpy())


def test_state_selects_conditions_as_eq_8():
    state = ExplorerState()
    state.select("features.28", [5, 3, 5])
    state.select("features.26", [1])
    assert state.conditions == {"features.28": [3, 5], "features.26": [1]}
    state.select("features.28", [])
    assert state.conditions == {"features.26": [1]}


def test_a_hidden_component_computes_from_the_current_state_when_shown_never_an_old_request():
    from zoo import small_cnn

    from crp_widgets.widgets.component import Component
    from crp_widgets.widgets.session import Session

    class View(Component):
        def refresh(self):
            value = self.value
            self.schedule("view", value, lambda: value, shown.append)

    shown = []
    component = View(Session(small_cnn(), worker=Worker(synchronous=True)))
    component.active = False
    for component.value in range(3):
        component.refresh()
    component.value = 7  # the state moved on after the last request; a view may also skip its request entirely
    assert shown == []
    assert not component.busy
    component.active = True
    assert shown == [7]
    component.active = False
    component.active = True  # nothing changed while hidden: nothing to recompute
    assert shown == [7]


def test_the_explorer_computes_a_hidden_tab_only_when_it_is_shown():
    """Hidden tabs start inactive: building an explorer runs the top row's views, not an 11-pass what-if sweep."""
    import crp_widgets as cw

    class Recording(Worker):
        def __init__(self):
            super().__init__(synchronous=True)
            self.views = []

        def submit(self, view, *args, **kwargs):
            self.views.append(view[1])
            return super().submit(view, *args, **kwargs)

    world = cw.demo.load(length=8)
    worker = Recording()
    explorer = cw.Explorer(world.model, world.dataset, worker=worker)
    assert {"grid", "ranking"} <= set(worker.views)
    assert not {"sweep", "decision", "atlas", "graph"} & set(worker.views)
    explorer.tabs.selected_index = [name for _, name, _, _ in explorer._tabs].index("decision")
    assert "decision" in worker.views
    assert "sweep" not in worker.views


def test_an_analysis_pauses_while_a_core_job_waits_or_runs_and_reports_progress():
    """A click's job runs between two steps of an analysis: it waits for at most one step, never for the rest."""
    worker = Worker()
    log, progress, started = [], [], threading.Event()
    release = threading.Event()

    def analysis():
        task = current_task()
        for step in range(4):
            task.step(step, 4)
            log.append(f"step {step}")
            if step == 1:
                started.set()
                release.wait(5)
        return "analysis done"

    worker.submit("profiles", None, analysis, log.append, lane="analysis", progress=lambda d, t: progress.append(d))
    assert started.wait(5)
    worker.submit("heatmap", None, lambda: "click done", log.append)  # a click while step 1 runs
    release.set()
    assert worker.wait(10)
    assert log.index("click done") < log.index("step 2")  # the analysis paused after its step for the click
    assert log[-1] == "analysis done"
    assert progress == [0, 1, 2, 3]


def test_cancelling_an_analysis_stops_it_at_its_next_step_and_applies_nothing():
    worker = Worker()
    steps, applied, failed, running = [], [], [], threading.Event()

    def analysis():
        task = current_task()
        for step in range(100):
            task.step(step, 100)
            steps.append(step)
            running.set()
            time.sleep(0.01)
        return "done"

    worker.submit("occluder", None, analysis, applied.append, failed.append, lane="analysis")
    assert running.wait(5)
    worker.cancel("occluder")
    assert worker.wait(5)
    assert len(steps) < 100
    assert applied == []
    assert failed == []
    assert isinstance(Task(None, None, None, None), Task)


def test_a_newer_request_replaces_a_running_analysis():
    worker = Worker()
    applied, first_running = [], threading.Event()

    def slow():
        for step in range(200):
            current_task().step(step, 200)
            first_running.set()
            time.sleep(0.01)
        return "old"

    worker.submit("sweep", None, slow, applied.append, lane="analysis")
    assert first_running.wait(5)
    worker.submit("sweep", None, lambda: "new", applied.append, lane="analysis")
    assert worker.wait(5)
    assert applied == ["new"]


def test_unknown_lanes_are_refused():
    with pytest.raises(ValueError, match="unknown lane 'fast'; lanes: core, analysis"):
        Worker().submit("view", None, lambda: 1, print, lane="fast")
