/**
 * Painting the concept atlas (Achtibat et al. 2023, Sec. 3.3, Fig. 15): every superpixel filled with the colour of its
 * most relevant concept and dotted with the colour of the second most relevant one; superpixels below the density
 * threshold show the image, washed out. The region drawn on top is a separate transparent overlay: the outside dimmed,
 * its outline in white inside and black outside, and the keyboard cursor's superpixel outlined in yellow.
 *
 * The picture is painted at an integer `scale` (each image pixel a scale x scale block), so outlines and dots are
 * one canvas pixel fine whatever the image size.
 */
import type { Grid } from "./atlas-region";

export type RGB = readonly [number, number, number];

/** "No concept" in the per-superpixel assignment sent by the kernel. */
export const NONE = 255;

/** One colour per concept position (Tableau 10 and two more), so up to 12 concepts. */
export const PALETTE: readonly RGB[] = [
  [78, 121, 167],
  [242, 142, 43],
  [225, 87, 89],
  [118, 183, 178],
  [89, 161, 79],
  [237, 201, 72],
  [176, 122, 161],
  [255, 157, 167],
  [156, 117, 95],
  [186, 176, 172],
  [23, 190, 207],
  [188, 189, 34],
];

const FILL = 0.65; // weight of the concept colour over the image
const WASH = 0.55; // weight of mid-grey over the grey image where no concept is shown
const WASH_TO = 128; // mid-grey: a washed-out superpixel neither glares in a dark theme nor vanishes in a light one
const DOT_PERIOD = 12;
const DOT_RADIUS2 = 9;
const BOUNDARY: RGB = [40, 40, 40];
const CURSOR: RGB = [255, 212, 0];
const DIM_ALPHA = 80;

export interface AtlasPicture extends Grid {
  /** RGBA bytes of the image, `width * height * 4`. */
  image: ArrayLike<number>;
  /** Superpixel label of every pixel. */
  labels: Int32Array;
  /** Per superpixel: position of the most / second most relevant concept, or `NONE`. */
  first: Uint8Array;
  second: Uint8Array;
  /** Draw superpixel boundaries (not in the single-pixel atlas). */
  boundaries: boolean;
}

/** CSS colour of a concept position. */
export function conceptColor(position: number): string {
  const [r, g, b] = PALETTE[position % PALETTE.length];
  return `rgb(${r}, ${g}, ${b})`;
}

/** The integer scale that shows an image about `target` canvas pixels wide (at least 1). */
export function displayScale(grid: Grid, target = 320): number {
  return Math.max(1, Math.round(target / Math.max(grid.width, grid.height)));
}

/** Whether canvas pixel (x, y) lies on a dot of the pattern that marks the second most relevant concept. */
export function dotAt(x: number, y: number): boolean {
  const dx = (x % DOT_PERIOD) - (DOT_PERIOD - 1) / 2;
  const dy = (y % DOT_PERIOD) - (DOT_PERIOD - 1) / 2;
  return dx * dx + dy * dy <= DOT_RADIUS2;
}

function mix(base: number, top: number, weight: number): number {
  return Math.floor((1 - weight) * base + weight * top + 0.5);
}

/**
 * Whether canvas pixel (x, y) lies on the border between image pixels of different classes (`classes` gives the
 * class of every image pixel): the outermost canvas pixels of a block whose neighbouring block differs.
 */
export function onEdge(classes: ArrayLike<number>, grid: Grid, scale: number, x: number, y: number): boolean {
  const column = Math.floor(x / scale);
  const row = Math.floor(y / scale);
  const here = classes[row * grid.width + column];
  const differs = (c: number, r: number): boolean => classes[r * grid.width + c] !== here;
  return (
    (x % scale === scale - 1 && column + 1 < grid.width && differs(column + 1, row)) ||
    (x % scale === 0 && column > 0 && differs(column - 1, row)) ||
    (y % scale === scale - 1 && row + 1 < grid.height && differs(column, row + 1)) ||
    (y % scale === 0 && row > 0 && differs(column, row - 1))
  );
}

/** Paint the atlas: RGBA bytes of `(width * scale) x (height * scale)` canvas pixels. */
export function paintAtlas(picture: AtlasPicture, scale: number): Uint8ClampedArray<ArrayBuffer> {
  const { width, height, image, labels, first, second } = picture;
  const outWidth = width * scale;
  const out = new Uint8ClampedArray(outWidth * height * scale * 4);
  for (let y = 0; y < height * scale; y++) {
    for (let x = 0; x < outWidth; x++) {
      const pixel = Math.floor(y / scale) * width + Math.floor(x / scale);
      const segment = labels[pixel];
      const o = 4 * (y * outWidth + x);
      let rgb: RGB;
      if (first[segment] === NONE) {
        const grey = 0.299 * image[4 * pixel] + 0.587 * image[4 * pixel + 1] + 0.114 * image[4 * pixel + 2];
        rgb = [mix(grey, WASH_TO, WASH), mix(grey, WASH_TO, WASH), mix(grey, WASH_TO, WASH)];
      } else {
        const concept = second[segment] !== NONE && dotAt(x, y) ? second[segment] : first[segment];
        const colour = PALETTE[concept % PALETTE.length];
        rgb = [
          mix(image[4 * pixel], colour[0], FILL),
          mix(image[4 * pixel + 1], colour[1], FILL),
          mix(image[4 * pixel + 2], colour[2], FILL),
        ];
      }
      if (picture.boundaries && onEdge(labels, picture, scale, x, y)) {
        rgb = [mix(rgb[0], BOUNDARY[0], 0.6), mix(rgb[1], BOUNDARY[1], 0.6), mix(rgb[2], BOUNDARY[2], 0.6)];
      }
      out[o] = rgb[0];
      out[o + 1] = rgb[1];
      out[o + 2] = rgb[2];
      out[o + 3] = 255;
    }
  }
  return out;
}

export interface Overlay {
  /** The region (1 inside), or null. */
  region: Uint8Array | null;
  /** Pixels of the superpixel under the keyboard cursor (1 inside), or null. */
  cursor: Uint8Array | null;
}

/** Paint the region and cursor overlay: transparent RGBA bytes of `(width * scale) x (height * scale)`. */
export function paintOverlay(grid: Grid, scale: number, overlay: Overlay): Uint8ClampedArray<ArrayBuffer> {
  const outWidth = grid.width * scale;
  const out = new Uint8ClampedArray(outWidth * grid.height * scale * 4);
  const { region, cursor } = overlay;
  const hasRegion = region !== null && region.some((v) => v === 1);
  const put = (o: number, rgb: RGB, alpha: number): void => {
    out[o] = rgb[0];
    out[o + 1] = rgb[1];
    out[o + 2] = rgb[2];
    out[o + 3] = alpha;
  };
  for (let y = 0; y < grid.height * scale; y++) {
    for (let x = 0; x < outWidth; x++) {
      const pixel = Math.floor(y / scale) * grid.width + Math.floor(x / scale);
      const o = 4 * (y * outWidth + x);
      if (cursor !== null && onEdge(cursor, grid, scale, x, y)) {
        put(o, CURSOR, 255);
      } else if (hasRegion && region !== null) {
        const inside = region[pixel] === 1;
        if (onEdge(region, grid, scale, x, y)) put(o, inside ? [255, 255, 255] : [0, 0, 0], 255);
        else if (!inside) put(o, [0, 0, 0], DIM_ALPHA);
      }
    }
  }
  return out;
}
