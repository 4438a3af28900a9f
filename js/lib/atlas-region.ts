/**
 * Drawing a region on the concept atlas (Achtibat et al. 2023, Sec. 3.3, Fig. 16): brush strokes, lasso polygons and
 * superpixel toggling on a boolean mask (`Uint8Array`, 1 inside, row-major `[height, width]`).
 *
 * Coordinates are in image pixels, continuous: pixel (column i, row j) covers [i, i+1) x [j, j+1) and its centre is
 * (i + 0.5, j + 0.5). A pixel belongs to a brush disc or a lasso polygon when its centre does.
 */

export interface Point {
  x: number;
  y: number;
}

export interface Grid {
  width: number;
  height: number;
}

/** The x where the edge a-b crosses the horizontal line at height y (both the scanline and the point test use it). */
function crossing(a: Point, b: Point, y: number): number {
  return ((b.x - a.x) * (y - a.y)) / (b.y - a.y) + a.x;
}

/** Even-odd rule: whether (x, y) lies inside the polygon (a ray to the right crosses an odd number of edges). */
export function pointInPolygon(x: number, y: number, polygon: readonly Point[]): boolean {
  let inside = false;
  for (let i = 0, j = polygon.length - 1; i < polygon.length; j = i++) {
    const a = polygon[i];
    const b = polygon[j];
    if (a.y > y !== b.y > y && x < crossing(a, b, y)) inside = !inside;
  }
  return inside;
}

/**
 * The pixels whose centres lie inside a polygon (even-odd rule), by scanlines: per row, the edges' crossings are
 * sorted and the pixels between each pair filled. Equal to testing every centre with `pointInPolygon`.
 */
export function rasterizePolygon(polygon: readonly Point[], grid: Grid): Uint8Array {
  const { width, height } = grid;
  const mask = new Uint8Array(width * height);
  if (polygon.length < 3) return mask;
  const crossings: number[] = [];
  for (let row = 0; row < height; row++) {
    const y = row + 0.5;
    crossings.length = 0;
    for (let i = 0, j = polygon.length - 1; i < polygon.length; j = i++) {
      const a = polygon[i];
      const b = polygon[j];
      if (a.y > y !== b.y > y) crossings.push(crossing(a, b, y));
    }
    crossings.sort((p, q) => p - q);
    for (let k = 0; k + 1 < crossings.length; k += 2) {
      // Centres c = column + 0.5 with crossings[k] <= c < crossings[k + 1].
      const start = Math.min(width, Math.max(0, Math.ceil(crossings[k] - 0.5)));
      const end = Math.min(width, Math.ceil(crossings[k + 1] - 0.5));
      mask.fill(1, row * width + start, row * width + Math.max(start, end));
    }
  }
  return mask;
}

/** Set the pixels whose centres lie within `radius` of `center` to `value`. */
export function stampDisc(mask: Uint8Array, grid: Grid, center: Point, radius: number, value: 0 | 1): void {
  const { width, height } = grid;
  const top = Math.max(0, Math.floor(center.y - radius));
  const bottom = Math.min(height - 1, Math.ceil(center.y + radius));
  const left = Math.max(0, Math.floor(center.x - radius));
  const right = Math.min(width - 1, Math.ceil(center.x + radius));
  const limit = radius * radius;
  for (let row = top; row <= bottom; row++) {
    const dy = row + 0.5 - center.y;
    for (let column = left; column <= right; column++) {
      const dx = column + 0.5 - center.x;
      if (dx * dx + dy * dy <= limit) mask[row * width + column] = value;
    }
  }
}

/** A brush stroke from `from` to `to`: discs stamped along the segment, at most half a radius apart. */
export function strokeBrush(
  mask: Uint8Array,
  grid: Grid,
  from: Point,
  to: Point,
  radius: number,
  value: 0 | 1,
): void {
  const length = Math.hypot(to.x - from.x, to.y - from.y);
  const steps = Math.max(1, Math.ceil(length / Math.max(0.5, radius / 2)));
  for (let step = 0; step <= steps; step++) {
    const t = step / steps;
    stampDisc(mask, grid, { x: from.x + t * (to.x - from.x), y: from.y + t * (to.y - from.y) }, radius, value);
  }
}

/** Set `mask` to `value` wherever `shape` is 1 (a lasso added to or cut out of the region). */
export function applyShape(mask: Uint8Array, shape: Uint8Array, value: 0 | 1): void {
  for (let i = 0; i < mask.length; i++) {
    if (shape[i] === 1) mask[i] = value;
  }
}

/** The superpixel label at an image position (clamped to the image). */
export function segmentAt(labels: Int32Array, grid: Grid, point: Point): number {
  const column = Math.min(grid.width - 1, Math.max(0, Math.floor(point.x)));
  const row = Math.min(grid.height - 1, Math.max(0, Math.floor(point.y)));
  return labels[row * grid.width + column];
}

/**
 * Add superpixel `label` to the region, or remove it when all its pixels are in the region already.
 * Returns whether it was added.
 */
export function toggleSegment(mask: Uint8Array, labels: Int32Array, label: number): boolean {
  let complete = true;
  for (let i = 0; i < labels.length && complete; i++) {
    if (labels[i] === label && mask[i] === 0) complete = false;
  }
  const value = complete ? 0 : 1;
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] === label) mask[i] = value;
  }
  return !complete;
}

/** How many pixels the region holds. */
export function regionSize(mask: Uint8Array): number {
  let count = 0;
  for (let i = 0; i < mask.length; i++) count += mask[i];
  return count;
}

/** Move a keyboard cursor by whole steps, keeping it on the image (pixel centres). */
export function moveCursor(cursor: Point, grid: Grid, dx: number, dy: number): Point {
  const clamp = (value: number, size: number): number => Math.min(size - 0.5, Math.max(0.5, value));
  return { x: clamp(cursor.x + dx, grid.width), y: clamp(cursor.y + dy, grid.height) };
}
