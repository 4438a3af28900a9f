"""The attribution graph of a concept as an interactive widget (Achtibat et al. 2023, Sec. 2.2.1 and 3.4, Fig. 17).

For the channel in focus, the graph shows how its relevance for the explained class flows into the channels of the
layers below it: one row per layer (the concept's layer on top), one node per channel with a reference thumbnail,
its path-conditional heatmap and its relevance relative to the root (Fig. 17, parentheses), and edges as wide as the
percentage of the upper concept's relevance that flows into the lower one (Eq. 13-16). Every level is disentangled
by its own backward passes, θ = {l: {c0}, l-1: {c1}, ...}. A leaf node expands one layer deeper on demand: its
top-k sub-concepts, from one more backward pass conditioned on the node's path. A drill-down panel follows one path
of channels down the network and lists the top-k channels of the next layer under that path, as in the concept
detection report on VGG16 (features.40 -> 37 -> 34).
"""

import collections
import contextlib
import dataclasses
import functools

import traitlets

from ..engine import CRPError
from ..engine.results import GraphEdge, GraphNode
from ..render.signals import heatmap_picture, input_picture
from .component import STATIC, Component
from .traits import PNG, PNGList

__all__ = ["AttributionGraphView"]

_PIECES = 32  # engine results kept for the next graph jobs (the graph and its expansions)


def _share(value, total):
    """``value`` relative to ``total``, 0 when the total vanishes (as the engine computes shares)."""
    return value / total if abs(total) > 1e-12 else 0.0


def _fields(item, *names):
    """The named attributes of ``item`` as a dict."""
    return {name: getattr(item, name) for name in names}


def _pairs(value, name):
    """``[(layer, channel), ...]`` from a list of ``[layer, channel]`` pairs, or a :class:`CRPError` naming ``name``."""
    try:
        return [(str(layer), int(channel)) for layer, channel in value]
    except (TypeError, ValueError):
        raise CRPError(f"{name} must list [layer, channel] pairs, e.g. [['features.28', 102]]; got {value!r}") from None


@dataclasses.dataclass
class _Shown:
    """The graph as shown: the engine's graph of the root (Sec. 3.4) plus the sub-concepts of expanded nodes.

    Attributes
    ----------
    root : tuple[str, int]
        The concept the graph explains.
    layers : list[str]
        The rows, top to bottom.
    nodes : dict[tuple[str, int], GraphNode]
        By ``(layer, channel)``, in the order they were added.
    edges : list[GraphEdge]
        The engine's edges first, then those of the expansions.
    base_edges : int
        How many edges come from the engine's graph.
    added : set[tuple[str, int]]
        The nodes added by expansions.
    """

    root: tuple
    layers: list
    nodes: dict
    edges: list
    base_edges: int
    added: set = dataclasses.field(default_factory=set)

    @classmethod
    def of(cls, graph):
        """A copy of an :class:`~crp_widgets.engine.results.AttributionGraph` that expansions can extend."""
        nodes = {(node.layer, node.channel): node for node in graph.nodes}
        return cls(tuple(graph.root), list(graph.layers), nodes, list(graph.edges), len(graph.edges))

    def is_leaf(self, key):
        """Whether no edge leaves the node."""
        return all(edge.source != key for edge in self.edges)

    def path(self, key):
        """The node's path from the root, following at each node the incoming edge that carries most relevance."""
        path = [key]
        while path[-1] != self.root:
            incoming = [edge for edge in self.edges if edge.target == path[-1]]
            path.append(max(incoming, key=lambda edge: abs(edge.relevance)).source)
        return path[::-1]

    def below(self, layer):
        """The row under ``layer``'s, or ``None`` for the bottom row."""
        row = self.layers.index(layer) + 1
        return self.layers[row] if row < len(self.layers) else None

    def add(self, parent, step, overall):
        """Add a node's sub-concepts: a drill-down step along its path and every lower channel's root relevance."""
        if step.layer not in self.layers:
            self.layers.append(step.layer)
        level = self.layers.index(step.layer)
        root_relevance = self.nodes[self.root].relevance
        for index, channel in enumerate(step.channels):
            key = (step.layer, channel)
            self.edges.append(GraphEdge(parent, key, float(step.relevance[index]), float(step.share[index])))
            if key not in self.nodes:
                value = float(overall[channel])
                share = _share(value, root_relevance)
                heatmap = None if step.heatmaps is None else step.heatmaps[index]
                self.nodes[key] = GraphNode(step.layer, channel, level, value, share, heatmap)
                self.added.add(key)

    def describe(self, thumbnails):
        """The JSON the front end draws (nodes carry the index of their thumbnail, or ``None``)."""
        nodes = [
            dict(_fields(node, "layer", "channel", "level", "relevance", "share"), added=key in self.added,
                 thumbnail=thumbnails[key])
            for key, node in self.nodes.items()
        ]  # fmt: skip
        edges = [
            dict(_fields(edge, "relevance", "share"), source=list(edge.source), target=list(edge.target),
                 added=index >= self.base_edges)
            for index, edge in enumerate(self.edges)
        ]  # fmt: skip
        return {"root": list(self.root), "layers": list(self.layers), "nodes": nodes, "edges": edges}


