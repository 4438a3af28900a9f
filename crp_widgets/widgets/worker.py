"""Running view computations off the comm thread, on two lanes: the core views and the long analyses.

A widget never computes on the thread that receives front-end messages. It submits a job for one of its *views*
(e.g. "the channel ranking"); if the result is cached it is applied at once, otherwise the job waits for its lane's
thread. Only the newest job of each view runs: rapid clicking replaces the waiting job instead of queueing work, and
a result that arrives after a newer request for the same view is cached but not shown. Waiting jobs run by priority
(lower first, e.g. heatmaps before attribution graphs), then in the order they were asked for.

Two lanes, each with its own thread:

``"core"``
    The views a click updates (sample, ranking, heatmaps, references, atlas, graph): short jobs.
``"analysis"``
    Dataset-wide or iterative analyses (class profiles, occluders, similarity, sweeps): long jobs that run in
    steps. Between two steps a job calls :meth:`Task.step`, which reports its progress, stops it when it was
    cancelled (:class:`CancelledError`) and lets the core lane go first: while a core job waits or runs, and for
    ``GRACE`` seconds after, the analysis pauses (so that the kernel sends the click's result, and takes the next
    click, without an analysis competing for the interpreter). A click therefore waits for at most one step of an
    analysis, never for the whole of it.
"""

import collections
import threading
import time
import traceback

LANES = ("core", "analysis")
GRACE = 0.25  # seconds an analysis stays paused after the last core job: a click's result leaves, the next comes


class CancelledError(Exception):
    """Raised inside an analysis job by :meth:`Task.step` once the job was cancelled or replaced."""


class Task:
    """The handle of a running analysis job: progress, cancellation, and pausing for the core lane.

    An analysis computation gets it from :func:`current_task` and calls :meth:`step` between its steps (never while
    it holds an engine lock).
    """

    def __init__(self, worker, lane, view, generation, progress=None):
        self._worker, self._lane, self._view, self._generation = worker, lane, view, generation
        self._progress = progress
        self.cancelled = False

    def step(self, done=None, total=None):
        """Report ``done`` of ``total`` steps; raise :class:`CancelledError` when cancelled; wait while core jobs run.

        Raises
        ------
        CancelledError
            If the job was cancelled or a newer request of its view replaced it.
        """
        if self._progress is not None and done is not None:
            self._progress(done, total)
        if self._worker is None:  # not run by a worker (a direct call): nothing to pause for or cancel
            return
        self._worker._pause_for_core(self)
        if self.cancelled or not self._worker._is_latest(self._view, self._generation):
            raise CancelledError("cancelled")


_CURRENT = threading.local()


def current_task():
    """The :class:`Task` of the job running on this thread (outside a job, one that only reports nothing)."""
    return getattr(_CURRENT, "task", None) or Task(None, None, None, None)


class _Lane:
    def __init__(self):
        self.pending = {}  # view -> (priority, generation, key, compute, apply, fail, progress)
        self.running = 0
        self.thread = None
        self.tasks = {}  # view -> the running Task


