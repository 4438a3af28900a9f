"""The package ships one bundle per front-end entry, each widget loads its own, and a wheel installs without Node.js.

The wheel test follows the README's install path: a wheel built once from a clean clone (the build runs npm and
carries the bundle), installed into a fresh virtual environment with no Node.js on its PATH, where the package
imports and builds an explorer on the demo world.
"""

import hashlib
import importlib
import inspect
import json
import os
import pathlib
import pkgutil
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import anywidget
import pytest

import crp_widgets.widgets as widgets

ROOT = pathlib.Path(__file__).resolve().parents[1]


def entries():
    return sorted(path.stem for path in (ROOT / "js").glob("*.ts"))


# Entries no widget loads: the exported page's runtime, which crp_widgets.widgets.export inlines into the page.
PAGE_ONLY = {"export"}


def test_the_exported_page_inlines_bundles_that_the_build_writes():
    from crp_widgets.widgets.export import BUNDLES

    assert set(BUNDLES) <= set(entries())
    assert set(BUNDLES) >= PAGE_ONLY


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


def widget_classes():
    """Every anywidget class defined in ``crp_widgets.widgets`` (exported or not, e.g. a style-sheet loader)."""
    for info in pkgutil.iter_modules(widgets.__path__):
        module = importlib.import_module(f"{widgets.__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, anywidget.AnyWidget) and "_esm" in vars(value):
                yield value


def test_every_widget_loads_a_bundle_that_the_build_writes():
    loaded = {bundle(cls) for cls in widget_classes()}
    assert {path.stem for path in loaded} == set(entries()) - PAGE_ONLY
    assert all(path.parent == ROOT / "crp_widgets" / "static" for path in loaded)
    assert all(path.exists() for path in loaded)


# ------------------------------------------------------------------------------------------ the wheel, without Node

# Run in the fresh environment: where the package comes from, that no Node.js is reachable, an explorer on the demo
# world, and the digests of the bundle files the installed widgets load (found by the functions above).
INSTALLED_CHECK = (
    inspect.getsource(bundle)
    + inspect.getsource(widget_classes)
    + textwrap.dedent(
        """
    import hashlib, importlib, json, pathlib, pkgutil, shutil, sys

    import anywidget
    import crp_widgets as cw
    import crp_widgets.widgets as widgets

    demo = cw.demo.load(length=40)
    explorer = cw.Explorer(demo.model, demo.dataset)
    explorer.session.worker.wait()  # let the first views finish before the interpreter exits
    loaded = {}
    for cls in widget_classes():
        path = bundle(cls)
        loaded[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
        loaded["dir:" + path.name] = str(path.parent)
    print(json.dumps({
        "package": str(pathlib.Path(cw.__file__).parent),
        "node": shutil.which("node"),
        "npm": shutil.which("npm"),
        "channels": len(explorer.channels.ranking),
        "loaded": loaded,
    }))
    """
    )
)


def digests(folder, suffixes=(".js", ".css")):
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(pathlib.Path(folder).iterdir())
        if path.suffix in suffixes
    }


def run(command, cwd, env=None):
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def clean_clone(tmp_path_factory):
    """A clone of the committed HEAD, with a copy of the installed JavaScript dependencies (no network)."""
    if shutil.which("npm") is None or not (ROOT / "node_modules").is_dir():
        pytest.skip("building the wheel needs npm and node_modules (./dev.sh installs both)")
    source = tmp_path_factory.mktemp("clone") / "crp_widgets"
    run(["git", "clone", "--quiet", str(ROOT), str(source)], cwd=ROOT)
    shutil.copytree(ROOT / "node_modules", source / "node_modules", symlinks=True)
    return source


@pytest.fixture(scope="module")
def wheel(clean_clone, tmp_path_factory):
    """The wheel of the clean clone, built by the package's build backend (its build hook runs npm)."""
    dist = tmp_path_factory.mktemp("dist")
    # no build isolation (the backend is installed with the test extra); npm answers from node_modules, offline
    env = {**os.environ, "npm_config_offline": "true", "npm_config_audit": "false", "npm_config_fund": "false"}
    run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)], cwd=clean_clone, env=env)
    (built,) = dist.glob("crp_widgets-*.whl")
    return built


def test_a_wheel_from_a_clean_clone_installs_and_runs_without_node(clean_clone, wheel, tmp_path):
    # the bundle as npm builds it from the clone's js/, apart from the one the wheel's build wrote
    static = clean_clone / "crp_widgets" / "static"
    shutil.rmtree(static)
    run(["npm", "run", "build"], cwd=clean_clone)
    expected = digests(static)
    assert {name for name in expected if name.endswith(".js")} == {f"{name}.js" for name in entries()}

    # a fresh environment: the wheel installed into it; the heavy dependencies (torch, ...) are borrowed from this
    # environment through a .pth path entry, after the install so that pip sees nothing of the editable install
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    run([*pip, "install", "--no-deps", "--no-index", "--quiet", str(wheel)], cwd=tmp_path)
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp_path)
    site = pathlib.Path(site.stdout.strip())
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")

    # no Node.js on PATH: only the environment's own bin folder
    assert shutil.which("node", path=str(venv / "bin")) is None
    env = {"PATH": str(venv / "bin"), "HOME": str(tmp_path), "PYTHONNOUSERSITE": "1"}
    result = run([str(python), "-c", INSTALLED_CHECK], cwd=tmp_path, env=env)
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["node"] is None
    assert report["npm"] is None
    assert pathlib.Path(report["package"]) == site / "crp_widgets"  # the wheel's copy, not this checkout
    assert report["channels"] > 0  # the explorer ranked the channels of its first layer
    installed = digests(site / "crp_widgets" / "static")
    assert installed == expected  # byte for byte the bundle npm builds from js/
    loaded = {name: digest for name, digest in report["loaded"].items() if not name.startswith("dir:")}
    # every entry's bundle, each loaded by a widget (the exported page's runtime by the exported page)
    assert set(loaded) == {f"{name}.js" for name in entries() if name not in PAGE_ONLY}
    assert loaded == {name: expected[name] for name in loaded}
    assert {report["loaded"][f"dir:{name}"] for name in loaded} == {str(site / "crp_widgets" / "static")}
