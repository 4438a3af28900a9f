/**
 * Decoding of binary buffers sent by the kernel.
 *
 * A `Bytes` trait arrives as a `DataView`. PNG bytes become an object URL; typed arrays arrive as raw
 * little-endian bytes without a header, described by a sibling JSON trait `{shape, dtype}`
 * (written by `crp_widgets/render/buffers.py`).
 */

export type DType = "float32" | "uint8";

export interface ArrayMeta {
  shape: number[];
  dtype: DType;
}

export interface DecodedArray {
  data: Float32Array | Uint8Array;
  shape: number[];
}

const ITEM_SIZE: Record<DType, number> = { float32: 4, uint8: 1 };

/** True when a `Bytes` trait holds nothing (the kernel sent `b""`, or no value yet). */
export function isEmpty(view: DataView | null | undefined): view is null | undefined {
  return view == null || view.byteLength === 0;
}

/** Copy the bytes of a view into a standalone `ArrayBuffer`. */
function copyBytes(view: DataView): ArrayBuffer {
  const bytes = new Uint8Array(view.byteLength);
  bytes.set(new Uint8Array(view.buffer, view.byteOffset, view.byteLength));
  return bytes.buffer;
}

/** An object URL for PNG bytes; the caller revokes it with `URL.revokeObjectURL` when done. */
export function pngUrl(view: DataView): string {
  return URL.createObjectURL(new Blob([copyBytes(view)], { type: "image/png" }));
}

/** Check a JSON description of an array, so that a malformed one fails with a clear message. */
export function isArrayMeta(meta: unknown): meta is ArrayMeta {
  if (typeof meta !== "object" || meta === null) return false;
  const { shape, dtype } = meta as Record<string, unknown>;
  return (
    Array.isArray(shape) &&
    shape.every((n) => Number.isInteger(n) && n >= 0) &&
    typeof dtype === "string" &&
    Object.hasOwn(ITEM_SIZE, dtype)
  );
}

/** Decode raw little-endian bytes into a typed array of the described shape. */
export function decodeArray(view: DataView, meta: ArrayMeta): DecodedArray {
  const count = meta.shape.reduce((a, b) => a * b, 1);
  const expected = count * ITEM_SIZE[meta.dtype];
  if (view.byteLength !== expected) {
    throw new Error(
      `array of shape [${meta.shape.join(", ")}] and dtype ${meta.dtype} needs ${expected} bytes; got ${view.byteLength}`,
    );
  }
  const shape = [...meta.shape];
  if (meta.dtype === "uint8") {
    return { data: new Uint8Array(copyBytes(view)), shape };
  }
  const data = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    data[i] = view.getFloat32(4 * i, true);
  }
  return { data, shape };
}
