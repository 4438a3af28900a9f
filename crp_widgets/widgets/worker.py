"""Running view computations off the comm thread: the newest request per view wins, results are cached.

A widget never computes on the thread that receives front-end messages. It submits a job for one of its *views*
(e.g. "the channel ranking"); if the result is cached it is applied at once, otherwise the job waits for the worker
thread. Only the newest job of each view runs: rapid clicking replaces the waiting job instead of queueing work, and
a result that arrives after a newer request for the same view is cached but not shown. Waiting jobs run by priority
(lower first, e.g. heatmaps before attribution graphs), then in the order they were asked for.
"""

import collections
import threading
import traceback


class Worker:
    """One background thread serving the views of a set of linked widgets.

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
        self._pending = {}  # view -> (priority, generation, key, compute, apply, fail)
        self._latest = {}  # view -> newest generation
        self._generation = 0
        self._condition = threading.Condition()
        self._running = 0
        self._thread = None
        # Results are applied on the worker thread or, from the cache, on the caller's: applying one (and deciding
        # that it is still the newest) holds this lock, so that an older result never lands after a newer one. The
        # widgets also hold it while they sync state (see ``component.Scheduled``).
        self.lock = threading.RLock()

    def submit(self, view, key, compute, apply, fail=None, priority=0):
        """Compute ``compute()`` for ``view`` and pass the result to ``apply``; errors go to ``fail(exception)``.

        ``key`` identifies the result (everything that determines it); ``None`` disables caching. ``priority``
        orders waiting jobs (lower first). Returns ``True`` when the result was applied immediately (cached or
        synchronous), ``False`` when it waits for the thread.
        """
        with self._condition:
            self._generation += 1
            generation = self._latest[view] = self._generation
            self._pending.pop(view, None)
            hit = key is not None and key in self._cache
            if hit:
                self._cache.move_to_end(key)
                result = self._cache[key]
            elif not self.synchronous:
                self._pending[view] = (priority, generation, key, compute, apply, fail)
                self._ensure_thread()
                self._condition.notify_all()
                return False
        if hit:
            with self.lock:
                apply(result)
        else:
            self._run(view, generation, key, compute, apply, fail)
        return True

    def cached(self, key):
        """Whether a result is cached."""
        with self._condition:
            return key in self._cache

    def wait(self, timeout=60.0):
        """Block until no job is waiting or running; return whether that happened within ``timeout`` seconds."""
        with self._condition:
            return self._condition.wait_for(lambda: not self._pending and not self._running, timeout)

    def _ensure_thread(self):
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="crp-widgets-worker", daemon=True)
            self._thread.start()

    def _loop(self):
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._pending)
                view = min(self._pending, key=lambda v: self._pending[v][:2])
                _, generation, key, compute, apply, fail = self._pending.pop(view)
                self._running += 1
            try:
                self._run(view, generation, key, compute, apply, fail)
            finally:
                with self._condition:
                    self._running -= 1
                    self._condition.notify_all()

    def _run(self, view, generation, key, compute, apply, fail):
        try:
            result = compute()
        except Exception as error:  # shown inside the widget, which keeps working
            with self.lock:
                if self._latest.get(view) == generation:
                    self._report(error, fail)
            return
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
