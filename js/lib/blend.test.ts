import { describe, expect, it } from "vitest";
import { blend } from "./blend";
import { colorize } from "./colormap";
import fixture from "./parity.fixture.json";

describe("blend", () => {
  const base = [10, 20, 30, 255, 200, 100, 0, 255];
  const top = [250, 0, 0, 255, 0, 0, 250, 255];

  it("shows the base at opacity 0 and the top at opacity 1", () => {
    expect(Array.from(blend(base, top, 0))).toEqual(base);
    expect(Array.from(blend(base, top, 1))).toEqual(top);
  });

  it("mixes linearly, rounding half up, with opaque alpha", () => {
    expect(Array.from(blend([0, 0, 1, 7], [255, 1, 0, 9], 0.5))).toEqual([128, 1, 1, 255]);
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
