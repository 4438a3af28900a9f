"""User-defined concepts: a basket of examples, a learned concept vector and its maps (SACV, Wang & Lee 2022).

The basket (``state.basket``, shared with the reference gallery, whose tiles can be added or dragged in) holds
references ``{"dataset", "index"}`` to the concept's example images; random dataset samples are the counter-examples
(TCAV's random concepts). "Learn" fits a linear classifier on the spatial activations of the chosen layer
(:func:`crp_widgets.engine.concepts.learn_concept`); the view then shows ``S_k`` (where the concept is) and
``S_{k->c}`` (where it contributes to class ``c``) over the current sample, and how much the concept contributes to
``c`` over the class's images (TCAV score, mean ``S_{k->c}`` inside and outside the concept).
"""

import numpy as np
import torch
import traitlets

from ..engine import CRPError
from ..engine.concepts import concept_contribution, concept_maps, learn_concept
from .channels import default_layer
from .component import STATIC, Component
from .gallery import class_name, displayed
from .layers import layer_menu
from .traits import PNG, Array, PNGList

__all__ = ["UserConceptView"]


def _finite(value):
    """``value``, or ``None`` for NaN (JSON has no NaN)."""
    return None if value != value else value


def _reference(dataset, index):
    return {"dataset": str(dataset), "index": int(index)}


