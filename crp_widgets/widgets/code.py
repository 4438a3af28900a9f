"""Every view as code: the Python calls that reproduce what a view shows, from the explorer's current state.

Each view's "code" button shows this text, ready to copy; in Python, ``view.code()`` gives one view's and
``explorer.code()`` all of them. A snippet needs the names ``crp`` (the explorer's :class:`~crp_widgets.CRP`),
``dataset`` and, for references, ``store`` (the data and the reference store the explorer was made with). It defines
``x`` (the explained input) and ``target`` (the explained class), then the view's result:

======================  =====================================================================
view                    result
======================  =====================================================================
SampleView              ``heatmap``: ``[H, W]``, the class-conditional heatmap
ChannelSelector         ``ranking``: the channels ranked (a ``ChannelRelevance``)
ConditionalHeatmaps     ``conditioned``: ``[H, W]``, and ``heatmaps``: ``[k, H, W]``, one per channel
ReferenceGallery        ``references``: a list of ``ReferenceView``, and ``pictures``: the tiles
ConceptAtlas            ``atlas``: an ``Atlas``
AttributionGraphView    ``graph``: an ``AttributionGraph``, and ``steps``: the drill-down
======================  =====================================================================

The explained class is written as a number (the prediction is computed once, to write it), so that the code gives
the arrays the view shows even where the model's prediction is not what one expects.
"""

import dataclasses
import json

__all__ = ["CodeContext", "explorer_code", "view_code"]

READS = "# crp: the explorer's CRP (cw.CRP(model)); dataset: its data"
FROM_EXPLORER = "crp, dataset, store = explorer.session.crp, explorer.session.dataset, explorer.session.store"


def py(value):
    """``value`` as Python source: strings in double quotes, lists, tuples, dicts, numbers, ``None``, booleans."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py(k)}: {py(v)}" for k, v in value.items()) + "}"
    if isinstance(value, tuple):
        return "(" + ", ".join(py(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(py(v) for v in value) + "]"
    return repr(value)


def _ordered(conditions, layers):
    """Conditions as a plain dict in forward order (lists of ints), dropping empty layers."""
    order = sorted(conditions, key=lambda name: layers.index(name) if name in layers else len(layers))
    return {name: [int(c) for c in conditions[name]] for name in order if list(conditions[name])}


class CodeContext:
    """What the snippets of one state share: the input, the explained class and the layer's ranking.

    Parameters
    ----------
    session : Session
        The explorer's session.
    state : ExplorerState
        The state the code reproduces (read once, here).
    """

    def __init__(self, session, state):
        self.session, self.crp = session, session.crp
        self.sample, self.custom = int(state.sample), state.custom is not None
        self.target, self.layer, self.channel = state.target, state.layer, state.channel
        self.conditions = _ordered(dict(state.conditions), self.crp.layer_names)
        self.localization = bool(state.localization)
        self.region = state.region is not None
        self._source = session.source(state)
        self._loaded = None
        self._rankings = {}

    def load(self):
        """``(x, label)`` of the explained input."""
        if self._loaded is None:
            self._loaded = self._source[1]()
        return self._loaded

    @property
    def explained(self):
        """The explained class: the state's, or the model's prediction."""
        return self.session.explained_class(self.load()[0], self.target)

    def ranking(self, layer, conditions):
        """``crp.channel_relevance`` for the explained class (cached per layer and conditions)."""
        key = (layer, json.dumps(conditions, sort_keys=True))
        if key not in self._rankings:
            self._rankings[key] = self.crp.channel_relevance(self.load()[0], layer, self.explained, conditions or None)
        return self._rankings[key]

    def others(self, layer):
        """The conditions on layers other than ``layer``."""
        return {name: channels for name, channels in self.conditions.items() if name != layer}

    def input_lines(self):
        """The lines defining ``x`` and ``target``."""
        x, label = self.load()
        if self.custom:
            shape = list(x.shape)
            lines = [f"x = explorer.state.custom  # your image, as the explorer converted it ({shape})"]
        else:
            item = self.session.dataset[self.sample]
            about = "" if label is None else f", label: {self.session.class_name(label)}"
            if isinstance(item, (tuple, list)):
                lines = [f"x, label = dataset[{self.sample}]  # sample #{self.sample}{about}"]
            else:
                lines = [f"x = dataset[{self.sample}]  # sample #{self.sample}"]
        name = self.session.class_name(self.explained)
        why = "the model's prediction" if self.target is None else "the class chosen in Explain"
        lines.append(f"target = {self.explained}  # {name}, {why}")
        return lines


@dataclasses.dataclass
class _Code:
    """A view's own lines, and whether they use ``x``/``target`` and the store."""

    body: list
    uses_input: bool = True
    uses_store: bool = False


def _join(context, codes):
    """The preamble (names, input) once, then every body, blank lines between."""
    store = any(code.uses_store for code in codes)
    lines = [READS + (", store: its reference store" if store else ""), f"# (from an explorer: {FROM_EXPLORER})"]
    if any(code.uses_input for code in codes):
        lines += context.input_lines()
    parts = ["\n".join(lines)] + ["\n".join(code.body) for code in codes]
    return "\n\n".join(part for part in parts if part) + "\n"