@dataclasses.dataclass
class _GraphResult:
    """What a graph job shows, which expansions it could make, and why the graph could not be made (if so)."""

    shown: object = None
    graph: dict = dataclasses.field(default_factory=dict)
    image: object = None
    thumbnails: list = dataclasses.field(default_factory=list)
    heatmaps: list = dataclasses.field(default_factory=list)
    expanded: list = dataclasses.field(default_factory=list)
    failures: list = dataclasses.field(default_factory=list)
    error: object = None


@dataclasses.dataclass
class _DrillResult:
    """What a drill-down job shows: the next layer's top-k under the path (or why the path is not valid)."""

    drill: dict = dataclasses.field(default_factory=dict)
    thumbnails: list = dataclasses.field(default_factory=list)
    heatmaps: list = dataclasses.field(default_factory=list)
    error: object = None


class AttributionGraphView(Component):
    """The attribution graph of the channel in focus, with node expansion and a path drill-down (Sec. 3.4, Fig. 17).

    The graph explains ``(state.layer, state.channel)`` for the current sample and class (``state.target``, or the
    prediction). It follows relevance from that concept c0 down ``len(width)`` layers, keeping the top ``width[i]``
    sub-concepts of each concept at level i, each level disentangled by its own backward passes (θ = {l: {c0}},
    then θ = {l: {c0}, l-1: {c1}}, ...). Every node shows a thumbnail of the channel's top RelMax reference (a crop of
    its receptive field, or of the relevant region where a neuron sees the whole input, when the session has a
    reference store; otherwise the sample itself), its conditional heatmap along its paths, and its relevance relative
    to the root's; every edge the share of the upper concept's relevance that flows into the lower one.

    Clicking a node selects it in the linked views (sets ``state.layer`` and ``state.channel``; the graph keeps its
    root and the drill-down moves to the node's path); its "+" expands a leaf one layer deeper. With the keyboard,
    arrows move between nodes, Enter selects and "+" expands. A change of focus made elsewhere roots the graph at the
    new channel. The structure shows first and the pictures (heatmaps, reference crops) follow, since they cost a
    backward pass to the input each.

    Parameters
    ----------
    session : Session or torch.nn.Module
        The shared backend (a model builds a session with ``session_options``).
    state : ExplorerState, optional
        The shared state.
    **kwargs
        Initial values of the traits below, and ``session_options``.

    Attributes
    ----------
    width : list[int]
        Sub-concepts followed per concept at each level; its length is the number of levels below the root.
    expand_k : int
        Sub-concepts an expansion adds.
    expanded : list[list]
        The ``[layer, channel]`` nodes expanded, in order (reset when the root, sample, class, ``width`` or
        ``expand_k`` changes).
    path : list[list]
        The drill-down path of ``[layer, channel]`` pairs, from the root down (as in Ghosh's concept-detection
        report on VGG16).
    drill_k : int
        Channels of the next layer listed under the path.
    graph : dict
        The graph shown: ``root``, ``layers`` (rows, top to bottom), ``scanned`` (the layers the reference store
        holds, or ``None``), ``lowest`` (the model's explainable layer nearest the input, whose nodes cannot
        expand), ``target`` and ``class`` (explained), ``nodes``
        (``layer``, ``channel``, ``level``, ``relevance``, ``share`` of the root's relevance, ``added`` by an
        expansion, ``thumbnail`` index or ``None``) and ``edges`` (``source``, ``target``, ``relevance``, ``share``
        of the source's relevance, ``added``). Empty without a channel in focus.
    selected : list
        The ``[layer, channel]`` in focus in the linked views (empty when none).
    drill : dict
        The drill-down step shown: ``path``, ``layer`` (the next layer, ``None`` below the lowest one) and
        ``channels`` (``channel``, ``relevance``, ``share`` of the last path element's relevance, ``thumbnail``).
    image : numpy.ndarray
        The explained sample (PNG in the front end).
    thumbnails, heatmaps : tuple[numpy.ndarray, ...]
        Reference crops (indexed by the nodes' ``thumbnail``) and one coloured heatmap per node (A.3.1 colours).
    drill_thumbnails, drill_heatmaps : tuple[numpy.ndarray, ...]
        The same for the drill-down channels.
    labels : dict
        Concept labels per layer (``session.label``, Network Dissection, Bau et al. 2017):
        ``{layer: {"concepts", "iou"}}``;
        a node shows its channel's concept and IoU next to its reference.
    """

    _esm = STATIC / "graph.js"
    _css = STATIC / "graph.css"

    width = traitlets.List(traitlets.Int(min=1), default_value=[3, 2], minlen=1).tag(sync=True)
    expand_k = traitlets.Int(2, min=1).tag(sync=True)
    expanded = traitlets.List().tag(sync=True)
    path = traitlets.List().tag(sync=True)
    drill_k = traitlets.Int(5, min=1).tag(sync=True)
    graph = traitlets.Dict().tag(sync=True)
    selected = traitlets.List().tag(sync=True)
    drill = traitlets.Dict().tag(sync=True)
    image = PNG()
    thumbnails = PNGList()
    heatmaps = PNGList()
    drill_thumbnails = PNGList()
    drill_heatmaps = PNGList()
    labels = traitlets.Dict().tag(sync=True)

    def __init__(self, session, state=None, **kwargs):
        super().__init__(session, state, **kwargs)
        self._root = None
        self._own = None  # a focus this widget set by selecting one of its nodes: the graph keeps its root
        self._quiet = False
        self._shown = None
        self._pieces = collections.OrderedDict()
        self.observe(self._show_graph, names=["expanded"])
        self.observe(self._reshape, names=["width", "expand_k"])
        self.observe(self._show_drill, names=["path", "drill_k"])
        self.state.observe(self._on_focus, names=["layer", "channel"])
        self.state.observe(self._on_input, names=["sample", "custom", "target"])
        self.on_msg(self._on_message)
        self.session.on_labels(self._show_labels)
        self._show_labels()
        self._on_focus()

    def refresh(self):
        """Show the graph and the drill-down for the current state (see :meth:`Component.refresh`)."""
        self._show_graph()
        self._show_drill()

    def clear_view(self, view):
        """A graph or drill-down that failed shows nothing of another concept."""
        with self.hold_sync():
            if view == "graph":
                self._shown = None
                self.graph, self.thumbnails, self.heatmaps = {}, (), ()
            elif view == "drill":
                self.drill, self.drill_thumbnails, self.drill_heatmaps = {}, (), ()

    def _show_labels(self, layer=None):
        self.labels = {name: self.session.channel_labels(name) for name in self.session.labels}

    # ------------------------------------------------------------------------------------------------------ actions

    def select(self, layer, channel):
        """Put a node of the graph in focus in the linked views (``state.layer``, ``state.channel``).

        The graph keeps its root; the drill-down path moves to the node's path.

        Raises
        ------
        CRPError
            If ``(layer, channel)`` is not a node of the graph shown.
        """
        key = self._node(layer, channel)
        self._own = key
        self.path = [list(pair) for pair in self._shown.path(key)]
        with self.state.hold_trait_notifications():
            self.state.layer, self.state.channel = key

    def expand(self, layer, channel):
        """Add the top ``expand_k`` sub-concepts of a leaf node in the next layer down (Eq. 13-16).

        They come from one more backward pass conditioned on the node's path (the chain of its strongest incoming
        edges from the root); their nodes show their relevance relative to the root, their edges the share of the
        node's path-conditional relevance. Failures (no layer below, not a leaf) show in :attr:`error`.

        Raises
        ------
        CRPError
            If ``(layer, channel)`` is not a node of the graph shown.
        """
        key = list(self._node(layer, channel))
        if key not in self.expanded:
            self.expanded = [*self.expanded, key]

    def unlink(self):
        """Stop following the shared state."""
        self.state.unobserve(self._on_focus, names=["layer", "channel"])
        self.state.unobserve(self._on_input, names=["sample", "custom", "target"])
        super().unlink()

    def _node(self, layer, channel):
        key = (str(layer), int(channel))
        if self._shown is None or key not in self._shown.nodes:
            root = "no graph is shown" if self._shown is None else f"the graph of {self._shown.root} has no such node"
            raise CRPError(f"({key[0]!r}, {key[1]}) is not a node of the graph: {root}")
        return key

    def _on_message(self, widget, content, buffers):
        """``{"kind": "select" | "expand", "layer", "channel"}`` from the front end."""
        action = {"select": self.select, "expand": self.expand}.get(content.get("kind"))
        if action is None:  # another message (e.g. the code panel's, see Component)
            return
        try:
            action(content["layer"], content["channel"])
        except CRPError as error:
            self.settle("action", error)
        else:
            self.settle("action")

    # ------------------------------------------------------------------------------------------------ state changes

    def _focus(self):
        if self.state.channel is None or not self.state.layer:
            return None
        return self.state.layer, int(self.state.channel)

    def _on_focus(self, change=None):
        focus = self._focus()
        self.selected = list(focus) if focus is not None else []
        if focus is not None and focus == self._own:
            return
        self._own = None
        self._root = focus
        self._restart()

    def _on_input(self, change=None):
        self._restart()

    def _reshape(self, change=None):
        """Show the graph for new widths or expansion sizes, without the expansions made for the old ones."""
        self.settle("expand")
        with self._silently():
            self.expanded = []
        self._show_graph()

    @contextlib.contextmanager
    def _silently(self):
        """Set traits without starting the jobs their observers start."""
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False

    def _restart(self):
        """Show the root's graph without expansions, and the drill-down from the root."""
        for view in ("action", "expand"):  # their errors were about the graph shown until now
            self.settle(view)
        with self._silently():
            self.expanded = []
            self.path = [list(self._root)] if self._root is not None else []
        self._show_graph()
        self._show_drill()

    def _request(self, view, name):
        """The pairs of trait ``name`` and the input's source, or ``None`` after showing why they are not valid."""
        try:
            return (_pairs(getattr(self, name), name), *self.session.source(self.state))
        except Exception as error:  # a malformed trait or custom input: shown in the widget, which keeps working
            self.settle(view, error)
            return None

    def _store_key(self):
        store = self.session.store
        return None if store is None else (id(store), store.samples)

    # ------------------------------------------------------------------------------------------------------- graph

    def _show_graph(self, change=None):
        request = None if self._quiet else self._request("graph", "expanded")
        if request is None:
            return
        expanded, source, load = request
        target, root, width, k = self.state.target, self._root, tuple(self.width), self.expand_k
        key = ("graph", id(self.session), source, target, root, width, tuple(expanded), k, self._store_key())
        compute = functools.partial(self._graph_job, source, load, target, root, width, expanded, k)
        self._in_two_steps("graph", key, compute, self._apply_graph)

    def _in_two_steps(self, view, key, compute, apply):
        """Schedule ``compute(pictures=False)``, the structure, then ``compute(pictures=True)``, with the pictures.

        The structure costs a few backward passes between layers; the pictures one backward pass to the input per
        heatmap and the reference views, seconds on a large model, so the structure shows first (a skeleton). A
        newer request of the view drops both. Pictures computed before are shown at once.
        """

        def then_pictures(result):
            apply(result)
            self.schedule(view, (*key, True), lambda: compute(True), apply)

        if self.session.worker.cached((*key, True)):
            self.schedule(view, (*key, True), lambda: compute(True), apply)
        else:
            self.schedule(view, (*key, False), lambda: compute(False), then_pictures)

    def _piece(self, key, compute):
        """An engine result shared by graph jobs (the next expansion reuses the graph and the earlier expansions)."""
        if key in self._pieces:
            self._pieces.move_to_end(key)
            return self._pieces[key]
        value = self._pieces[key] = compute()
        while len(self._pieces) > _PIECES:
            self._pieces.popitem(last=False)
        return value

    def _graph_job(self, source, load, target, root, width, expanded, k, pictures):
        if root is None:
            return _GraphResult()
        x, _ = load()
        target = self.session.explained_class(x, target)
        crp = self.session.crp
        try:
            graph = self._piece(
                ("graph", source, target, root, width, pictures),
                lambda: crp.attribution_graph(x, *root, target=target, width=width, heatmaps=pictures),
            )
        except CRPError as error:  # shown instead of the previous graph, which explained another concept
            return _GraphResult(error=error)
        shown = _Shown.of(graph)
        done, failures = [], []
        for node in expanded:
            try:
                self._expand_into(shown, source, x, target, node, k, pictures)
            except CRPError as error:
                failures.append(str(error))
            else:
                done.append(list(node))
        images, index = self._thumbnails(list(shown.nodes), pictures)
        lowest = crp.layers(x)[0].name  # its nodes cannot expand
        store = self.session.store
        scanned = None if store is None else list(store.layers)
        description = {**shown.describe(index), "target": target, "class": self._class_name(target), "lowest": lowest,
                       "scanned": scanned}  # fmt: skip
        shown_x = self.session.display(x)  # a 1-D signal's heatmaps are drawn under it (Sec. 3.5)
        heatmaps = [heatmap_picture(node.heatmap, shown_x) for node in shown.nodes.values()] if pictures else []
        image = input_picture(shown_x)
        return _GraphResult(shown, description, image, images, heatmaps, done, failures)

    def _expand_into(self, shown, source, x, target, node, k, pictures):
        if node not in shown.nodes:
            raise CRPError(f"cannot expand ({node[0]!r}, {node[1]}): the graph of {shown.root} has no such node")
        if not shown.is_leaf(node):
            raise CRPError(f"({node[0]!r}, {node[1]}) is expanded already: its sub-concepts are in the graph")
        path = shown.path(node)
        below = shown.below(node[0])
        step, overall = self._piece(
            ("expand", source, target, tuple(path), below, k, pictures),
            lambda: self._subconcepts(x, target, path, below, k, pictures),
        )
        shown.add(node, step, overall)

    def _subconcepts(self, x, target, path, below, k, pictures):
        """The top-k sub-concepts of the path's last node and every lower channel's root relevance.

        As in the drill-down of Ghosh's concept-detection report on VGG16.
        """
        crp = self.session.crp
        steps = crp.drill_down(x, path, target, k=k, next_layer=below, heatmaps="last" if pictures else False)
        if len(steps) < len(path):
            layer, channel = path[-1]
            raise CRPError(f"layer {layer!r} has no explainable layer below it: ({layer!r}, {channel}) cannot expand")
        step = steps[-1]
        overall = crp.subconcepts(x, *path[0], step.layer, target, k=0).all_relevance
        return step, overall

    def _apply_graph(self, result):
        self._shown = result.shown
        with self.hold_sync():
            self.graph = result.graph
            self.image = result.image
            self.thumbnails = result.thumbnails
            self.heatmaps = result.heatmaps
            with self._silently():
                self.expanded = result.expanded
        self.settle("graph", result.error)
        self.settle("expand", CRPError("\n".join(result.failures)) if result.failures else None)

    def _class_name(self, target):
        try:
            classes = self.session.classes
        except CRPError:  # no names given and no dataset sample to count the outputs on: the number names it
            return str(target)
        return classes[target] if 0 <= target < len(classes) else str(target)

    def _thumbnails(self, keys, pictures=True):
        """Top RelMax reference crops of the channels (Sec. 2.3.5) and each channel's index into them.

        Without a reference store, for layers it does not hold, or without ``pictures``, a channel has no thumbnail
        (``None``): the front end shows the sample instead.
        """
        if pictures:
            self.session.current_store()
        views = self.session.views if pictures else None
        images, index = [], {}
        for layer, channel in keys:
            found = views.views(layer, channel, k=1) if views is not None and layer in views.store.layers else []
            index[layer, channel] = len(images) if found else None
            if found:
                images.append(input_picture(self.session.display(found[0].crop)))
        return images, index

    # ------------------------------------------------------------------------------------------------- drill-down

    def _show_drill(self, change=None):
        request = None if self._quiet else self._request("drill", "path")
        if request is None:
            return
        path, source, load = request
        target, k = self.state.target, self.drill_k
        key = ("drill", id(self.session), source, target, tuple(path), k, self._store_key())
        self._in_two_steps("drill", key, functools.partial(self._drill_job, load, target, path, k), self._apply_drill)

    def _drill_job(self, load, target, path, k, pictures):
        if not path:
            return _DrillResult()
        x, _ = load()
        target = self.session.explained_class(x, target)
        try:
            steps = self.session.crp.drill_down(x, path, target, k=k, heatmaps="last" if pictures else False)
        except CRPError as error:  # shown instead of the channels under another path
            return _DrillResult(error=error)
        if len(steps) < len(path):  # the path reached the lowest explainable layer
            return _DrillResult({"path": [list(p) for p in path], "layer": None, "channels": []})
        step = steps[-1]
        images, index = self._thumbnails([(step.layer, channel) for channel in step.channels], pictures)
        channels = [
            {"channel": channel, "relevance": float(step.relevance[i]), "share": float(step.share[i]),
             "thumbnail": index[step.layer, channel]}
            for i, channel in enumerate(step.channels)
        ]  # fmt: skip
        drill = {"path": [list(p) for p in path], "layer": step.layer, "channels": channels}
        shown_x = self.session.display(x)
        return _DrillResult(drill, images, [heatmap_picture(h, shown_x) for h in step.heatmaps] if pictures else [])

    def _apply_drill(self, result):
        with self.hold_sync():
            self.drill = result.drill
            self.drill_thumbnails = result.thumbnails
            self.drill_heatmaps = result.heatmaps
        self.settle("drill", result.error)
