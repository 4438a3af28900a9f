import { describe, expect, it } from "vitest";
import { bwr, colorize, maxAbs, toByte } from "./colormap";
import fixture from "./parity.fixture.json";

function rgbOf(rgba: Uint8ClampedArray): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < rgba.length; i += 4) out.push([rgba[i], rgba[i + 1], rgba[i + 2]]);
  return out;
}

describe("bwr", () => {
  it("is blue at -1, white at 0 and red at +1", () => {
    expect(bwr(-1)).toEqual([0, 0, 1]);
    expect(bwr(0)).toEqual([1, 1, 1]);
    expect(bwr(1)).toEqual([1, 0, 0]);
  });

  it("is linear in between and mirror-symmetric", () => {
    expect(bwr(-0.5)).toEqual([0.5, 0.5, 1]);
    expect(bwr(0.25)).toEqual([1, 0.75, 0.75]);
    for (const v of [0.1, 0.4, 0.9]) {
      const [r, g, b] = bwr(v);
      expect(bwr(-v)).toEqual([b, g, r]);
    }
  });

  it("clips values outside [-1, 1]", () => {
    expect(bwr(-3)).toEqual(bwr(-1));
    expect(bwr(7)).toEqual(bwr(1));
  });
});

describe("toByte", () => {
  it("rounds half up and clips", () => {
    expect(toByte(0)).toBe(0);
    expect(toByte(1)).toBe(255);
    expect(toByte(0.5)).toBe(128);
    expect(toByte(-0.2)).toBe(0);
    expect(toByte(1.2)).toBe(255);
  });
});

describe("maxAbs", () => {
  it("ignores the sign and non-finite values", () => {
    expect(maxAbs([1, -3, 2])).toBe(3);
    expect(maxAbs([Number.NaN, -0.5, Number.POSITIVE_INFINITY])).toBe(0.5);
    expect(maxAbs([])).toBe(0);
  });
});

describe("colorize", () => {
  it("normalises by the maximum absolute value", () => {
    const rgb = rgbOf(colorize(new Float32Array([-4, 0, 2, 4])));
    expect(rgb).toEqual([
      [0, 0, 255],
      [255, 255, 255],
      [255, 128, 128],
      [255, 0, 0],
    ]);
  });

  it("is white and opaque for all-zero relevance", () => {
    expect(Array.from(colorize([0, 0]))).toEqual([255, 255, 255, 255, 255, 255, 255, 255]);
  });

  it("equals the Python colormap on the shared reference values", () => {
    expect(rgbOf(colorize(fixture.colormap.relevance))).toEqual(fixture.colormap.rgb);
  });
});
