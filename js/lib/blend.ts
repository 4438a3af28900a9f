/**
 * Drawing a coloured heatmap over an image, identical to `crp_widgets/render/images.overlay`.
 *
 * Each pixel's relevance covers the image with the pure colour of its sign (red supports, blue contradicts; the
 * hues of the paper's bwr map, Appendix A.3.1 of Achtibat et al. 2023) in proportion to its size. From the bwr
 * colour `(r, g, b)` of the normalised relevance `v`, `|v| = (255 - min(r, g, b)) / 255`; the weight is
 * `w = min(1, 2 * opacity * |v|)` and the pixel `(1 - w) * image + w * colour`, rounded half up, alpha opaque.
 * So pixels without relevance show the image as it is (in light and dark themes alike); at the default opacity
 * 0.5 the weight is `|v|`, and a larger opacity makes small relevance visible too.
 */

/** Blend an image (RGBA) with bwr heatmap colours (RGBA) of equal length; `opacity` is clipped to [0, 1]. */
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
    const m = Math.min(top[i], top[i + 1], top[i + 2]);
    const w = Math.min(1, (2 * a * (255 - m)) / 255);
    const colour = top[i] >= top[i + 2] ? [255, 0, 0] : [0, 0, 255];
    for (let c = 0; c < 3; c++) {
      out[i + c] = Math.floor((1 - w) * base[i + c] + w * colour[c] + 0.5);
    }
    out[i + 3] = 255;
  }
  return out;
}
