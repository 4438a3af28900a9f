import { describe, expect, it } from "vitest";
import { compose, decodePayload, heatmapPixels, type Pixels } from "./views-overlay";

function payload(values: number[], shape: number[]) {
  const data = new DataView(new Float32Array(values).buffer);
  return { data, shape, dtype: "float32" };
}

function solid(width: number, height: number, value: number): Pixels {
  return { width, height, rgba: new Uint8ClampedArray(4 * width * height).fill(value) };
}

describe("heatmaps from Array traits", () => {
  it("decode nothing as null and refuse malformed values", () => {
    expect(decodePayload(null)).toBeNull();
    expect(() => decodePayload({ data: [1, 2], shape: [2], dtype: "float32" })).toThrow(/expected an array/);
  });

  it("colour each heatmap of a stack with its own maximum (A.3.1)", () => {
    const stack = decodePayload(payload([2, -1, 0, 0, 10, 0, 0, -10], [2, 2, 2]));
    expect(stack).not.toBeNull();
    const [first, second] = heatmapPixels(stack!);
    expect([first.width, first.height]).toEqual([2, 2]);
    expect(Array.from(first.rgba.slice(0, 8))).toEqual([255, 0, 0, 255, 128, 128, 255, 255]);
    expect(Array.from(second.rgba.slice(0, 8))).toEqual([255, 0, 0, 255, 255, 255, 255, 255]);
    expect(Array.from(second.rgba.slice(12, 16))).toEqual([0, 0, 255, 255]);
  });

  it("read a single [H, W] heatmap as one", () => {
    expect(heatmapPixels(decodePayload(payload([1, 2, 3], [1, 3]))!)).toHaveLength(1);
    expect(() => heatmapPixels(decodePayload(payload([1, 2], [2]))!)).toThrow(/\[H, W\] or \[k, H, W\]/);
  });
});

describe("compose", () => {
  it("draws a heatmap over an image of its size (see blend.ts)", () => {
    const white = compose(solid(1, 1, 100), solid(1, 1, 255), 0.5); // no relevance: the image
    expect(Array.from(white!.rgba)).toEqual([100, 100, 100, 255]);
    const blue = { width: 1, height: 1, rgba: new Uint8ClampedArray([0, 0, 255, 255]) }; // the largest contradiction
    expect(Array.from(compose(solid(1, 1, 100), blue, 0.5)!.rgba)).toEqual([0, 0, 255, 255]);
  });

  it("shows the heatmap alone while the image has another size, and the image without a heatmap", () => {
    const heatmap = solid(2, 2, 200);
    expect(compose(solid(1, 1, 100), heatmap, 0.5)).toBe(heatmap);
    const image = solid(1, 1, 100);
    expect(compose(image, null, 0.5)).toBe(image);
    expect(compose(null, null, 0.5)).toBeNull();
  });
});
