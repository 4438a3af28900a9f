/**
 * Heatmaps over images for the SampleView and the ConditionalHeatmaps (js/sample.ts, js/heatmaps.ts).
 *
 * Heatmaps arrive as `Array` traits (`{data, shape, dtype}`, float32) and are coloured here, each normalised by
 * its own maximum absolute value (bwr, Appendix A.3.1); images arrive as PNG bytes. A heatmap is blended over
 * the image when both have the same size; while a new image is still on its way, the heatmap shows alone.
 */
import { blend } from "./blend";
import { type DecodedArray, decodeArray, isArrayMeta, isEmpty, pngUrl } from "./codecs";
import { colorize } from "./colormap";

export interface Pixels {
  width: number;
  height: number;
  rgba: Uint8ClampedArray<ArrayBuffer>;
}

/** Decode an `Array` trait's value (`null` when the kernel sent none). */
export function decodePayload(payload: unknown): DecodedArray | null {
  if (payload === null || payload === undefined) return null;
  const { data } = payload as { data?: unknown };
  if (!(data instanceof DataView) || !isArrayMeta(payload)) {
    throw new Error(`expected an array {data, shape, dtype}; got ${JSON.stringify(payload)}`);
  }
  return decodeArray(data, payload);
}

/** Colour the heatmaps of a `[H, W]` or `[k, H, W]` array, each normalised on its own. */
export function heatmapPixels(array: DecodedArray): Pixels[] {
  const { data, shape } = array;
  if (shape.length !== 2 && shape.length !== 3) {
    throw new Error(`heatmaps are [H, W] or [k, H, W] arrays; got shape [${shape.join(", ")}]`);
  }
  const [count, height, width] = shape.length === 2 ? [1, shape[0], shape[1]] : shape;
  const size = height * width;
  return Array.from({ length: count }, (_, i) => ({
    width,
    height,
    rgba: colorize(data.subarray(i * size, (i + 1) * size)),
  }));
}

/** What a canvas shows: the heatmap blended over the image, or whichever of them there is. */
export function compose(image: Pixels | null, heatmap: Pixels | null, opacity: number): Pixels | null {
  if (image !== null && heatmap !== null && image.width === heatmap.width && image.height === heatmap.height) {
    return { ...image, rgba: blend(image.rgba, heatmap.rgba, opacity) };
  }
  return heatmap ?? image;
}

/** Draw pixels on a canvas (hidden when there are none). */
export function paint(canvas: HTMLCanvasElement, pixels: Pixels | null): void {
  canvas.hidden = pixels === null;
  if (pixels === null) return;
  canvas.width = pixels.width;
  canvas.height = pixels.height;
  canvas.getContext("2d")?.putImageData(new ImageData(pixels.rgba, pixels.width, pixels.height), 0, 0);
}

/** Decode PNG bytes into RGBA pixels. */
export async function decodePng(view: DataView): Promise<Pixels> {
  const url = pngUrl(view);
  try {
    const image = new Image();
    image.src = url;
    await image.decode();
    const { naturalWidth: width, naturalHeight: height } = image;
    const scratch = document.createElement("canvas");
    scratch.width = width;
    scratch.height = height;
    const context = scratch.getContext("2d");
    if (context === null) throw new Error("the browser gave no 2D canvas context");
    context.drawImage(image, 0, 0);
    return { width, height, rgba: context.getImageData(0, 0, width, height).data };
  } finally {
    URL.revokeObjectURL(url);
  }
}

/** The latest image of a PNG trait, decoded; an older decode that finishes late is dropped. */
export class ImageSlot {
  pixels: Pixels | null = null;
  private request = 0;

  /** Decode `view`; resolves to whether this is still the newest image (and was stored). */
  async load(view: DataView | null | undefined): Promise<boolean> {
    const request = ++this.request;
    const pixels = isEmpty(view) ? null : await decodePng(view);
    if (request !== this.request) return false;
    this.pixels = pixels;
    return true;
  }
}
