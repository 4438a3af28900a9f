"""What a model is made of right now: its modules and the tensors of their parameters and buffers.

Everything the engine computes once per model (the traced graph, merged BatchNorm layers, modified parameters,
recorded forward passes) is valid while the model's :class:`ModelState` is unchanged. A state names its modules
and tensors by identity and keeps them alive, so no later object can take over the identity of one it names.

Tensors changed in place are seen by their version counter (``Tensor._version``), which torch raises on every
in-place change (``optimizer.step()``, ``load_state_dict``, ``copy_``; torch has no public name for it), and new data
assigned to ``.data`` by its address. It is read
here and nowhere else, and ``tests/test_engine_state.py`` fails the day a torch release changes it.

:class:`EvalMode` sets every module's training flag to eval for the length of a block (tracing, or a pass of a model
that runs module by module) and restores each flag afterwards.
"""


def version(tensor):
    """The in-place version counter of ``tensor`` (raised by every in-place change)."""
    return tensor._version


class ModelState:
    """The modules of a model and the version of every parameter and buffer, compared by identity.

    Parameters
    ----------
    model : torch.nn.Module
        The model.
    """

    __slots__ = ("modules", "tensors", "versions")

    def __init__(self, model):
        self.modules = tuple(model.named_modules(remove_duplicate=False))
        tensors = []
        for _, module in self.modules:
            tensors.extend(module.parameters(recurse=False))
            tensors.extend(module.buffers(recurse=False))
        self.tensors = tuple(tensors)
        self.versions = tuple((version(tensor), tensor.data_ptr()) for tensor in tensors)

    def same_modules(self, other):
        """Whether ``other`` has the same modules under the same names (a traced graph stays valid)."""
        return (
            other is not None
            and len(self.modules) == len(other.modules)
            and all(
                name == other_name and module is other_module
                for (name, module), (other_name, other_module) in zip(self.modules, other.modules)
            )
        )

    def __eq__(self, other):
        if self is other:
            return True
        if not isinstance(other, ModelState) or not self.same_modules(other):
            return False
        return (
            len(self.tensors) == len(other.tensors)
            and all(a is b for a, b in zip(self.tensors, other.tensors))
            and self.versions == other.versions
        )

    def __hash__(self):
        return hash((len(self.modules), len(self.tensors), self.versions))


class EvalMode:
    """Every module in eval mode inside the block; the training flags restored afterwards."""

    def __init__(self, model):
        self.flags = [(module, module.training) for module in model.modules()]

    def __enter__(self):
        for module, _ in self.flags:
            module.training = False

    def __exit__(self, *exc):
        for module, training in self.flags:
            module.training = training