class Worker:
    """Two background threads (the core lane and the analysis lane) serving the views of linked widgets.

    Parameters
    ----------
    cache_size : int
        How many results to keep (by key).
    synchronous : bool
        Run jobs on the calling thread (scripts and tests that want results at once).
    """

    def __init__(self, cache_size=256, synchronous=False):
        self.synchronous = synchronous
        self._cache = collections.OrderedDict()
        self._cache_size = cache_size
        self._lanes = {name: _Lane() for name in LANES}
        self._latest = {}  # view -> newest generation
        self._generation = 0
        self._core_done = 0.0  # when the core lane last became idle (time.monotonic)
        self._condition = threading.Condition()
        # Results are applied on the lanes' threads or, from the cache, on the caller's: applying one (and deciding
        # that it is still the newest) holds this lock, so that an older result never lands after a newer one. The
        # widgets also hold it while they sync state (see ``component.Scheduled``).
        self.lock = threading.RLock()

    def submit(self, view, key, compute, apply, fail=None, priority=0, lane="core", progress=None):
        """Compute ``compute()`` for ``view`` and pass the result to ``apply``; errors go to ``fail(exception)``.

        ``key`` identifies the result (everything that determines it); ``None`` disables caching. ``priority``
        orders waiting jobs of a lane (lower first). ``lane`` is ``"core"`` or ``"analysis"``; an analysis job gets
        a :class:`Task` (:func:`current_task`) whose progress reports go to ``progress(done, total)``. Returns
        ``True`` when the result was applied immediately (cached or synchronous), ``False`` when it waits.
        """
        if lane not in self._lanes:
            raise ValueError(f"unknown lane {lane!r}; lanes: {', '.join(LANES)}")
        with self._condition:
            generation = self._bump(view)
            hit = key is not None and key in self._cache
            if hit:
                self._cache.move_to_end(key)
                result = self._cache[key]
            elif not self.synchronous:
                self._lanes[lane].pending[view] = (priority, generation, key, compute, apply, fail, progress)
                self._ensure_thread(lane)
                self._condition.notify_all()
                return False
        if hit:
            with self.lock:
                apply(result)
        else:
            self._run(lane, view, generation, key, compute, apply, fail, progress)
        return True

    def drop(self, view):
        """Forget ``view``'s waiting job and ignore the result of its running one (a newer state needs none)."""
        with self._condition:
            self._bump(view)
            self._condition.notify_all()

    def cancel(self, view):
        """Cancel ``view``'s analysis: its waiting job is dropped, its running one stops at its next step."""
        self.drop(view)

    def busy(self, lane):
        """Whether a job of ``lane`` waits or runs."""
        with self._condition:
            state = self._lanes[lane]
            return bool(state.pending or state.running)

    def cached(self, key):
        """Whether a result is cached."""
        with self._condition:
            return key in self._cache

    def wait(self, timeout=60.0):
        """Block until no job waits or runs on any lane; return whether that happened within ``timeout`` seconds."""
        with self._condition:
            return self._condition.wait_for(
                lambda: not any(lane.pending or lane.running for lane in self._lanes.values()), timeout
            )

    # ----------------------------------------------------------------------------------------------- internals

    def _bump(self, view):
        """A new generation for ``view``: its waiting job (on any lane) is dropped, its running task cancelled."""
        self._generation += 1
        self._latest[view] = self._generation
        for lane in self._lanes.values():
            lane.pending.pop(view, None)
            task = lane.tasks.get(view)
            if task is not None:
                task.cancelled = True
        return self._generation

    def _is_latest(self, view, generation):
        with self._condition:
            return self._latest.get(view) == generation

    def _pause_for_core(self, task):
        """Wait while a core job waits or runs (an analysis step must not delay a click)."""
        if self.synchronous or task._lane == "core":
            return
        core = self._lanes["core"]
        with self._condition:
            while not task.cancelled:
                if core.pending or core.running:
                    self._condition.wait()
                    continue
                rest = self._core_done + GRACE - time.monotonic()
                if rest <= 0:
                    return
                self._condition.wait(rest)

    def _ensure_thread(self, lane):
        state = self._lanes[lane]
        if state.thread is None or not state.thread.is_alive():
            state.thread = threading.Thread(target=self._loop, args=(lane,), name=f"crp-widgets-{lane}", daemon=True)
            state.thread.start()

    def _loop(self, lane):
        state = self._lanes[lane]
        while True:
            with self._condition:
                self._condition.wait_for(lambda: state.pending)
                view = min(state.pending, key=lambda v: state.pending[v][:2])
                _, generation, key, compute, apply, fail, progress = state.pending.pop(view)
                state.running += 1
            try:
                self._run(lane, view, generation, key, compute, apply, fail, progress)
            finally:
                with self._condition:
                    state.running -= 1
                    if lane == "core" and not state.running and not state.pending:
                        self._core_done = time.monotonic()
                    self._condition.notify_all()

    def _run(self, lane, view, generation, key, compute, apply, fail, progress):
        task = Task(self, lane, view, generation, progress)
        state = self._lanes[lane]
        with self._condition:
            state.tasks[view] = task
        previous, _CURRENT.task = getattr(_CURRENT, "task", None), task
        try:
            result = compute()
        except CancelledError:  # replaced by a newer request, or cancelled: the view says so itself
            return
        except Exception as error:  # shown inside the widget, which keeps working
            with self.lock:
                if self._is_latest(view, generation):
                    self._report(error, fail)
            return
        finally:
            _CURRENT.task = previous
            with self._condition:
                if state.tasks.get(view) is task:
                    del state.tasks[view]
        with self.lock:  # no newer request's result can be applied between the check and this one's
            with self._condition:
                if key is not None:
                    self._cache[key] = result
                    while len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
                current = self._latest.get(view) == generation
            if current:
                try:
                    apply(result)
                except Exception as error:
                    self._report(error, fail)

    @staticmethod
    def _report(error, fail):
        if fail is not None:
            fail(error)
        else:
            traceback.print_exc()
