"""Real-browser harness: JupyterLab on 127.0.0.1 driven by Playwright through Debian's Chromium.

Why each step is done the way it is, is said where it is done: Chromium's flags, a JupyterLab isolated from the
home directory with its news popup silenced, and the wait for a kernel that is really ready before "Run All"
(``Lab._wait_for_kernel``). The development page of the docs (docs/development.md) describes the browser tests.
"""

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Headless, offline (no first-run, network, update or sync traffic into the closed network), no GPU, and shared
# memory in /tmp (Debian's wrapper does not add --disable-dev-shm-usage itself, and /dev/shm is small in containers).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TIMEOUT_S = 60
PROMPT_DONE = re.compile(r"^\[\d+\]:$")

expect.set_options(timeout=TIMEOUT_S * 1000)


@dataclass
class JupyterServer:
    """A running ``jupyter lab``: its address, token, the folder it serves and its log."""

    url: str
    token: str
    root: Path
    log: Path
    process: subprocess.Popen = field(repr=False)

    def api(self, path: str, method: str = "GET") -> object:
        """Call the REST API and return the decoded JSON (None for an empty answer)."""
        request = urllib.request.Request(
            f"{self.url}/api/{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, lines: int = 40) -> str:
        """Return the end of the server's log, for failure messages."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_settings(settings_dir: Path) -> None:
    # Silence the news / update popup, which would otherwise land in the screenshots.
    path = settings_dir / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))


def _stop(server: JupyterServer) -> None:
    with contextlib.suppress(OSError):
        server.api("shutdown", method="POST")
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(timeout=15)
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(timeout=wait)
            return


@pytest.fixture(scope="session")
def jupyter_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """Start ``jupyter lab`` on a free port with a random token, isolated from the home directory."""
    base = tmp_path_factory.mktemp("jupyter")
    dirs = {name: base / name for name in ("root", "config", "runtime", "data", "ipython", "workspaces", "settings")}
    for path in dirs.values():
        path.mkdir()
    _write_settings(dirs["settings"])
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        # The kernel is started as this interpreter (the venv's, where crp_widgets is installed editable).
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "IPYTHONDIR": str(dirs["ipython"]),
    }
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={dirs['root']}",
        f"--LabApp.workspaces_dir={dirs['workspaces']}",
        f"--LabApp.user_settings_dir={dirs['settings']}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    log = base / "jupyter.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, env=env, cwd=dirs["root"], stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = JupyterServer(f"http://127.0.0.1:{port}", token, dirs["root"], log, process)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with code {process.returncode}:\n{server.log_tail()}")
            with contextlib.suppress(OSError):
                server.api("status")
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not answer /api/status in {TIMEOUT_S} s:\n{server.log_tail()}")
            time.sleep(0.25)
        yield server
    finally:
        _stop(server)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, launched by Playwright (its own browser download cannot work here)."""
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests need {CHROMIUM} (./dev.sh test installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


@dataclass
class Lab:
    """A JupyterLab page with helpers to write, open and run notebooks."""

    server: JupyterServer
    page: Page
    notebook7: bool = False

    def cell(self, index: int) -> Locator:
        """Return a locator for the notebook's cell number ``index``."""
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index)

    def prompt(self, index: int) -> str:
        """Return the input prompt of a cell (``[3]:`` once run, ``[*]:`` while running)."""
        return self.cell(index).locator(".jp-InputPrompt").inner_text().strip()

    def output(self, index: int) -> str:
        """Return the text of a cell's output area."""
        return self.cell(index).locator(".jp-OutputArea").inner_text()

    def open_notebook(self, name: str, cells: list[str], frontend: str = "lab") -> Page:
        """Write a notebook into the server's root, open it, wait for the kernel, run all cells.

        ``frontend`` is ``"lab"`` (JupyterLab 4) or ``"notebook"`` (Notebook 7, served by the same server).
        Returns the page once every non-empty cell has an execution count.
        """
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
        return self._open(name, notebook, frontend)

    def open_copy(self, source: Path, extra_cells: tuple[str, ...] = ()) -> Page:
        """Copy a notebook (e.g. an example) into the server's root with ``extra_cells`` appended, and run it all."""
        notebook = nbformat.read(source, as_version=4)
        notebook.cells += [nbformat.v4.new_code_cell(cell) for cell in extra_cells]
        return self._open(source.name, notebook)

    def _open(self, name: str, notebook: nbformat.NotebookNode, frontend: str = "lab") -> Page:
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        self.notebook7 = self.notebook7 or frontend == "notebook"
        nbformat.write(notebook, self.server.root / name)
        # ?reset: an empty workspace, or the server restores the previous test's notebook next to this one.
        path = {"lab": f"lab/tree/{name}?reset&", "notebook": f"notebooks/{name}?"}[frontend]
        self.page.goto(f"{self.server.url}/{path}token={self.server.token}")
        self._wait_for_kernel()
        self.page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        self.page.locator(".lm-Menu .lm-Menu-item", has_text=re.compile(r"^Run All Cells")).click()
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type == "code" and cell.source.strip():
                try:
                    expect(self.cell(index).locator(".jp-InputPrompt")).to_have_text(PROMPT_DONE)
                except AssertionError as error:
                    # say which cell stopped the run and what the cells before it printed
                    prompts = [self.prompt(i) for i in range(index + 1)]
                    before = [i for i in range(index) if notebook.cells[i].cell_type == "code"][-3:]
                    outputs = "\n".join(f"cell {i}: {self.output(i)[-300:]}" for i in before)
                    raise AssertionError(
                        f"cell {index} of {name} did not run; prompts {prompts}\n{outputs}\n"
                        f"server log:\n{self.server.log_tail(20)}"
                    ) from error
        return self.page

    def run_cell(self, index: int, source: str | None = None) -> str:
        """Run one cell again (after replacing its source, if given) and return its output text."""
        before = self.prompt(index)
        if source is not None:
            self.cell(index).locator(".cm-content").click()
            self.page.keyboard.press("ControlOrMeta+a")
            self.page.keyboard.insert_text(source)
            self.page.keyboard.press("Escape")
        self.cell(index).locator(".jp-InputPrompt").click()
        self.page.keyboard.press("Shift+Enter")
        _wait_until(lambda: self.prompt(index) != before and PROMPT_DONE.match(self.prompt(index)), "the cell")
        return self.output(index)

    def _kernel_connected(self) -> bool:
        # The server can answer 500 while a kernel is starting (seen under heavy load): ask again.
        try:
            return any(k["connections"] > 0 for k in self.server.api("kernels"))
        except urllib.error.HTTPError as error:
            if error.code >= 500:
                return False
            raise

    def _wait_for_kernel(self) -> None:
        # "idle" can show while the kernel is still starting, and "Run All" then silently runs nothing: also wait
        # for a kernel name and a kernel connection, then for idle again.
        idle = self.page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]')
        expect(idle).to_be_visible()
        kernel_name = self.page.locator(".jp-KernelName").first
        _wait_until(lambda: kernel_name.inner_text().strip() not in ("", "No Kernel"), "a kernel name")
        _wait_until(self._kernel_connected, "a kernel connection")
        expect(idle).to_be_visible()


