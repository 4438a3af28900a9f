"""Small and standard models for the engine tests (random weights, deterministic)."""

import functools

import torch
import torchvision


def _randomise_batch_norms(model, generator):
    """Give BatchNorm layers non-trivial statistics, so that canonization matters."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
    return model


@torch.no_grad()
def small_cnn(seed=0):
    """A small VGG-like 2-D CNN with BatchNorm, in-place ReLUs, max and average pooling and a dense head."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(inplace=True),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 10),
    )
    return _randomise_batch_norms(model, torch.Generator().manual_seed(seed)).eval()


@torch.no_grad()
def conv1d_net(seed=0):
    """A small 1-D convolutional net for time series (two input channels, five classes)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv1d(2, 8, 5, padding=2),
        torch.nn.ReLU(),
        torch.nn.MaxPool1d(2),
        torch.nn.Conv1d(8, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv1d(16, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool1d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 5),
    ).eval()


@functools.cache
def torchvision_model(name, seed=0):
    """A torchvision architecture with random weights (``weights=None``), BatchNorm statistics randomised."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None)
    with torch.no_grad():
        _randomise_batch_norms(model, torch.Generator().manual_seed(seed))
    return model.eval()


def random_images(n, seed=0, classes=None):
    """``n`` random 3x16x16 images in [0, 1] with labels of 10 classes (named ``classes``, if given)."""
    generator = torch.Generator().manual_seed(seed)
    data = torch.utils.data.TensorDataset(
        torch.rand(n, 3, 16, 16, generator=generator), torch.randint(0, 10, (n,), generator=generator)
    )
    if classes is not None:
        data.classes = list(classes)
    return data
