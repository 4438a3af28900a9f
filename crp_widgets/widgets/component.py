"""The base of every anywidget component: a session, a shared state, an error box and a busy flag."""

import contextlib
import html
import pathlib

import anywidget
import ipywidgets
import traitlets

from .session import ExplorerState, Session

STATIC = pathlib.Path(__file__).parent.parent / "static"
ERROR_STYLE = "color: var(--jp-error-color1, #c62828)"
QUIET_STYLE = "color: var(--jp-ui-font-color2, #757575)"


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
    computing = traitlets.Unicode("").tag(sync=True)
    active = traitlets.Bool(True)
    priority = 0

    def __init__(self, session, state=None, session_options=None, **kwargs):
        super().__init__(**kwargs)
        self.session = session if isinstance(session, Session) else Session(session, **(session_options or {}))
        self.state = state if state is not None else ExplorerState()
        self._waiting = set()
        self._errors = {}
        self._stale = False
        self.observe(self._on_active, names=["active"])

    def close(self):
        """Stop following the shared state (:meth:`unlink`), then close the widget; closing it again does nothing."""
        if self.comm is None:  # closed already (ipywidgets closes a widget again when it is collected)
            return
        self.unlink()
        super().close()

    def unlink(self):
        """Stop following the shared state and the session (views that follow them extend it)."""

    def refresh(self):
        """Compute every view of the widget from the current state (called when a hidden widget is shown again).

        Components override it; a hidden widget records only that it is out of date, never an old request.
        """

    def schedule(self, view, key, compute, apply, lane="core", progress=None, when_hidden=False, later=False):
        """Compute ``compute()`` off the comm thread and ``apply`` the result, unless a newer request came first.

        ``key`` (everything that determines the result, or ``None``) caches it in the session's worker; errors
        are shown in :attr:`error` until the same view succeeds (see :meth:`settle`). An inactive widget (a hidden
        tab) computes nothing, unless ``when_hidden`` (a computation the user asked for): it is refreshed from the
        then current state when shown. ``lane`` is ``"core"`` or ``"analysis"`` (long jobs, which report
        ``progress(done, total)``). ``later``: after the widget's other waiting jobs (a detail of a view). See
        :class:`crp_widgets.widgets.worker.Worker`.
        """
        if not self.active and not when_hidden:
            self._stale = True
            self.drop(view)
            return False
        self._waiting.add(view)
        self.busy = True
        self.computing = self.describe_request()

        def done(result):
            self._finish(view)
            self.settle(view)
            apply(result)

        def fail(error):
            self._finish(view)
            self.settle(view, error)

        if lane == "analysis":  # an analysis leaves the engine's cache of forward passes to the clicks
            compute = _uncached(self.session.crp, compute)
        priority = self.priority + (1 if later else 0)
        return self.session.worker.submit((id(self), view), key, compute, done, fail, priority, lane, progress)

    def act(self, action, restore=None):
        """Do what the front end asked (``action()``); if the state refuses a value, say why in :attr:`error`.

        ``restore()`` then shows the state's values again (the state keeps its last valid value).
        """
        try:
            action()
        except Exception as error:
            self.settle("input", error)
            if restore is not None:
                restore()
        else:
            self.settle("input")

    def mirror(self, *names):
        """Keep the traits ``names`` of this widget equal to the state's, both ways.

        A value set here that the state refuses (an unknown layer, a channel out of range) is put back to the
        state's value, and the reason shows in :attr:`error`; the state keeps its last valid value.
        """
        for name in names:
            setattr(self, name, getattr(self.state, name))
        self._mirrored = names
        self.state.observe(self._from_state, names=list(names))
        self.observe(self._to_state, names=list(names))

    def unmirror(self):
        """Stop :meth:`mirror` (when the widget closes)."""
        names = list(getattr(self, "_mirrored", ()))
        if names:
            self.state.unobserve(self._from_state, names=names)
            self.unobserve(self._to_state, names=names)

    def _from_state(self, change):
        if getattr(self, change["name"]) != change["new"]:
            setattr(self, change["name"], change["new"])

    def _to_state(self, change):
        name = change["name"]
        if getattr(self.state, name) != change["new"]:
            self.act(lambda: setattr(self.state, name, change["new"]),
                     lambda: setattr(self, name, getattr(self.state, name)))  # fmt: skip

    def drop(self, view):
        """Forget ``view``'s waiting job and ignore its running one: the state no longer needs their result."""
        self.session.worker.drop((id(self), view))
        self._finish(view)

    def describe_request(self):
        """What the widget computes for, in words (the placeholder while it computes): the input, class and layer."""
        state = self.state
        where = "your image" if state.custom is not None else f"sample #{state.sample}"
        parts = [where]
        if state.target is not None:
            parts.append(f"class {self.session.class_name(state.target)}")
        if state.layer:
            parts.append(state.layer)
        return ", ".join(parts)

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
            self.drop(view)
            self.settle(view, error)
            return None

    def _on_active(self, change):
        if change["new"] and self._stale:
            self._stale = False
            self.refresh()

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
            self.clear_view(view)
        self.error = "\n".join(dict.fromkeys(self._errors.values()))  # one message once, however many views

    def clear_view(self, view):
        """Remove what ``view`` shows, after its computation failed: an error never sits over an older picture."""

    def _finish(self, view):
        self._waiting.discard(view)
        self.busy = bool(self._waiting)
        if not self.busy:
            self.computing = ""