# Notebook 7.6.5 itself logs these on start-up, also for an empty notebook without widgets (checked): its keyboard
# shortcut settings read ``plugins[id].schema`` of a plugin it has not loaded, and its notebook page sometimes asks
# for the file browser before that plugin is registered. They fail no test that opened a Notebook 7 page; any other
# console error does.
NOTEBOOK7_ERRORS = (
    "page error: Cannot read properties of undefined (reading 'schema')\nTypeError: Cannot read properties of "
    "undefined (reading 'schema')\n    at http://127.0.0.1:",
    "page error: Command 'filebrowser:open-path' not registered.",
)


def _known_notebook7_error(problem: str) -> bool:
    first = problem.split("\n    at ")[0]
    return any(problem.startswith(known) for known in NOTEBOOK7_ERRORS) and (
        "filebrowser:open-path" in first or "/static/notebook/notebook_core." in problem
    )


def _console_error(message) -> str:
    location = message.location or {}
    return f"{message.text} ({location.get('url', '?')}:{location.get('lineNumber', '?')})"


@pytest.fixture
def lab(jupyter_server: JupyterServer, chromium: Browser, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A fresh JupyterLab page; a screenshot lands in test-artifacts/<test name>.png when the test ends.

    Any error the page logs in the browser console fails the test (as an error of this fixture).
    """
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_S * 1000)
    problems: list[str] = []
    page.on("console", lambda message: problems.append(_console_error(message)) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}\n{error.stack or ''}"[:1500]))
    lab_page = Lab(jupyter_server, page)
    try:
        yield lab_page
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
        with contextlib.suppress(Exception):
            page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)
        context.close()
        for kernel in jupyter_server.api("kernels"):
            jupyter_server.api(f"kernels/{kernel['id']}", method="DELETE")
    if lab_page.notebook7:
        problems = [problem for problem in problems if not _known_notebook7_error(problem)]
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        pytest.fail(f"the browser console logged {len(problems)} error(s):\n  {shown}", pytrace=False)
