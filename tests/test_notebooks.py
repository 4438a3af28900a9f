"""The example notebooks run headless from top to bottom (nbclient), so they cannot rot."""

import pathlib

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "example_notebooks"


def execute(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": NOTEBOOKS}})
    client.execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    errors = [output for output in outputs if output.output_type == "error"]
    assert not errors, "\n".join(f"{e.ename}: {e.evalue}" for e in errors)
    text = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    widgets = [output for output in outputs if "application/vnd.jupyter.widget-view+json" in output.get("data", {})]
    return text, widgets, notebook


def test_quickstart_finds_the_shortcut():
    text, widgets, notebook = execute("quickstart.ipynb")
    assert widgets, "the explorer was not displayed"
    assert "predicts green cross" in text
    assert "without the watermark: predicted solid cross" in text
    assert "with the watermark: predicted green cross" in text
    share = float(text.split("% of the channel's positive relevance")[0].rsplit(maxsplit=1)[-1])
    assert share > 40  # most of the top channel's relevance lies on a watermark covering under 2 % of the image
    # Widget state (the anywidget ESM and binary buffers) is stored with the outputs.
    assert notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]


def test_custom_model_runs_with_random_weights_on_an_image_folder():
    text, widgets, _ = execute("custom_model.ipynb")
    assert "60 images of 10 classes" in text
    assert "explained class:" in text
    assert widgets


def test_teaching_session_runs_with_unanswered_exercises():
    text, widgets, _ = execute("teaching.ipynb")
    assert text.count("Not answered yet") == 5
    assert len(widgets) >= 4


def test_time_series_notebook_finds_the_planted_patterns():
    text, widgets, _ = execute("time_series.ipynb")
    assert "scanned 300 signals" in text
    assert len(widgets) >= 2
    shares = [float(line.split(" puts ")[1].split("%")[0]) for line in text.splitlines() if " puts " in line]
    assert len(shares) == 2
    assert min(shares) > 50
