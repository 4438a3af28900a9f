"""The linked explorer: every component on one session and one state, readable on one screen."""

import html
import importlib

import ipywidgets

from ..engine import CRPError
from ..engine.scan import ScanJob
from .channels import ChannelSelector, default_layer
from .heatmaps import ConditionalHeatmaps
from .sample import SampleView
from .session import ExplorerState, Session

# The explorer's tabs: (title, attribute, "module:Class" in crp_widgets.widgets, priority). Each class is a
# Component taking (session, state); a hidden tab computes when shown; lower priorities compute first.
TABS = (
    ("References", "gallery", "gallery:ReferenceGallery", 1),
    ("Concept atlas", "atlas", "atlas:ConceptAtlas", 2),
    ("Attribution graph", "graph", "graph:AttributionGraphView", 2),
    ("What-if", "whatif", "whatif:WhatIfView", 2),
    ("Decision", "decision", "flipping:DecisionView", 2),
    ("Other classes", "inverse", "inverse:InverseSearchView", 2),
    ("Similar concepts", "similarity", "similarity:ConceptSimilarityView", 2),
    ("My concepts", "concepts", "concepts:UserConceptView", 3),
    ("Global importance", "occluder", "occluder:GlobalImportanceView", 3),
    ("Class profiles", "profiles", "profiles:ClassProfilesView", 3),
)


# Tabs that explain images only (superpixels, 2-D concept maps); a 1-D explorer ([C, L]) leaves them out (Sec. 3.5).
IMAGE_ONLY = ("atlas", "concepts")


def _component(path):
    module, name = path.split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


