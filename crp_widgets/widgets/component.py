"""The base of every anywidget component: a session, a shared state, an error box and a busy flag."""

import contextlib
import html
import pathlib

import anywidget
import ipywidgets
import traitlets

from .session import ExplorerState, Session

STATIC = pathlib.Path(__file__).parent.parent / "static"


class Scheduled(traitlets.HasTraits):
    """What every view shares: a session, a shared state, an error message, a busy flag and :meth:`schedule`.

    Parameters
    ----------
    session : Session or torch.nn.Module
        The shared backend (a model builds a session with ``session_options``).
    state : ExplorerState, optional
        The shared state (a new one by default).

    Attributes
    ----------
    error : str
        A message shown inside the widget while non-empty; the widget keeps working.
    busy : bool
        Whether a computation for this widget is waiting or running (the front end shows a spinner).
    active : bool
        Whether the widget computes. An inactive widget (e.g. on a hidden tab of the explorer) keeps only the newest
        request per view and runs it when it becomes active again.
    priority : int
        Order of this widget's jobs among waiting ones (lower first): views the user waits for come first.
    """

    error = traitlets.Unicode("").tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)
    active = traitlets.Bool(True)
    priority = 0

    def __init__(self, session, state=None, session_options=None, **kwargs):
        super().__init__(**kwargs)
        self.session = session if isinstance(session, Session) else Session(session, **(session_options or {}))
        self.state = state if state is not None else ExplorerState()
        self._waiting = set()
        self._errors = {}
        self._deferred = {}
        self.observe(self._on_active, names=["active"])

    def schedule(self, view, key, compute, apply):
        """Compute ``compute()`` off the comm thread and ``apply`` the result, unless a newer request came first.

        ``key`` (everything that determines the result, or ``None``) caches it in the session's worker; errors
        are shown in :attr:`error` until the same view succeeds (see :meth:`settle`). See
        :class:`crp_widgets.widgets.worker.Worker`.
        """
        if not self.active:
            self._deferred[view] = (key, compute, apply)
            return False
        self._waiting.add(view)
        self.busy = True

        def done(result):
            self._finish(view)
            self.settle(view)
            apply(result)

        def fail(error):
            self._finish(view)
            self.settle(view, error)

        return self.session.worker.submit((id(self), view), key, compute, done, fail, self.priority)

    @contextlib.contextmanager
    def hold_sync(self):
        """Hold syncing state (ipywidgets' ``hold_sync``) under the session worker's lock.

        Results are applied on the worker thread while the front end's updates arrive on the kernel's: held state
        collected by one thread must not change while the other sends it.
        """
        with self._sync_lock(), super().hold_sync():
            yield

    def _should_send_property(self, key, value):
        with self._sync_lock():  # adds to the held state while another thread may hold it
            return super()._should_send_property(key, value)

    def _sync_lock(self):
        session = self.__dict__.get("session")  # none yet while the widget is being built
        return session.worker.lock if session is not None else contextlib.nullcontext()

    def sample_source(self, view):
        """``(source, load)`` of the state's sample (:meth:`Session.source`), or ``None`` if it cannot be read.

        Why not (an index out of range, a custom input the session's transform refuses) shows as ``view``'s error;
        the widget keeps working.
        """
        try:
            return self.session.source(self.state)
        except Exception as error:
            self.settle(view, error)
            return None

    def _on_active(self, change):
        if change["new"]:
            deferred, self._deferred = self._deferred, {}
            for view, request in deferred.items():
                self.schedule(view, *request)

    def settle(self, view, error=None):
        """Record the outcome of ``view``: :attr:`error` shows the errors of the views whose last request failed.

        Parameters
        ----------
        view : str
            The view.
        error : Exception, optional
            Why its last request failed; ``None`` when it succeeded.
        """
        if error is None:
            self._errors.pop(view, None)
        else:
            self._errors[view] = str(error) or type(error).__name__
        self.error = "\n".join(self._errors.values())

    def _finish(self, view):
        self._waiting.discard(view)
        self.busy = bool(self._waiting)


class Component(Scheduled, anywidget.AnyWidget):
    """An anywidget view of part of a CRP session, linked to others through an :class:`ExplorerState`.

    Subclasses set ``_esm``/``_css`` (``STATIC / "<name>.js"``), declare their synced traits, observe the state
    traits they depend on and call :meth:`schedule` to compute off the comm thread. See :class:`Scheduled`.
    """


class Panel(Scheduled, ipywidgets.VBox):
    """A view composed of ipywidgets (e.g. bqplot figures), linked like a :class:`Component`.

    Subclasses build their widgets and pass them to :meth:`set_body`; :attr:`error` shows in a red box above them
    and :attr:`busy` in a status line. See :class:`Scheduled`.
    """

    def __init__(self, session, state=None, session_options=None, **kwargs):
        super().__init__(session, state, session_options, **kwargs)
        self._status = ipywidgets.HTML("", layout=ipywidgets.Layout(min_height="1.2em"))
        self._status.add_class("crp-panel-status")
        self._body = ()
        self.observe(self._show_status, names=["error", "busy"])
        self.children = (self._status,)

    def set_body(self, *children):
        """Show ``children`` below the status line."""
        self._body = tuple(children)
        self.children = (self._status, *self._body)

    def _show_status(self, change=None):
        if self.error:
            text = html.escape(self.error).replace("\n", "<br>")
            self._status.value = f'<div style="color: var(--jp-error-color1, #c62828)">{text}</div>'
        elif self.busy:
            self._status.value = '<span style="color: var(--jp-ui-font-color2, #757575)">computing...</span>'
        else:
            self._status.value = ""