def _conditions_argument(conditions):
    return f", conditions={py(conditions)}" if conditions else ""


# ----------------------------------------------------------------------------------------------------- the views


def sample_code(context, strip=None):
    """The sample view: the strip's predictions and the explained class's heatmap (Sec. 2.2, ``R(x | y)``).

    ``strip`` lists the dataset indices of the thumbnails shown (``None``: no strip line).
    """
    body = []
    if strip and not context.custom:
        indices = list(strip)
        contiguous = indices == list(range(indices[0], indices[0] + len(indices)))
        over = f"range({indices[0]}, {indices[-1] + 1})" if contiguous else py(indices)
        body.append(f"predictions = [int(crp.predict(dataset[i][0]).argmax()) for i in {over}]  # the strip")
    body.append("heatmap = crp.attribute(x, target=target).heatmap  # where the evidence for the class lies")
    return _Code(body)


def channels_code(context, top_k=10):
    """The channel selector: the layer's channels ranked by relevance (Eq. 10), under the other layers' conditions.

    ``top_k``: the channels listed (``None``: all of them).
    """
    layer = context.layer
    others = context.others(layer)
    shown = "ranking.top(len(ranking.order))" if top_k is None else f"ranking.top({int(top_k)})"
    return _Code([
        f"ranking = crp.channel_relevance(x, {py(layer)}, target=target{_conditions_argument(others)})",
        f"{shown}  # [(channel, relevance, share of the layer's summed |R|), ...], most relevant first",
    ])  # fmt: skip


def heatmaps_code(context, top_k=6):
    """The conditional heatmaps: the conditions' heatmap and one per selected (or top) channel (Eq. 8-9)."""
    layer = context.layer
    others = context.others(layer)
    selected = [int(c) for c in context.conditions.get(layer, [])]
    ranking = context.ranking(layer, others)
    rank = {int(c): i for i, c in enumerate(ranking.order)}
    body = []
    start = "None" if context.localization else "target"
    if context.localization:
        body.append("# class-free localisation: the heatmaps start from the channels' activations (Sec. 2.3.5)")
    whole = f"crp.attribute(x, target={start}{_conditions_argument(context.conditions)}).heatmap"
    body.append(f"conditioned = {whole}  # the heatmap through the conditions")
    if selected:
        channels = sorted(selected, key=lambda c: rank.get(c, len(rank)))
        why = f"the selected channels of {layer}, most relevant first"
    else:
        channels = [int(c) for c in ranking.order[:top_k]]
        why = f"the {len(channels)} most relevant channels (ranking.order[:{top_k}])"
    applied = others
    if context.localization:
        order = {info.name: info.order for info in context.crp.layers(context.load()[0])}
        applied = {name: c for name, c in others.items() if order[name] <= order[layer]}
    body.append(f"channels = {py(channels)}  # {why}")
    call = f"crp.conditional_heatmaps(x, {py(layer)}, channels, target={start}{_conditions_argument(applied)})"
    body.append(f"heatmaps = {call}  # one per channel")
    return _Code(body)


PICTURES = {
    "sample": ("reference.sample", "the whole samples"),
    "crop": ("reference.crop", "receptive-field crops"),
    "heatmap": ("reference.crop_heatmap", "the heatmaps the tiles draw over reference.crop"),
    "masked": ("reference.masked", "crops masked where the relevance is low"),
}


def gallery_code(context, mode="relevance", compare=False, maximization="sum", k=8, view="crop", init="relevance",
                 cls=None):  # fmt: skip
    """The reference gallery: the RelMax/ActMax references of the channel in focus (Sec. 2.3.3-2.3.5)."""
    session = context.session
    if session.store is None:
        return _Code([
            "# No reference store yet: scan the dataset first, e.g.",
            f"# store = cw.scan(crp, dataset, [{py(context.layer)}], \"references\", k=8)",
        ], uses_input=False)  # fmt: skip
    if not context.layer or context.channel is None:
        return _Code(["# Choose a layer and a channel to see its references."], uses_input=False)
    datasets = '{"dataset": dataset}' if set(session.datasets) == {"dataset"} else "datasets  # those of the store"
    body = [
        "from crp_widgets.engine.references import ReferenceViews",
        "",
        f"views = ReferenceViews(crp, store, {datasets})",
    ]
    extra = "" if init == "relevance" else f", init={py(init)}"
    calls = []
    for shown in ("relevance", "activation") if compare else (mode,):
        conditional = f", cls={cls}" if cls is not None and shown == "relevance" else ""
        calls.append(f"views.views({py(context.layer)}, {int(context.channel)}, mode={py(shown)}, "
                     f"target={py(maximization)}, k={int(k)}{conditional}{extra})")  # fmt: skip
    names = "RelMax, then ActMax" if compare else {"relevance": "RelMax", "activation": "ActMax"}[mode]
    body.append(f"references = {' + '.join(calls)}  # {names}")
    attribute, words = PICTURES[view]
    body.append(f"pictures = [{attribute} for reference in references]  # {words}")
    return _Code(body, uses_input=False, uses_store=True)


