"""An independent CRP reference on plain zennit, for checking the engine.

It uses zennit's own hooks (``composite.context``), recomputing every rule in every backward pass, and applies the
conditions as tensor hooks on the layer outputs, as zennit-crp does. It shares no code with the engine.
"""

import torch


def _channel_mask(output, channels, axis):
    shape = [1] * output.ndim
    shape[axis] = output.shape[axis]
    mask = torch.zeros(output.shape[axis], dtype=output.dtype)
    mask[list(channels)] = 1
    return mask.reshape(shape)


def reference(model, composite, x, target=None, conditions=None, record=(), start=None, axes=None):
    """Return ``(input relevance, {layer: relevance map}, {layer: activation}, output)`` for a batched ``x``.

    Parameters
    ----------
    target : int or None
        Class explained from the output value (A.3); ignored when ``start`` is given.
    conditions : dict[str, list[int]]
        Channel masks applied where relevance passes each layer's output.
    record : Iterable[str]
        Layers at which to return the relevance (after their mask).
    start : tuple[str, callable], optional
        ``(layer, fn)``: start the backward at that layer's output with relevance ``fn(activation)`` instead.
    axes : dict[str, int], optional
        Channel axis per layer (default 1).
    """
    conditions = conditions or {}
    axes = axes or {}
    modules = dict(model.named_modules())
    outputs, recorded = {}, {}
    names = set(conditions) | set(record) | ({start[0]} if start else set())
    x = x.detach().clone().requires_grad_()
    handles = []

    def make(name):
        def hook(module, args, output):
            outputs[name] = output
            if name in conditions:
                mask = _channel_mask(output, conditions[name], axes.get(name, 1))
                output.register_hook(lambda grad: grad * mask)
            if name in record:
                output.register_hook(lambda grad: recorded.__setitem__(name, grad))
            return None

        return hook

    with composite.context(model) as modified:
        try:
            for name in names:
                handles.append(modules[name].register_forward_hook(make(name)))
            output = modified(x)
            if start is not None:
                layer, fn = start
                root, grad = outputs[layer], fn(outputs[layer].detach())
            else:
                root = output
                grad = (
                    output.detach()
                    if target is None
                    else output.detach()
                    * torch.nn.functional.one_hot(torch.tensor([target] * x.shape[0]), output.shape[1]).to(output)
                )
            (relevance,) = torch.autograd.grad(root, x, grad)
        finally:
            for handle in handles:
                handle.remove()
    activations = {name: outputs[name].detach() for name in names}
    return relevance.detach(), recorded, activations, output.detach()
