import numpy as np
import pytest
from playwright.sync_api import expect

from crp_widgets.render.images import overlay

pytestmark = pytest.mark.browser

SIZE = 32
RED_SPOT = (8, 8)  # (row, column) inside the positive block
BLUE_SPOT = (24, 24)  # inside the negative block

SETUP = f"""
import numpy as np
from crp_widgets.widgets.heatmap import HeatmapView

image = np.full(({SIZE}, {SIZE}, 3), 0.5)
heatmap = np.zeros(({SIZE}, {SIZE}))
heatmap[4:12, 4:12] = 2.0
heatmap[20:28, 20:28] = -1.0
view = HeatmapView(image=image, heatmap=heatmap, caption="synthetic relevance", opacity=0.5)
view
"""
PRINT_OPACITY = 'print(f"kernel opacity={view.opacity:.2f}")'
ERROR = "Planted failure: unknown layer 'features.99'"

READ_CANVAS = """() => {
  const canvas = document.querySelector(".crpw-heatmap canvas");
  const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  return { width: canvas.width, height: canvas.height, data: Array.from(data) };
}"""


def expected_pixels(opacity: float) -> np.ndarray:
    image = np.full((SIZE, SIZE, 3), 0.5)
    heatmap = np.zeros((SIZE, SIZE))
    heatmap[4:12, 4:12] = 2.0
    heatmap[20:28, 20:28] = -1.0
    return overlay(image, heatmap, opacity)


def wait_for_pixel(page, spot: tuple[int, int], rgb: np.ndarray) -> None:
    page.wait_for_function(
        """([row, column, rgb]) => {
          const canvas = document.querySelector(".crpw-heatmap canvas");
          if (!canvas || canvas.width === 0) return false;
          const pixel = canvas.getContext("2d").getImageData(column, row, 1, 1).data;
          return pixel[0] === rgb[0] && pixel[1] === rgb[1] && pixel[2] === rgb[2];
        }""",
        arg=[*spot, rgb.tolist()],
    )


def canvas_pixels(page) -> np.ndarray:
    canvas = page.evaluate(READ_CANVAS)
    return np.array(canvas["data"], dtype=np.uint8).reshape(canvas["height"], canvas["width"], 4)


def test_heatmap_view_in_jupyterlab(lab):
    page = lab.open_notebook("heatmap.ipynb", [SETUP, PRINT_OPACITY, ""])
    widget = page.locator(".crpw-heatmap")
    expect(widget.locator("canvas")).to_be_visible()
    expect(widget.locator("figcaption")).to_have_text("synthetic relevance")
    assert "kernel opacity=0.50" in lab.output(1)

    # Drawn from PNG + float32 bytes, coloured and blended in the browser: equal to the kernel's own overlay.
    expected = expected_pixels(0.5)
    wait_for_pixel(page, BLUE_SPOT, expected[BLUE_SPOT])
    pixels = canvas_pixels(page)
    np.testing.assert_array_equal(pixels[..., :3], expected)
    assert pixels[RED_SPOT][:3].tolist() == [255, 0, 0]  # the largest relevance in its colour at opacity 0.5
    assert pixels[BLUE_SPOT][:3].tolist() == [64, 64, 191]  # half of it: blue weighs 127 / 255 over grey 128

    # Keyboard: two steps of 0.05 to the right, seen by the page and by the kernel.
    slider = widget.get_by_role("slider")
    slider.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    expect(widget.locator("output")).to_have_text("60%")
    expected = expected_pixels(0.6)
    wait_for_pixel(page, RED_SPOT, expected[RED_SPOT])
    np.testing.assert_array_equal(canvas_pixels(page)[..., :3], expected)
    assert "kernel opacity=0.60" in lab.run_cell(1)

    # An error set in the kernel shows inside the widget, which keeps its picture and controls.
    lab.run_cell(2, f"view.error = {ERROR!r}")
    expect(widget.get_by_role("alert")).to_have_text(ERROR)
    expect(widget.locator("canvas")).to_be_visible()
    expect(slider).to_be_enabled()