def _display_line(session):
    from .session import _default_display

    if session.display is _default_display:
        return "image = x.clamp(0, 1)  # the image as the explorer shows it"
    return "image = display(x)  # the display function given to the explorer"


def atlas_code(context, mode="superpixels", n_concepts=5, n_segments=50, compactness=10.0, sigma=1.0,
               threshold=0.1, region_k=3):  # fmt: skip
    """The concept atlas: each superpixel's most relevant concept among the layer's top ones (Sec. 3.3)."""
    layer = context.layer
    others = context.others(layer)
    start = "None" if context.localization else "target"
    names = ["concept_atlas"] + (["region_concepts"] if context.region else [])
    names += ["superpixels"] if mode == "superpixels" else []
    body = [f"from crp_widgets.engine.atlas import {', '.join(names)}", ""]
    if mode == "superpixels":
        body.append(_display_line(context.session))
        body.append(f"segments = superpixels(image, n_segments={int(n_segments)}, compactness={float(compactness)}, "
                    f"sigma={float(sigma)})")  # fmt: skip
        segments = "segments"
    else:
        segments = "None"  # the single-pixel atlas (A.4)
    body.append(f"atlas = concept_atlas(crp, x, {py(layer)}, n={int(n_concepts)}, target={start}"
                f"{_conditions_argument(others)}, segments={segments}, threshold={float(threshold)})")  # fmt: skip
    body.append("# atlas.channels: the legend; atlas.first, atlas.second: each region's most and second most relevant")
    if context.region:
        body.append("region = explorer.state.region  # the region drawn on the atlas (bool [H, W])")
        body.append(f"found = region_concepts(crp, x, {py(layer)}, region, k={int(region_k)}, target={start}"
                    f"{_conditions_argument(others)})")  # fmt: skip
    return _Code(body)


def graph_code(context, root=None, width=(3, 2), path=(), drill_k=5, expanded=(), expand_k=2):
    """The attribution graph of the channel in focus and the drill-down along its path (Sec. 3.4)."""
    if root is None:
        return _Code(["# Choose a channel to see its attribution graph."], uses_input=False)
    layer, channel = root
    body = [
        f"graph = crp.attribution_graph(x, {py(layer)}, {int(channel)}, target=target, width={py(tuple(width))})",
        "# graph.nodes: the channels and their relevance; graph.edges: the share of the upper channel's relevance",
    ]
    path = [[str(a), int(b)] for a, b in path] or [[layer, int(channel)]]
    body.append(f"steps = crp.drill_down(x, {py(path)}, target=target, k={int(drill_k)})  # the drill-down panel")
    for node in expanded:
        body.append(f"# expanded with \"+\": {py([str(node[0]), int(node[1])])} (crp.drill_down along its path, "
                    f"k={int(expand_k)})")  # fmt: skip
    return _Code(body)


# ------------------------------------------------------------------------------------------- views and explorers


def _view_parts(view, context):
    """The snippet parts of an explorer view, from its own options."""
    name = type(view).__name__
    if name == "SampleView":
        start = view.page * view.page_size
        return sample_code(context, range(start, min(view.count, start + view.page_size)))
    if name == "ChannelSelector":
        return channels_code(context, None if view.show_all else view.top_k)
    if name == "ConditionalHeatmaps":
        return heatmaps_code(context, view.top_k)
    if name == "ReferenceGallery":
        return gallery_code(context, view.mode, view.compare, view.maximization, view.k, view.view, view.init,
                            view.cls)  # fmt: skip
    if name == "ConceptAtlas":
        return atlas_code(context, view.mode, view.n_concepts, view.n_segments, view.compactness, view.sigma,
                          view.threshold, view.region_k)  # fmt: skip
    if name == "AttributionGraphView":
        root = getattr(view, "_root", None)
        return graph_code(context, root, view.width, view.path, view.drill_k, view.expanded, view.expand_k)
    return _Code([f"# The {name} has no code view yet."], uses_input=False)


def view_code(view):
    """The Python calls that reproduce what ``view`` shows, from the current state (see the module docstring)."""
    context = CodeContext(view.session, view.state)
    return _join(context, [_view_parts(view, context)])


EXPLORER_VIEWS = (
    ("sample", "The sample and its heatmap"),
    ("channels", "The channels, ranked"),
    ("heatmaps", "The conditional heatmaps"),
    ("gallery", "The references of the channel in focus"),
    ("atlas", "The concept atlas"),
    ("graph", "The attribution graph"),
)


def explorer_code(explorer):
    """Every view of ``explorer`` as code: the shared lines once, then each view under a heading."""
    context = CodeContext(explorer.session, explorer.state)
    codes = []
    for name, title in EXPLORER_VIEWS:
        view = getattr(explorer, name, None)
        if view is None or type(view).__name__ == "SignalView":
            continue
        code = _view_parts(view, context)
        codes.append(dataclasses.replace(code, body=[f"# {title}", *code.body]))
    return _join(context, codes)
