import { describe, expect, it } from "vitest";
import { decodeArray, isArrayMeta, isEmpty, pngUrl } from "./codecs";

/** A view into the middle of a larger buffer, as the widget manager may hand it over. */
function viewOf(bytes: number[], offset = 3): DataView {
  const buffer = new ArrayBuffer(bytes.length + offset + 2);
  new Uint8Array(buffer).set(bytes, offset);
  return new DataView(buffer, offset, bytes.length);
}

function float32Bytes(values: number[]): number[] {
  const view = new DataView(new ArrayBuffer(4 * values.length));
  values.forEach((v, i) => view.setFloat32(4 * i, v, true));
  return Array.from(new Uint8Array(view.buffer));
}

describe("isEmpty", () => {
  it("treats null and zero-length views as empty", () => {
    expect(isEmpty(null)).toBe(true);
    expect(isEmpty(undefined)).toBe(true);
    expect(isEmpty(new DataView(new ArrayBuffer(0)))).toBe(true);
    expect(isEmpty(viewOf([1]))).toBe(false);
  });
});

describe("isArrayMeta", () => {
  it("accepts a shape of non-negative integers and a known dtype", () => {
    expect(isArrayMeta({ shape: [2, 3], dtype: "float32" })).toBe(true);
    expect(isArrayMeta({ shape: [], dtype: "uint8" })).toBe(true);
  });

  it("rejects anything else", () => {
    expect(isArrayMeta({})).toBe(false);
    expect(isArrayMeta(null)).toBe(false);
    expect(isArrayMeta({ shape: [2, -1], dtype: "float32" })).toBe(false);
    expect(isArrayMeta({ shape: [2.5], dtype: "float32" })).toBe(false);
    expect(isArrayMeta({ shape: [2], dtype: "float64" })).toBe(false);
  });
});

describe("decodeArray", () => {
  it("decodes little-endian float32 from an unaligned view", () => {
    const values = [1.5, -2.25, 0, 3e-8, 1024, -0.1];
    const { data, shape } = decodeArray(viewOf(float32Bytes(values)), { shape: [2, 3], dtype: "float32" });
    expect(data).toBeInstanceOf(Float32Array);
    expect(shape).toEqual([2, 3]);
    expect(Array.from(data)).toEqual(Array.from(new Float32Array(values)));
  });

  it("decodes uint8 into a copy that does not alias the message buffer", () => {
    const view = viewOf([0, 7, 255, 128]);
    const { data } = decodeArray(view, { shape: [4], dtype: "uint8" });
    expect(Array.from(data)).toEqual([0, 7, 255, 128]);
    expect(data.buffer).not.toBe(view.buffer);
  });

  it("names the expected and received sizes when they differ", () => {
    expect(() => decodeArray(viewOf([1, 2, 3]), { shape: [1, 1], dtype: "float32" })).toThrow(
      "array of shape [1, 1] and dtype float32 needs 4 bytes; got 3",
    );
  });
});

describe("pngUrl", () => {
  it("makes an object URL for a PNG blob holding exactly the view's bytes", async () => {
    const signature = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
    const url = pngUrl(viewOf(signature));
    expect(url).toMatch(/^blob:/);
    const response = await fetch(url);
    expect(response.headers.get("content-type")).toBe("image/png");
    expect(Array.from(new Uint8Array(await response.arrayBuffer()))).toEqual(signature);
    URL.revokeObjectURL(url);
  });
});
