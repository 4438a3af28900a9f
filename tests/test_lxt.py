"""The engine's CP-LRP on a vision transformer against LXT's (Achtibat et al. 2024), the reference implementation.

LXT patches the classes of ``torch.nn`` (GELU, LayerNorm, MultiheadAttention) for the whole process, so it runs in
a subprocess. Its package imports ``transformers``; ``./dev.sh test`` installs LXT 2.1 with the versions of its
dependencies it works with into ``.lxt`` (pure Python packages on top of the main environment's) and points
``CRP_LXT`` at it.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

LXT = pathlib.Path(os.environ.get("CRP_LXT", pathlib.Path(__file__).parent.parent / ".lxt"))

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch, torchvision
    from zennit.composites import LayerMapComposite
    from zennit.rules import Epsilon
    from zennit.types import Convolution, Linear
    from crp_widgets.engine import CRP

    torch.manual_seed(3)
    model = torchvision.models.get_model(sys.argv[2], weights=None, image_size=64).eval()
    with torch.no_grad():
        model.heads.head.weight.normal_(0, 0.02)  # torchvision starts it at zero
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    # LXT's CP-LRP leaves linear layers and the patch embedding to the gradient (LRP-0): the epsilon rule with a
    # vanishing epsilon here
    composite = LayerMapComposite([(Convolution, Epsilon(1e-9)), (Linear, Epsilon(1e-9))])
    crp = CRP(model, composite=composite, epsilon=1e-9)
    targets = crp.predict(x).argmax(1)
    ours = crp.attribute(x, target=targets).input_relevance

    sys.path.append(sys.argv[1])  # after the main environment's packages
    from lxt.efficient import monkey_patch
    from lxt.efficient.models.vit_torch import cp_LRP
    from torchvision.models import vision_transformer

    monkey_patch(vision_transformer, cp_LRP)
    x = x.clone().requires_grad_()
    model(x).gather(1, targets[:, None]).sum().backward()
    theirs = (x * x.grad).detach()
    print(json.dumps({
        "difference": float((ours - theirs).abs().max()),
        "scale": float(theirs.abs().max()),
        "ours": ours.sum(dim=(1, 2, 3)).tolist(),
        "theirs": theirs.sum(dim=(1, 2, 3)).tolist(),
        "correlation": float(torch.corrcoef(torch.stack([ours.flatten(), theirs.flatten()]))[0, 1]),
    }))
    """
)


@pytest.mark.parametrize("name", ["vit_b_16"])
def test_vit_equals_lxt_cp_lrp(name):
    """Same model, same inputs, same rules: the engine's input relevance is LXT's to float precision."""
    if not (LXT / "lxt").is_dir():
        # under ./dev.sh test (which sets CRP_LXT) a missing LXT is a failure, elsewhere a reason to skip
        assert "CRP_LXT" not in os.environ, f"CRP_LXT={LXT} holds no LXT"
        pytest.skip(f"LXT is not installed at {LXT}; ./dev.sh test installs it")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(LXT), name], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["scale"] > 0
    assert found["difference"] <= 1e-3 * found["scale"], found
    assert found["ours"] == pytest.approx(found["theirs"], rel=1e-3), found
    assert found["correlation"] > 0.9999, found
