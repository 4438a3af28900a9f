"""The layers the views offer: the model's blocks by stage, or its convolution and linear layers by parent.

A modern network has hundreds of modules; the layer menus offer the ones a user explores, grouped as
:meth:`crp_widgets.engine.CRP.layer_groups` groups them. Any module can still be chosen from Python
(``explorer.state.layer = "layer4.1.conv2"``); the menus then show it in a group of its own.
"""

__all__ = ["OTHER", "block_layers", "layer_menu"]

OTHER = "other layers"


def block_layers(crp):
    """The listed layers that are blocks (modules with submodules, e.g. a ResNet block or a transformer layer)."""
    modules = dict(crp.model.named_modules())
    listed = {name for _, names in crp.layer_groups() for name in names}
    return [name for name in modules if name in listed and any(True for _ in modules[name].children())]


def layer_menu(crp, layers=None):
    """The grouped layer menu for the front end: ``[{"group": str, "layers": [str, ...]}, ...]``.

    Parameters
    ----------
    crp : CRP
        The model's CRP (its :meth:`~crp_widgets.engine.CRP.layer_groups`).
    layers : Iterable[str], optional
        Offer only these layers (e.g. the layers of a reference store), in the groups' order; those that no group
        lists follow in a group named :data:`OTHER`. Default: every layer of every group.
    """
    groups = [(group, list(names)) for group, names in crp.layer_groups()]
    if layers is None:
        return [{"group": group, "layers": names} for group, names in groups if names]
    layers = list(dict.fromkeys(layers))
    wanted = set(layers)
    menu = [{"group": group, "layers": [n for n in names if n in wanted]} for group, names in groups]
    menu = [entry for entry in menu if entry["layers"]]
    listed = {name for entry in menu for name in entry["layers"]}
    rest = [name for name in layers if name not in listed]
    return menu + ([{"group": OTHER, "layers": rest}] if rest else [])