class Explorer(ipywidgets.VBox):
    """Explore a model inline: sample and class, channels, conditional heatmaps, references, atlas, graph.

    Every part is also its own widget (``explorer.sample``, ``.channels``, ``.heatmaps``, ``.gallery``, ``.atlas``,
    ``.graph``); they share one :class:`Session` and one :class:`ExplorerState`, so changing the sample, class,
    layer, channel or region anywhere updates every view that depends on it, and ``explorer.state`` scripts it
    from Python. For 1-D inputs ``[C, L]``, ``.heatmaps`` is a :class:`SignalView` (line plots, a region dragged on
    the time axis) and there is no atlas (Sec. 3.5). Views on hidden tabs compute when shown; heatmaps and
    rankings go before graphs.

    Parameters
    ----------
    model : torch.nn.Module or CRP
        The model to explain.
    dataset : torch.utils.data.Dataset, optional
        Items ``(input, label)``.
    store : Store, ScanJob, str or pathlib.Path, optional
        Reference store (:func:`crp_widgets.scan`); a running background scan fills the gallery as it goes. A store
        made for another model or dataset is refused inside the gallery, and the rest keeps working.
    layer : str, optional
        The layer shown first (default: the last convolution).
    **session_options
        ``classes``, ``datasets``, ``display``, ``transform``, ``composite``, ``layers`` (see :class:`Session`).
    """

    def __init__(self, model, dataset=None, store=None, *, layer=None, **session_options):
        session = Session(model, dataset, **session_options)
        if layer is not None:
            session.crp.validate_layer(layer)
        state = ExplorerState(layer=layer or default_layer(session.crp))
        state.bind(session)  # from now on, values the model or the dataset does not have are refused
        store_error = None
        if store is not None:
            try:
                session.attach_store(store.path if isinstance(store, ScanJob) else store)
            except CRPError as error:
                store_error = error
        self.session, self.state = session, state
        # 1-D inputs: line plots and a time region instead of images (Sec. 3.5). Imported here: bqplot is heavy.
        from .signal import SignalView, is_signal_session, use_signal_display

        signal = is_signal_session(session)
        if signal:
            use_signal_display(session)
        self._tabs = tuple(tab for tab in TABS if not (signal and tab[1] in IMAGE_ONLY))
        self.notice = ipywidgets.HTML("", layout=ipywidgets.Layout(height="22px", overflow="hidden", width="100%"))
        self.notice.add_class("crpw-explorer-notice")
        state.observe(self._show_notice, names=["refused", "custom_note"])
        self.sample = SampleView(session, state, columns=4)
        self.channels = ChannelSelector(session, state)
        self.heatmaps = SignalView(session, state) if signal else ConditionalHeatmaps(session, state)
        for name in IMAGE_ONLY if signal else ():
            setattr(self, name, None)
        for _, name, path, priority in self._tabs:
            view = _component(path)(session, state, active=False)  # inactive from the start: no work for hidden tabs
            view.priority = priority
            setattr(self, name, view)
        if store_error is not None:
            self.gallery.settle("store", store_error)
        self.tabs = ipywidgets.Tab(children=[getattr(self, name) for _, name, _, _ in self._tabs])
        self.tabs.titles = tuple(title for title, *_ in self._tabs)
        self.tabs.add_class("crpw-explorer-tabs")  # whole titles, wrapped when narrow (js/lib/theme.css)
        self.tabs.observe(self._show_tab, names=["selected_index"])
        self._show_tab({"new": self.tabs.selected_index or 0})
        self.channels.observe(self._focus_top_channel, names=["ranking", "ranking_layer"])
        self._focus_top_channel()
        top = ipywidgets.HBox(
            [self.sample, self.channels, self.heatmaps], layout=ipywidgets.Layout(flex_flow="row wrap")
        )
        top.add_class("crpw-explorer-top")  # 8 px between the views (js/lib/theme.css; Layout has no gap)
        super().__init__([self.notice, top, self.tabs])
        self.add_class("crpw-explorer")
        self._show_notice()

    def _show_notice(self, change=None):
        """One line above the views: why a value was refused, else notes on the input and the class names."""
        refused = self.state.refused
        notes = [note for note in (self.session.class_note(), self.state.custom_note) if note]
        if refused:
            text, kind = refused, "error"
        elif notes:
            text, kind = " ".join(notes), "note"
        else:
            self.notice.value = ""
            return
        first = html.escape(text.splitlines()[0])
        self.notice.value = (
            f'<div class="crpw-notice crpw-notice-{kind}" role="{"alert" if kind == "error" else "status"}" '
            f'title="{html.escape(text)}">{first}</div>'
        )

    def _show_tab(self, change):
        for index, (_, name, _, _) in enumerate(self._tabs):
            getattr(self, name).active = index == change["new"]

    def _focus_top_channel(self, change=None):
        """Without a (valid) channel in focus, focus the layer's most relevant one: references and graph need one."""
        ranking = self.channels.ranking
        if ranking is None or not len(ranking) or self.channels.ranking_layer != self.state.layer:
            return
        if self.state.channel is None or not 0 <= self.state.channel < len(ranking):
            self.state.channel = int(ranking[0][0])

    def show(self, image):
        """Explain ``image``: a tensor or an array (``[C, H, W]`` or ``[H, W, C]``, float or ``uint8``) or a PIL image.

        A PIL image goes through the session's ``transform`` when it has one; otherwise it is converted to an RGB
        float tensor in [0, 1] at the size of the dataset's samples. An input the model cannot take is refused with
        one message (raised here, and shown above the views); the explorer keeps the input it had.
        """
        self.sample.show(image)

    def code(self):
        """Every view as code: the Python calls that reproduce what the views show now, ready to copy.

        The text reads ``crp``, ``dataset`` and ``store`` (this explorer's: ``explorer.session.crp``, ...), defines
        the explained input ``x`` and class ``target`` once, then each view's calls; ``explorer.heatmaps.code()``
        and the other views' ``code()`` give one view's (see :mod:`crp_widgets.widgets.code`).
        """
        from .code import explorer_code

        return explorer_code(self)

    def export(self, path, samples=None, layers=None, channels=16, references=8, progress=True):
        """Write this exploration as one self-contained HTML file that opens in a browser without a kernel.

        The file holds, computed now for every chosen sample and layer: the sample strip and each sample's
        heatmap, the channel ranking, the conditional heatmaps of the top ``channels`` channels, their references
        (RelMax and ActMax, crops and masked crops; with a reference store), the concept atlas and the
        attribution graph of the channel in focus, shown by the explorer's own views. It says which model, rules
        and data it was made from, and when. See :func:`crp_widgets.widgets.export.export`.

        Parameters
        ----------
        path : str or pathlib.Path
            The HTML file to write (written whole or not at all).
        samples : Sequence[int], optional
            Dataset indices (default: the sample shown now).
        layers : Sequence[str], optional
            Layers (default: the layer shown now).
        channels : int
            Channels per sample and layer whose conditional heatmaps and references are kept.
        references : int
            References per channel and mode (at most the store's ``k``).
        progress : bool
            Show a progress bar.

        Returns
        -------
        pathlib.Path
            The file written.
        """
        from .export import export

        return export(self, path, samples=samples, layers=layers, channels=channels, references=references,
                      progress=progress)  # fmt: skip

    @property
    def region(self):
        """The region drawn on the concept atlas (boolean ``[H, W]``), or ``None``."""
        return self.state.region
