"""Reading what the page drew: the pixels of a conditional heatmap's canvas, to compare with the kernel's bytes."""

import numpy as np

READ_CELL_CANVAS = """(channel) => {
  const canvas = document.querySelector(`.crpw-hm-cell[data-channel="${channel}"] canvas`);
  const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  return { width: canvas.width, height: canvas.height, data: Array.from(data) };
}"""


def grid_cell_pixels(page, channel):
    """The RGB pixels ``uint8 [H, W, 3]`` of the heatmap grid's canvas for ``channel``."""
    canvas = page.evaluate(READ_CELL_CANVAS, channel)
    return np.array(canvas["data"], dtype=np.uint8).reshape(canvas["height"], canvas["width"], 4)[..., :3]
