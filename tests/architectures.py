"""Every classification architecture family of torchvision, prepared for the conservation test.

A ReLU network whose biases (and BatchNorm shifts) are zero conserves relevance under Epsilon (small epsilon),
ZPlus, Flat, Sum and the rules for gates, norms and attention: the input heatmap sums to the explained logit. With
random weights (``weights=None``) the BatchNorm statistics are re-estimated on random images first and the
classifier is scaled to logits of order one, so that activations do not shrink towards zero (where the epsilon would
absorb everything).
"""

import re

import torch
import torchvision

# family -> (smallest member, input size, constructor options): the options keep the auxiliary classifiers out
FAMILIES = {
    "alexnet": ("alexnet", 64, {}),
    "convnext": ("convnext_tiny", 64, {}),
    "densenet": ("densenet121", 64, {}),
    "efficientnet": ("efficientnet_b0", 64, {}),
    "efficientnet_v2": ("efficientnet_v2_s", 64, {}),
    "googlenet": ("googlenet", 64, {"aux_logits": False, "init_weights": True}),
    "inception": ("inception_v3", 96, {"aux_logits": False, "init_weights": True}),
    "maxvit": ("maxvit_t", 224, {}),
    "mnasnet": ("mnasnet0_5", 64, {}),
    "mobilenet_v2": ("mobilenet_v2", 64, {}),
    "mobilenet_v3": ("mobilenet_v3_small", 64, {}),
    "regnet_x": ("regnet_x_400mf", 64, {}),
    "regnet_y": ("regnet_y_400mf", 64, {}),
    "resnet": ("resnet18", 64, {}),
    "resnext": ("resnext50_32x4d", 64, {}),
    "shufflenet_v2": ("shufflenet_v2_x0_5", 64, {}),
    "squeezenet": ("squeezenet1_1", 64, {}),
    "swin": ("swin_t", 64, {}),
    "swin_v2": ("swin_v2_t", 64, {}),
    "vgg": ("vgg11", 64, {}),
    "vgg_bn": ("vgg11_bn", 64, {}),
    "vit": ("vit_b_16", 64, {"image_size": 64}),
    "wide_resnet": ("wide_resnet50_2", 64, {}),
}


_PREFIXES = (
    "efficientnet_v2", "mobilenet_v2", "mobilenet_v3", "regnet_x", "regnet_y", "swin_v2", "wide_resnet", "shufflenet_v2"
)  # fmt: skip


def family(name):
    """The family of a torchvision model name (``efficientnet_b0``: ``efficientnet``, ``swin_v2_t``: ``swin_v2``)."""
    if name.startswith("vgg"):
        return "vgg_bn" if name.endswith("_bn") else "vgg"
    prefix = next((prefix for prefix in _PREFIXES if name.startswith(prefix)), None)
    return prefix or re.sub(r"[0-9_].*$", "", name)


def build(family_name, seed=0):
    """The family's smallest member, bias-free and with re-estimated BatchNorm statistics, and its input size."""
    name, size, options = FAMILIES[family_name]
    torch.manual_seed(seed)
    model = torchvision.models.get_model(name, weights=None, **options)
    return prepare(model, size, seed), size


def calibrate(model, size, seed=0):
    """Re-estimate the BatchNorm statistics on random images (with the initial ones, a deep random net's activations
    shrink towards zero, and an epsilon rule absorbs all relevance); return the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    model.train()
    for module in batch_norms:
        module.reset_running_stats()
        module.momentum = None  # a cumulative average over the batches
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(4, 3, size, size, generator=generator))
    return model.eval()


def prepare(model, size, seed=0):
    """Re-estimate BatchNorm statistics on random images, zero every bias and additive constant, scale the logits."""
    generator = torch.Generator().manual_seed(seed + 1)
    calibrate(model, size, seed)
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or name.endswith("pos_embedding") or name.endswith("class_token"):
                parameter.zero_()
        for module in batch_norms:
            module.running_mean.zero_()
        last = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][-1]
        if not last.weight.any():  # torchvision's ViT head starts at zero
            last.weight.normal_(0, 0.02, generator=generator)
        output = model(torch.rand(1, 3, size, size, generator=generator))
        last.weight.mul_(1.0 / max(float(output.abs().max()), 1e-12))
    return model
