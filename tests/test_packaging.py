"""The package ships one bundle per front-end entry, and each widget loads its own."""

import pathlib
import re

import crp_widgets.widgets as widgets

ROOT = pathlib.Path(__file__).resolve().parents[1]


def entries():
    return sorted(path.stem for path in (ROOT / "js").glob("*.ts"))


def toml_list(text, key):
    """The strings of a TOML list ``key = [...]`` (the package supports Python 3.10, which has no tomllib)."""
    body = re.search(rf"^{re.escape(key)} = \[(.*?)\]", text, re.MULTILINE | re.DOTALL).group(1)
    return sorted(re.findall(r'"([^"]+)"', body))


def test_every_front_end_entry_is_an_ensured_build_target():
    config = (ROOT / "pyproject.toml").read_text()
    expected = [f"crp_widgets/static/{name}.js" for name in entries()]
    assert toml_list(config, "ensured-targets") == expected
    assert toml_list(config, "skip-if-exists") == expected


def bundle(widget):
    """The file a widget's ``_esm`` was read from (anywidget wraps the path in a ``FileContents``)."""
    esm = widget._esm
    return pathlib.Path(getattr(esm, "_path", esm))


def test_every_widget_loads_a_bundle_that_the_build_writes():
    classes = [getattr(widgets, name) for name in widgets.__all__]
    loaded = {bundle(cls) for cls in classes if hasattr(cls, "_esm")}
    assert {path.stem for path in loaded} == set(entries())
    assert all(path.parent == ROOT / "crp_widgets" / "static" for path in loaded)
    assert all(path.exists() for path in loaded)
