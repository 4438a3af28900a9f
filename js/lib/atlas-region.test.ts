import { describe, expect, it } from "vitest";
import {
  applyShape,
  moveCursor,
  type Point,
  pointInPolygon,
  rasterizePolygon,
  regionSize,
  segmentAt,
  stampDisc,
  strokeBrush,
  toggleSegment,
} from "./atlas-region";

const grid = { width: 20, height: 16 };

/** Every pixel centre tested on its own: what the scanline rasterisation must equal. */
function bruteForce(polygon: Point[], width: number, height: number): Uint8Array {
  const mask = new Uint8Array(width * height);
  for (let row = 0; row < height; row++) {
    for (let column = 0; column < width; column++) {
      mask[row * width + column] = pointInPolygon(column + 0.5, row + 0.5, polygon) ? 1 : 0;
    }
  }
  return mask;
}

function pixels(mask: Uint8Array, width: number): string[] {
  const on: string[] = [];
  mask.forEach((value, i) => value && on.push(`${i % width},${Math.floor(i / width)}`));
  return on;
}

describe("pointInPolygon", () => {
  const square = [
    { x: 1, y: 1 },
    { x: 5, y: 1 },
    { x: 5, y: 5 },
    { x: 1, y: 5 },
  ];

  it("tells inside from outside", () => {
    expect(pointInPolygon(3, 3, square)).toBe(true);
    expect(pointInPolygon(0.5, 3, square)).toBe(false);
    expect(pointInPolygon(3, 5.5, square)).toBe(false);
  });

  it("uses the even-odd rule for self-intersecting lassos", () => {
    // A bow tie: the two lobes are inside, the point where the edges cross is where they meet.
    const bowTie = [
      { x: 0, y: 0 },
      { x: 10, y: 10 },
      { x: 10, y: 0 },
      { x: 0, y: 10 },
    ];
    expect(pointInPolygon(2, 5, bowTie)).toBe(true);
    expect(pointInPolygon(8, 5, bowTie)).toBe(true);
    expect(pointInPolygon(5, 2, bowTie)).toBe(false);
  });
});

describe("rasterizePolygon", () => {
  it("fills the pixels whose centres lie inside a rectangle", () => {
    const mask = rasterizePolygon(
      [
        { x: 2, y: 3 },
        { x: 6, y: 3 },
        { x: 6, y: 5 },
        { x: 2, y: 5 },
      ],
      grid,
    );
    expect(regionSize(mask)).toBe(8);
    expect(pixels(mask, grid.width)).toEqual(["2,3", "3,3", "4,3", "5,3", "2,4", "3,4", "4,4", "5,4"]);
  });

  it("equals testing every pixel centre, for random lassos running off the image", () => {
    let seed = 7;
    const random = (): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    };
    for (let trial = 0; trial < 50; trial++) {
      const lasso = Array.from({ length: 3 + Math.floor(random() * 12) }, () => ({
        x: random() * 26 - 3,
        y: random() * 22 - 3,
      }));
      expect(pixels(rasterizePolygon(lasso, grid), grid.width)).toEqual(
        pixels(bruteForce(lasso, grid.width, grid.height), grid.width),
      );
    }
  });

  it("gives nothing for fewer than three points", () => {
    expect(regionSize(rasterizePolygon([{ x: 1, y: 1 }, { x: 9, y: 9 }], grid))).toBe(0);
  });
});

describe("brush", () => {
  it("stamps the pixels whose centres lie within the radius, clipped at the border", () => {
    const mask = new Uint8Array(grid.width * grid.height);
    stampDisc(mask, grid, { x: 0, y: 0 }, 2, 1);
    expect(pixels(mask, grid.width)).toEqual(["0,0", "1,0", "0,1"]); // (1.5, 1.5) lies 2.12 away
    stampDisc(mask, grid, { x: 10.5, y: 8.5 }, 1, 1);
    expect(pixels(mask, grid.width)).toContain("10,8");
    expect(pixels(mask, grid.width)).toContain("11,8");
    expect(pixels(mask, grid.width)).not.toContain("11,9");
  });

  it("covers a stroke without gaps, and erases with value 0", () => {
    const mask = new Uint8Array(grid.width * grid.height);
    strokeBrush(mask, grid, { x: 1.5, y: 8.5 }, { x: 18.5, y: 8.5 }, 1, 1);
    for (let column = 1; column <= 18; column++) expect(mask[8 * grid.width + column]).toBe(1);
    strokeBrush(mask, grid, { x: 5.5, y: 8.5 }, { x: 5.5, y: 8.5 }, 1, 0);
    expect(mask[8 * grid.width + 5]).toBe(0);
    expect(mask[8 * grid.width + 7]).toBe(1);
  });
});

describe("superpixels", () => {
  // Two superpixels: label 0 in the left half, label 1 in the right half.
  const labels = Int32Array.from({ length: grid.width * grid.height }, (_, i) => (i % grid.width < 10 ? 0 : 1));

  it("finds the superpixel under a point, clamped to the image", () => {
    expect(segmentAt(labels, grid, { x: 3.2, y: 4.9 })).toBe(0);
    expect(segmentAt(labels, grid, { x: 12, y: 1 })).toBe(1);
    expect(segmentAt(labels, grid, { x: 25, y: -3 })).toBe(1);
  });

  it("adds a superpixel, completes a partly selected one, and removes a complete one", () => {
    const mask = new Uint8Array(labels.length);
    expect(toggleSegment(mask, labels, 1)).toBe(true);
    expect(regionSize(mask)).toBe(160);
    expect(mask[0]).toBe(0);
    mask[0] = 1; // brushed into superpixel 0: a click completes it rather than removing it
    expect(toggleSegment(mask, labels, 0)).toBe(true);
    expect(regionSize(mask)).toBe(320);
    expect(toggleSegment(mask, labels, 1)).toBe(false);
    expect(regionSize(mask)).toBe(160);
    expect(mask[grid.width - 1]).toBe(0);
  });

  it("adds or cuts out a lasso shape", () => {
    const mask = new Uint8Array(labels.length).fill(1);
    const shape = new Uint8Array(labels.length);
    shape[5] = 1;
    applyShape(mask, shape, 0);
    expect(regionSize(mask)).toBe(labels.length - 1);
    expect(mask[5]).toBe(0);
  });
});

describe("moveCursor", () => {
  it("moves in whole steps and stays on pixel centres inside the image", () => {
    expect(moveCursor({ x: 10.5, y: 8.5 }, grid, 4, -2)).toEqual({ x: 14.5, y: 6.5 });
    expect(moveCursor({ x: 18.5, y: 0.5 }, grid, 4, -4)).toEqual({ x: 19.5, y: 0.5 });
  });
});
