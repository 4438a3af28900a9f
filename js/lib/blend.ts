/**
 * Blending of a coloured heatmap over an image, identical to `crp_widgets/render/images.overlay`:
 * `(1 - opacity) * image + opacity * colour`, rounded half up, alpha kept opaque.
 */

/** Blend two RGBA buffers of equal length; `opacity` is clipped to [0, 1]. */
export function blend(
  base: ArrayLike<number>,
  top: ArrayLike<number>,
  opacity: number,
): Uint8ClampedArray<ArrayBuffer> {
  if (base.length !== top.length || base.length % 4 !== 0) {
    throw new Error(`cannot blend RGBA buffers of lengths ${base.length} and ${top.length}`);
  }
  const a = Math.min(1, Math.max(0, opacity));
  const out = new Uint8ClampedArray(base.length);
  for (let i = 0; i < base.length; i += 4) {
    for (let c = 0; c < 3; c++) {
      out[i + c] = Math.floor((1 - a) * base[i + c] + a * top[i + c] + 0.5);
    }
    out[i + 3] = 255;
  }
  return out;
}
