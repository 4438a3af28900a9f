"""The examples in README.md and on the docs pages run as written.

Every ```python block of a page runs, in order, in one namespace per page, in a temporary working directory (so that
``"refs/"`` and the like land there). A block that needs what a test cannot have (a GPU cluster, the user's files)
is marked with the line ``<!-- not run -->`` right above it. The examples on "your own model" run against stand-ins
written first: a resnet18 state dict with random weights and an image folder of demo scenes.
"""

import pathlib
import re

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# docs/explorer.md is left out (its examples script a displayed explorer, which the browser tests cover); the API
# pages hold no examples
DOCUMENTED = sorted(
    str(path.relative_to(ROOT))
    for path in DOCS.rglob("*.md")
    if path.name != "explorer.md" and "api" not in path.relative_to(DOCS).parts
)
PAGES = ["README.md", *DOCUMENTED]
BLOCK = re.compile(r"^(?P<mark><!-- not run -->\n)?```python\n(?P<code>.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(page):
    """``(line, code)`` of the page's runnable python blocks."""
    text = (ROOT / page).read_text()
    return [
        (text[: match.start("code")].count("\n") + 1, match.group("code"))
        for match in BLOCK.finditer(text)
        if not match.group("mark")
    ]


def own_model_stand_ins(folder):
    """What README's example on your own model reads: a state dict and an image folder (one folder per class)."""
    import torchvision
    from torchvision.transforms.functional import to_pil_image

    import crp_widgets as cw

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), folder / "my_weights.pt")
    demo = cw.demo.load(length=10)  # one image per class
    for index in range(len(demo.dataset)):
        image, label = demo.dataset[index]
        path = folder / "my_images" / demo.classes[label] / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        to_pil_image(image).save(path)


def test_every_page_with_examples_is_run():
    assert "docs/getting-started.md" in PAGES
    assert all(blocks(page) for page in ["README.md", "docs/getting-started.md", "docs/engine.md", "docs/scans.md"])


@pytest.mark.parametrize("page", [page for page in PAGES if blocks(page)])
def test_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "my_weights.pt" in (ROOT / page).read_text():
        own_model_stand_ins(tmp_path)
    namespace = {"__name__": "__docs__"}
    try:
        for line, code in blocks(page):
            exec(compile(code, f"{page}:{line}", "exec"), namespace)
    finally:
        # explorers compute their first views on a worker thread: let them finish before the next test
        for value in list(namespace.values()):
            session = getattr(value, "session", None)
            if session is not None and hasattr(session, "worker"):
                session.worker.wait()
