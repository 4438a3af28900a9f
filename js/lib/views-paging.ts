/**
 * Paging and keyboard movement through the sample thumbnails (SampleView, js/sample.ts).
 *
 * Indices are dataset indices; a page holds `size` consecutive samples and the grid shows them in rows of
 * `columns`. Moving past the first or last thumbnail of a page lands on the neighbouring page.
 */

/** Thumbnails per grid row, at most. */
export const GRID_COLUMNS = 6;

/** How many pages `count` samples fill (at least one, so that an empty dataset shows an empty page). */
export function pageCount(count: number, size: number): number {
  return Math.max(1, Math.ceil(count / size));
}

/** The page showing sample `index`. */
export function pageOf(index: number, size: number): number {
  return Math.floor(index / size);
}

/** The first sample of `page` and the one after its last, clipped to the dataset. */
export function pageRange(page: number, size: number, count: number): { start: number; stop: number } {
  const start = Math.min(page * size, count);
  return { start, stop: Math.min(start + size, count) };
}

/** Columns of the thumbnail grid for a page size. */
export function columnsFor(size: number): number {
  return Math.max(1, Math.min(GRID_COLUMNS, size));
}

/**
 * The sample a key moves to from `index`: arrows by one thumbnail or one row, Home/End to the first or last
 * sample, clipped to the dataset; `null` for keys that do not move.
 */
export function moveIndex(index: number, key: string, columns: number, count: number): number | null {
  const steps: Record<string, number> = {
    ArrowLeft: -1,
    ArrowRight: 1,
    ArrowUp: -columns,
    ArrowDown: columns,
    Home: -Infinity,
    End: Infinity,
  };
  if (!Object.hasOwn(steps, key) || count === 0) return null;
  return Math.min(count - 1, Math.max(0, index + steps[key]));
}
