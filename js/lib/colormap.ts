/**
 * The heatmap colours of Achtibat et al. 2023 (Appendix A.3.1), identical to `crp_widgets/render/colormap.py`:
 * relevance divided by its maximum absolute value to [-1, 1], coloured with matplotlib's `bwr`
 * (blue at -1, white at 0, red at +1, linear in between), bytes rounded half up.
 */

export type RGB = [number, number, number];

/** Maximum absolute value, ignoring non-finite entries; 0 for an empty input. */
export function maxAbs(values: ArrayLike<number>): number {
  let peak = 0;
  for (let i = 0; i < values.length; i++) {
    const v = Math.abs(values[i]);
    if (v > peak && Number.isFinite(v)) peak = v;
  }
  return peak;
}

/** `bwr` colour of a value in [-1, 1] (clipped), as floats in [0, 1]. */
export function bwr(value: number): RGB {
  const v = Math.min(1, Math.max(-1, value));
  return [Math.min(1, 1 + v), 1 - Math.abs(v), Math.min(1, 1 - v)];
}

/** Intensity in [0, 1] (clipped) to a byte, rounding half up. */
export function toByte(value: number): number {
  return Math.floor(Math.min(1, Math.max(0, value)) * 255 + 0.5);
}

/**
 * Colour relevance values as RGBA bytes (alpha 255), normalised by their maximum absolute value.
 * Non-finite values are coloured as 0 (white).
 */
export function colorize(values: ArrayLike<number>): Uint8ClampedArray<ArrayBuffer> {
  const peak = maxAbs(values);
  const rgba = new Uint8ClampedArray(4 * values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    const normalized = peak > 0 && Number.isFinite(v) ? v / peak : 0;
    const [r, g, b] = bwr(normalized);
    rgba[4 * i] = toByte(r);
    rgba[4 * i + 1] = toByte(g);
    rgba[4 * i + 2] = toByte(b);
    rgba[4 * i + 3] = 255;
  }
  return rgba;
}