class UserConceptView(Component):
    """Define a concept by examples and see where it is and what it does for a class (SACV, Wang & Lee 2022, Sec. 2).

    Parameters
    ----------
    session : Session or torch.nn.Module
        The shared backend; its datasets hold the basket's samples and the random counter-examples.
    state : ExplorerState, optional
        The shared state: ``basket`` holds the examples; the maps follow ``sample``/``custom`` and ``target``.
    masks : callable, optional
        ``masks(dataset name, index)`` returns where the concept is in an example (boolean ``[H, W]``) or ``None``
        for the whole image (e.g. ``lambda _, i: demo.masks(i).get("stripes")`` on the demo world).
    n_random : int
        Random counter-examples drawn from the session's dataset (never from the basket).
    summary_size : int
        Images of the explained class in the class summary.
    **kwargs
        Passed to :class:`Component`.

    Attributes
    ----------
    basket : list[dict]
        ``state.basket``: the examples ``{"dataset", "index"}``.
    thumbnails : tuple[numpy.ndarray]
        One picture per basket entry (PNG bytes in the front end).
    layer : str
        The layer the concept is learned on (``state.layer`` at first).
    layer_menu : list[dict]
        The layers to choose from, grouped: ``{"group", "layers"}`` entries (the model's blocks by stage,
        :func:`~crp_widgets.widgets.layers.layer_menu`); a layer that no group lists shows in a group of its own.
    concept_info : dict
        The learned concept: ``layer``, ``accuracy`` (held-out balanced accuracy), ``positives``, ``negatives``,
        ``examples``, ``counter_examples``; empty before learning.
    image : numpy.ndarray
        The current sample as an image (PNG bytes).
    concept_map, contribution_map : numpy.ndarray
        ``S_k`` and ``S_{k->c}`` over the sample, ``[H, W]`` (bwr colours in the browser).
    maps_info : dict
        ``cls``, ``name`` (the class c), ``max_concept`` and ``max_contribution`` (largest absolute values).
    summary : dict
        Over ``summary_size`` images of class c: ``cls``, ``name``, ``images``, ``score`` (TCAV), ``inside`` and
        ``outside`` (mean ``S_{k->c}`` where the concept is detected and elsewhere).
    opacity : float
        Weight of the map colours over the image.
    """

    _esm = STATIC / "concepts.js"
    _css = STATIC / "concepts.css"

    basket = traitlets.List().tag(sync=True)
    thumbnails = PNGList()
    layer = traitlets.Unicode("").tag(sync=True)
    layer_menu = traitlets.List().tag(sync=True)
    n_random = traitlets.Int(20, min=1).tag(sync=True)
    concept_info = traitlets.Dict().tag(sync=True)
    image = PNG()
    concept_map = Array(ndim=2)
    contribution_map = Array(ndim=2)
    maps_info = traitlets.Dict().tag(sync=True)
    summary = traitlets.Dict().tag(sync=True)
    opacity = traitlets.Float(0.6, min=0.0, max=1.0).tag(sync=True)

    def __init__(self, session, state=None, *, masks=None, n_random=20, summary_size=16, **kwargs):
        super().__init__(session, state, **kwargs)
        if not self.state.layer:
            self.state.layer = default_layer(self.session.crp)
        self.layer_menu = layer_menu(self.session.crp)
        self.layer = self.state.layer
        self.n_random = n_random
        self.masks = masks
        self.summary_size = int(summary_size)
        self.concept = None
        self._learned = 0  # counts learned concepts: part of the cache keys of their maps and summaries
        self._link = traitlets.link((self.state, "basket"), (self, "basket"))
        self.observe(lambda _: self._draw_thumbnails(), names=["basket"])
        self.state.observe(lambda _: self._draw(), names=["sample", "custom", "target"])
        self.on_msg(self._on_message)
        self._draw_thumbnails()

    def refresh(self):
        """The basket's pictures and the learned concept's maps for the current state (:meth:`Component.refresh`)."""
        self._draw_thumbnails()
        self._draw()

    # ------------------------------------------------------------------------------------------------ the basket

    def add(self, index, dataset="dataset"):
        """Add sample ``index`` of ``dataset`` (a name in ``session.datasets``) to the basket."""
        if dataset not in self.session.datasets:
            names = ", ".join(map(repr, self.session.datasets)) or "none"
            raise CRPError(f"unknown dataset {dataset!r}; the session's datasets: {names}")
        size = len(self.session.datasets[dataset])
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < size:
            raise CRPError(
                f"sample {index!r} is out of range: dataset {dataset!r} has {size} samples (0 to {size - 1})"
            )
        entry = _reference(dataset, index)
        if entry not in self.state.basket:
            self.state.basket = [*self.state.basket, entry]

    def add_current(self):
        """Add the current sample (``state.sample``) to the basket."""
        if self.state.custom is not None:
            raise CRPError("the current input is a custom image, not a dataset sample; add dataset samples")
        self.add(int(self.state.sample))

    def remove(self, position):
        """Remove the basket's entry at ``position``."""
        basket = list(self.state.basket)
        if not 0 <= position < len(basket):
            raise CRPError(f"the basket has {len(basket)} entries; position {position} does not exist")
        del basket[position]
        self.state.basket = basket

    def _on_message(self, _, content, buffers):
        kind = content.get("type")
        try:
            if kind == "add":
                self.add(int(content["index"]), content.get("dataset", "dataset"))
            elif kind == "add_current":
                self.add_current()
            elif kind == "remove":
                self.remove(int(content["position"]))
            elif kind == "clear":
                self.state.basket = []
            elif kind == "learn":
                self.learn()
            else:
                return
        except (CRPError, KeyError, ValueError, TypeError) as error:
            self.settle("basket", error)
            return
        self.settle("basket")

    def _load(self, entry):
        item = self.session.datasets[entry["dataset"]][entry["index"]]
        return torch.as_tensor(item[0] if isinstance(item, (tuple, list)) else item)

    def _draw_thumbnails(self):
        basket = [dict(entry) for entry in self.state.basket]

        def compute():
            return [displayed(self.session, self._load(entry)) for entry in basket]

        def apply(images):
            self.thumbnails = images

        key = (id(self.session), "thumbnails", tuple((e["dataset"], e["index"]) for e in basket))
        self.schedule("thumbnails", key, compute, apply)

    # ------------------------------------------------------------------------------------------------- learning

    def learn(self):
        """Learn the concept vector from the basket at ``layer`` (runs on the worker; the maps follow)."""
        basket = [dict(entry) for entry in self.state.basket]
        layer, n_random, crp = self.layer, self.n_random, self.session.crp
        if not basket:
            self.settle("learn", CRPError("the concept basket is empty: add example images of the concept first"))
            return
        masks = self.masks

        def compute():
            examples = [self._load(entry) for entry in basket]
            regions = None if masks is None else [masks(e["dataset"], e["index"]) for e in basket]
            exclude = [e["index"] for e in basket if e["dataset"] == "dataset"]
            return learn_concept(crp, layer, examples, masks=regions, dataset=self.session.dataset,
                                 n_random=n_random, exclude=exclude)  # fmt: skip

        def apply(cv):
            self.concept = cv
            self._learned += 1
            self.concept_info = {
                "layer": cv.layer,
                "accuracy": cv.accuracy,
                "positives": cv.positives,
                "negatives": cv.negatives,
                "examples": len(basket),
                "counter_examples": n_random,
            }
            self._draw()

        key = (id(self.session), "learn", layer, n_random, tuple((e["dataset"], e["index"]) for e in basket),
               masks is not None)  # fmt: skip
        self.schedule("learn", key if masks is None else None, compute, apply, lane="analysis", when_hidden=True)

    # ----------------------------------------------------------------------------------------------------- maps

    def _draw(self):
        cv = self.concept
        if cv is None:
            return
        if (sample := self.sample_source("maps")) is None:
            return
        source, load = sample
        target, crp = self.state.target, self.session.crp

        def compute():
            x, _ = load()
            cls = self.session.explained_class(x, target)
            maps = concept_maps(crp, x, cv, target=cls)
            info = {
                "cls": cls,
                "name": class_name(self.session, cls),
                "layer": cv.layer,
                "max_concept": float(maps.concept_layer.abs().max()),
                "max_contribution": float(maps.contribution_layer.abs().max()),
            }
            return displayed(self.session, x), maps.concept, maps.contribution, info

        def apply(result):
            image, concept, contribution, info = result
            with self.hold_sync():
                self.image, self.concept_map, self.contribution_map, self.maps_info = image, concept, contribution, info
            self._summarise(info["cls"])

        self.schedule("maps", (id(self.session), "maps", id(self), self._learned, source, target), compute, apply)

    def _summarise(self, cls):
        cv, crp = self.concept, self.session.crp
        if self.session.dataset is None:
            return

        def compute():
            images = [x for x, label in self._members(cls)]
            if not images:
                return {"cls": cls, "name": class_name(self.session, cls), "images": 0}
            result = concept_contribution(crp, images, cv, cls)
            return {
                "cls": cls,
                "name": class_name(self.session, cls),
                "images": result.images,
                "score": result.score,
                "inside": _finite(result.inside),
                "outside": _finite(result.outside),
                "inside_share": result.inside_share,
            }

        def apply(summary):
            self.summary = summary

        self.schedule("summary", (id(self.session), "summary", id(self), self._learned, cls), compute, apply)

    def _members(self, cls, limit=2048):
        """Up to ``summary_size`` samples of class ``cls`` from the session's dataset (labels read in order)."""
        dataset = self.session.dataset
        labels = getattr(dataset, "labels", None)
        found = []
        for index in range(min(len(dataset), limit)):
            if labels is not None and int(labels[index]) != cls:
                continue
            x, label = self.session.item(index)
            if label == cls:
                found.append((x, label))
                if len(found) >= self.summary_size:
                    break
        return found

    def unlink(self):
        """Stop following the state."""
        self._link.unlink()
        super().unlink()