class Component(Scheduled, anywidget.AnyWidget):
    """An anywidget view of part of a CRP session, linked to others through an :class:`ExplorerState`.

    Subclasses set ``_esm``/``_css`` (``STATIC / "<name>.js"``), declare their synced traits, observe the state
    traits they depend on and call :meth:`schedule` to compute off the comm thread. See :class:`Scheduled`.

    Every component has a "code" button (``js/lib/shell.ts``): while its panel is open, :attr:`snippet` holds the
    Python calls that reproduce what the view shows (:meth:`code`), written off the comm thread and again whenever
    the state or the view changes.

    Attributes
    ----------
    snippet : str
        The view's code for the front end (empty until the code panel was opened).
    """

    snippet = traitlets.Unicode("").tag(sync=True)

    _QUIET = frozenset({"snippet", "busy", "computing", "error", "active", "comm", "keys", "log"})

    def __init__(self, *args, **kwargs):
        self._code_open = False
        super().__init__(*args, **kwargs)
        self.on_msg(self._on_code_message)
        self.state.observe(self._code_changed)
        self.observe(self._code_changed)

    def code(self):
        """The Python calls that reproduce what this view shows, from the current state, ready to copy.

        See :mod:`crp_widgets.widgets.code`: the code reads ``crp``, ``dataset`` and ``store`` (the explorer's),
        defines ``x`` and ``target`` and names the view's result (e.g. ``heatmaps`` for the conditional heatmaps).
        """
        from .code import view_code

        return view_code(self)

    def unlink(self):
        """Stop following the state for the code panel."""
        self.state.unobserve(self._code_changed)

    def _on_code_message(self, _, content, buffers):
        """``{"type": "code", "open": bool}``: the code panel opened (write the code) or closed."""
        if content.get("type") != "code":
            return
        self._code_open = bool(content.get("open", True))
        if self._code_open:
            self._write_code()

    def _code_changed(self, change):
        if self._code_open and not change["name"].startswith("_") and change["name"] not in self._QUIET:
            self._write_code()

    def _write_code(self):
        def done(text):
            self.snippet = text

        def fail(error):
            self.snippet = f"# The code could not be written: {error}"

        self.session.worker.submit((id(self), "code"), None, self.code, done, fail, self.priority + 1)


def _uncached(crp, compute):
    """``compute`` run inside ``crp.uncached()`` (its forward passes are not kept; see :meth:`CRP.uncached`)."""

    def run():
        with crp.uncached():
            return compute()

    return run


class PanelStyles(anywidget.AnyWidget):
    """Loads the panels' style sheet (theme colours for bqplot charts, the progress line) wherever a panel shows."""

    _esm = STATIC / "panel.js"
    _css = STATIC / "panel.css"


