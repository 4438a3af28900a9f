"""The one private torch attribute the engine reads: a tensor's in-place version counter (``engine/state.py``)."""

import torch
from zoo import small_cnn

from crp_widgets.engine.state import ModelState, version


def test_torch_raises_the_version_counter_on_every_in_place_change():
    """Fails loudly the day a torch release renames or stops raising ``Tensor._version``."""
    weight = torch.nn.Parameter(torch.ones(3))
    start = version(weight)
    with torch.no_grad():
        weight.mul_(2)
    assert version(weight) > start
    start = version(weight)
    torch.optim.SGD([weight], lr=0.1).zero_grad()
    weight.grad = torch.ones(3)
    torch.optim.SGD([weight], lr=0.1).step()
    assert version(weight) > start


def test_the_model_state_sees_every_kind_of_change():
    model = small_cnn()
    state = ModelState(model)
    assert ModelState(model) == state
    with torch.no_grad():
        model[0].weight.add_(1)  # in place
    assert ModelState(model) != state
    state = ModelState(model)
    model[0].weight.data = model[0].weight.data.clone()  # new data under the same Parameter
    assert ModelState(model) != state
    state = ModelState(model)
    model[0].weight = torch.nn.Parameter(model[0].weight.detach().clone())  # a new Parameter
    assert ModelState(model) != state
    state = ModelState(model)
    model.load_state_dict(small_cnn(seed=1).state_dict())  # copied in place
    assert ModelState(model) != state
    state = ModelState(model)
    model[5] = torch.nn.Tanh()  # a module replaced
    assert not ModelState(model).same_modules(state)
