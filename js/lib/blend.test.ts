import { describe, expect, it } from "vitest";
import { blend } from "./blend";
import { colorize } from "./colormap";
import fixture from "./parity.fixture.json";

describe("blend", () => {
  const base = [10, 20, 30, 255, 200, 100, 0, 255, 40, 50, 60, 255];
  const top = [255, 0, 0, 255, 0, 0, 255, 255, 255, 255, 255, 255];

  it("shows the image at opacity 0, and the pure colour of the largest relevance from opacity 0.5", () => {
    expect(Array.from(blend(base, top, 0))).toEqual(base);
    expect(Array.from(blend(base, top, 0.5)).slice(0, 8)).toEqual(top.slice(0, 8));
  });

  it("leaves pixels without relevance (white) as the image, whatever the opacity", () => {
    expect(Array.from(blend(base, top, 1)).slice(8)).toEqual([40, 50, 60, 255]);
  });

  it("covers the image with the sign's pure colour in proportion to the relevance, rounding half up", () => {
    // half the largest relevance: bwr (255, 128, 128), |v| = 127 / 255; at opacity 0.5 the weight is |v|
    const w = (2 * 0.5 * 127) / 255;
    const expected = [0, 0, 1].map((v, c) => Math.floor((1 - w) * v + w * [255, 0, 0][c] + 0.5));
    expect(Array.from(blend([0, 0, 1, 7], [255, 128, 128, 9], 0.5))).toEqual([...expected, 255]);
    const blue = Array.from(blend([100, 100, 100, 255], [64, 64, 255, 255], 1));
    expect(blue).toEqual([0, 0, 255, 255]); // opacity 1 doubles the weight (clipped at 1)
  });

  it("rejects buffers of different lengths", () => {
    expect(() => blend([0, 0, 0, 255], [0, 0, 0, 255, 0, 0, 0, 255], 0.5)).toThrow(/lengths 4 and 8/);
  });

  it("equals the Python overlay on the shared reference values", () => {
    const { image, heatmap, opacity, rgb } = fixture.overlay;
    const rgba = image[0].flatMap(([r, g, b]) => [r, g, b, 255]);
    const out = blend(rgba, colorize(heatmap[0]), opacity);
    const pixels = [];
    for (let i = 0; i < out.length; i += 4) pixels.push([out[i], out[i + 1], out[i + 2]]);
    expect(pixels).toEqual(rgb[0]);
  });
});
