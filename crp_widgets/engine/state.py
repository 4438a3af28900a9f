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

:data:`PASSES` keeps the engine's passes apart from what changes models for every thread: ``torch.fx`` tracing
(which patches ``torch.nn.Module.__call__`` process-wide for its length, so a model running in another thread
meanwhile goes through the tracer, and two overlapping traces leave the patch in place for good), and passes of
models that run module by module (their forward hooks fire in every thread).
"""

import contextlib
import threading


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


class Passes:
    """Many engine passes at once (:meth:`shared`), or one block alone (:meth:`alone`): tracing, hooked passes.

    Blocks nest within a thread. A block waiting to run alone keeps new passes from starting, so it is not starved.
    Inside a block, the engine takes no lock that a thread may hold while it waits for a block (a forward pass's
    lock is taken before its backward pass's block; tracing enters its block before the context's lock, which is
    only ever held briefly, around caches).
    """

    def __init__(self):
        self._condition = threading.Condition()
        self._running = 0  # threads inside a block
        self._alone = None  # the thread running alone
        self._waiting = 0  # threads waiting to run alone
        self._local = threading.local()

    @contextlib.contextmanager
    def _block(self, alone):
        local, me = self._local, threading.get_ident()
        depth, alone_depth = getattr(local, "depth", 0), getattr(local, "alone", 0)
        with self._condition:
            if alone and not alone_depth:
                self._waiting += 1
                try:  # a thread inside a shared block already counts among the running
                    self._condition.wait_for(lambda: self._alone is None and self._running == (1 if depth else 0))
                finally:
                    self._waiting -= 1
                self._alone = me
            elif not depth:
                self._condition.wait_for(lambda: self._alone is None and not self._waiting)
            if not depth:
                self._running += 1
        local.depth, local.alone = depth + 1, alone_depth + alone
        try:
            yield
        finally:
            local.depth, local.alone = depth, alone_depth
            with self._condition:
                if alone and not alone_depth:
                    self._alone = None
                if not depth:
                    self._running -= 1
                self._condition.notify_all()

    def shared(self):
        """A block that runs models alongside other threads' shared blocks."""
        return self._block(alone=False)

    def alone(self):
        """A block that runs while no other thread is inside a block."""
        return self._block(alone=True)


PASSES = Passes()