class Panel(Scheduled, ipywidgets.VBox):
    """A view composed of ipywidgets (e.g. bqplot figures), linked like a :class:`Component`.

    Subclasses build their widgets and pass them to :meth:`set_body`; :attr:`error` shows in a red box above them
    and :attr:`busy` in a status line that says what is being computed. Long analyses go through :meth:`analyse`:
    they run on the worker's analysis lane with a progress bar and a cancel button. A hidden panel (an inactive
    explorer tab) takes its body out of the page, so that its charts are not laid out at zero size. See
    :class:`Scheduled`.
    """

    def __init__(self, session, state=None, session_options=None, **kwargs):
        super().__init__(session, state, session_options, **kwargs)
        self._status = ipywidgets.HTML("", layout=ipywidgets.Layout(min_height="1.2em"))
        self._status.add_class("crp-panel-status")
        self._analyses = {}  # view -> what it computes, in words
        self._cancelled = ""
        self.progress_bar = ipywidgets.FloatProgress(0.0, min=0.0, max=1.0, layout=ipywidgets.Layout(width="240px"))
        self.progress_bar.add_class("crpw-panel-progress")
        self.progress_label = ipywidgets.HTML("")
        self.cancel_button = ipywidgets.Button(description="cancel", icon="stop", tooltip="stop this computation",
                                               layout=ipywidgets.Layout(width="auto"))  # fmt: skip
        self.cancel_button.add_class("crpw-panel-cancel")
        self.cancel_button.on_click(lambda _: self.cancel())
        hidden = ipywidgets.Layout(display="none", align_items="center")
        self._progress_row = ipywidgets.HBox(
            [self.progress_bar, self.progress_label, self.cancel_button], layout=hidden
        )
        self._progress_row.add_class("crpw-panel-progress-row")
        self._body = ()
        self._styles = PanelStyles(layout=ipywidgets.Layout(width="0px", height="0px"))
        self.add_class("crpw-panel")
        self.observe(self._show_status, names=["error", "busy", "computing"])
        self.observe(lambda _: self._attach(), names=["active"])
        self._attach()

    def set_body(self, *children):
        """Show ``children`` below the status line (once the panel is shown)."""
        self._body = tuple(children)
        self._attach()

    def _attach(self):
        self.children = (self._styles, self._status, self._progress_row, *(self._body if self.active else ()))

    def analyse(self, view, key, compute, apply, what, asked=False):
        """Run ``compute`` on the analysis lane with a progress bar and a cancel button, then ``apply`` the result.

        ``compute`` reports progress and lets clicks go first through
        :func:`~crp_widgets.widgets.worker.current_task` (``current_task().step(done, total)`` between steps).
        ``what`` names the computation in the progress line (e.g. "class profiles"). ``asked``: the user asked for
        it (a button), so it runs even while the panel is hidden; otherwise a hidden panel computes when shown.
        """
        if not self.active and not asked:
            return self.schedule(view, key, compute, apply)  # only marks the panel out of date
        self._cancelled = ""
        self._analyses[view] = what
        self.progress_bar.value = 0.0
        self.progress_label.value = f"{html.escape(what)}: starting"
        self._progress_row.layout.display = "flex"

        def progress(done, total):
            if view in self._analyses and total:
                self.progress_bar.value = min(1.0, done / total)
                self.progress_label.value = f"{html.escape(what)}: {done} of {total}"

        return self.schedule(view, key, compute, apply, lane="analysis", progress=progress, when_hidden=asked)

    def cancel(self):
        """Stop the running analyses of this panel (the views keep what they showed before)."""
        names = [self._analyses[view] for view in list(self._analyses)]
        for view in list(self._analyses):
            self.session.worker.cancel((id(self), view))
            self._finish(view)
        self._cancelled = f"cancelled: {', '.join(names)}" if names else ""
        self._show_status()

    def _finish(self, view):
        self._analyses.pop(view, None)
        if not self._analyses:
            self._progress_row.layout.display = "none"
        super()._finish(view)

    def _show_status(self, change=None):
        if self.error:
            text = html.escape(self.error).replace("\n", "<br>")
            self._status.value = f'<div class="crpw-panel-error" role="alert" style="{ERROR_STYLE}">{text}</div>'
        elif self.busy and self.computing and not self._analyses:
            what = html.escape(self.computing)
            self._status.value = (
                f'<span class="crpw-panel-busy" style="{QUIET_STYLE}">computing for {what}\u2026</span>'
            )
        elif self._cancelled:
            self._status.value = (
                f'<span class="crpw-panel-busy" style="{QUIET_STYLE}">{html.escape(self._cancelled)}</span>'
            )
        else:
            self._status.value = ""
