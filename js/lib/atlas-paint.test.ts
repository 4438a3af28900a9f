import { describe, expect, it } from "vitest";
import { NONE, PALETTE, type AtlasPicture, displayScale, dotAt, onEdge, paintAtlas, paintOverlay } from "./atlas-paint";

const width = 16;
const height = 8;
const grid = { width, height };
// Superpixel 0: left half, 1: right half; the image is mid grey.
const labels = Int32Array.from({ length: width * height }, (_, i) => (i % width < 8 ? 0 : 1));
const image = new Uint8ClampedArray(width * height * 4).fill(128);

function picture(first: number[], second: number[], boundaries = true): AtlasPicture {
  return { width, height, image, labels, first: Uint8Array.from(first), second: Uint8Array.from(second), boundaries };
}

function at(rgba: Uint8ClampedArray, outWidth: number, x: number, y: number): number[] {
  const o = 4 * (y * outWidth + x);
  return Array.from(rgba.subarray(o, o + 4));
}

const fill = (colour: readonly number[]): number[] => [
  ...colour.map((c) => Math.floor(0.35 * 128 + 0.65 * c + 0.5)),
  255,
];

describe("paintAtlas", () => {
  it("fills a superpixel with its most relevant concept's colour over the image", () => {
    const rgba = paintAtlas(picture([2, NONE], [NONE, NONE]), 1);
    expect(rgba.length).toBe(width * height * 4);
    expect(at(rgba, width, 3, 3)).toEqual(fill(PALETTE[2]));
  });

  it("washes out superpixels below the threshold to grey", () => {
    const rgba = paintAtlas(picture([2, NONE], [NONE, NONE]), 1);
    const washed = Math.floor(0.45 * 128 + 0.55 * 128 + 0.5);
    expect(at(rgba, width, 12, 3)).toEqual([washed, washed, washed, 255]);
  });

  it("dots a superpixel with its second concept's colour", () => {
    const scale = 4;
    const rgba = paintAtlas(picture([0, 1], [3, NONE]), scale);
    const outWidth = width * scale;
    let dots = 0;
    for (let y = 1; y < height * scale - 1; y++) {
      for (let x = 1; x < (width / 2) * scale - 1; x++) {
        expect(at(rgba, outWidth, x, y)).toEqual(fill(PALETTE[dotAt(x, y) ? 3 : 0]));
        if (dotAt(x, y)) dots++;
      }
    }
    expect(dots).toBeGreaterThan(0);
    // The other superpixel has no second concept: no dots.
    expect(at(rgba, outWidth, 8 * scale + 3, 3)).toEqual(fill(PALETTE[1]));
  });

  it("darkens the border between superpixels, one canvas pixel on each side", () => {
    const scale = 3;
    const rgba = paintAtlas(picture([0, 0], [NONE, NONE]), scale);
    const outWidth = width * scale;
    const inner = at(rgba, outWidth, 4 * scale + 1, 4);
    expect(at(rgba, outWidth, 8 * scale - 1, 4)).not.toEqual(inner);
    expect(at(rgba, outWidth, 8 * scale, 4)).not.toEqual(inner);
    expect(at(rgba, outWidth, 8 * scale - 2, 4)).toEqual(inner);
    const flat = paintAtlas(picture([0, 0], [NONE, NONE], false), scale);
    expect(at(flat, outWidth, 8 * scale - 1, 4)).toEqual(inner);
  });
});

describe("onEdge", () => {
  it("marks only the outermost canvas pixels of a block next to another class", () => {
    const classes = [0, 1, 0, 0];
    const small = { width: 2, height: 2 };
    expect(onEdge(classes, small, 4, 3, 1)).toBe(true); // right edge of (0,0), next to (1,0)
    expect(onEdge(classes, small, 4, 2, 1)).toBe(false);
    expect(onEdge(classes, small, 4, 1, 3)).toBe(false); // bottom of (0,0): (0,1) is the same class
    expect(onEdge(classes, small, 4, 5, 4)).toBe(true); // top of (1,1), below (1,0) of class 1
    expect(onEdge(classes, small, 4, 6, 6)).toBe(false); // inside (1,1)
  });
});

describe("paintOverlay", () => {
  it("is transparent without a region or cursor", () => {
    const rgba = paintOverlay(grid, 2, { region: null, cursor: null });
    expect(rgba.every((v) => v === 0)).toBe(true);
  });

  it("dims the outside, outlines the region white inside and black outside", () => {
    const region = Uint8Array.from(labels, (l) => (l === 1 ? 1 : 0));
    const scale = 2;
    const rgba = paintOverlay(grid, scale, { region, cursor: null });
    const outWidth = width * scale;
    expect(at(rgba, outWidth, 2, 2)).toEqual([0, 0, 0, 80]);
    expect(at(rgba, outWidth, 12 * scale, 4)).toEqual([0, 0, 0, 0]);
    expect(at(rgba, outWidth, 8 * scale, 4)).toEqual([255, 255, 255, 255]);
    expect(at(rgba, outWidth, 8 * scale - 1, 4)).toEqual([0, 0, 0, 255]);
  });

  it("outlines the cursor's superpixel", () => {
    const cursor = Uint8Array.from(labels, (l) => (l === 0 ? 1 : 0));
    const rgba = paintOverlay(grid, 1, { region: null, cursor });
    expect(at(rgba, width, 7, 3)).toEqual([255, 212, 0, 255]);
    expect(at(rgba, width, 3, 3)).toEqual([0, 0, 0, 0]);
  });
});

describe("displayScale", () => {
  it("scales small images up to about 320 canvas pixels and never below 1", () => {
    expect(displayScale({ width: 64, height: 48 })).toBe(5);
    expect(displayScale({ width: 224, height: 224 })).toBe(1);
    expect(displayScale({ width: 1000, height: 800 })).toBe(1);
  });
});
