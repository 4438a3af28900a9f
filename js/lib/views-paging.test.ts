import { describe, expect, it } from "vitest";
import { columnsFor, moveIndex, pageCount, pageOf, pageRange } from "./views-paging";

describe("pages", () => {
  it("count full and partial pages, and at least one", () => {
    expect(pageCount(24, 12)).toBe(2);
    expect(pageCount(25, 12)).toBe(3);
    expect(pageCount(0, 12)).toBe(1);
  });

  it("find the page of a sample and the samples of a page", () => {
    expect(pageOf(0, 12)).toBe(0);
    expect(pageOf(11, 12)).toBe(0);
    expect(pageOf(12, 12)).toBe(1);
    expect(pageRange(2, 12, 30)).toEqual({ start: 24, stop: 30 });
    expect(pageRange(5, 12, 30)).toEqual({ start: 30, stop: 30 });
  });

  it("lay a page out in rows of at most six", () => {
    expect(columnsFor(12)).toBe(6);
    expect(columnsFor(4)).toBe(4);
  });
});

describe("moveIndex", () => {
  it("moves by one thumbnail or one row", () => {
    expect(moveIndex(7, "ArrowRight", 6, 100)).toBe(8);
    expect(moveIndex(7, "ArrowLeft", 6, 100)).toBe(6);
    expect(moveIndex(7, "ArrowDown", 6, 100)).toBe(13);
    expect(moveIndex(7, "ArrowUp", 6, 100)).toBe(1);
  });

  it("crosses page boundaries and stops at the ends of the dataset", () => {
    expect(pageOf(moveIndex(11, "ArrowRight", 6, 100) ?? -1, 12)).toBe(1);
    expect(moveIndex(2, "ArrowUp", 6, 100)).toBe(0);
    expect(moveIndex(98, "ArrowDown", 6, 100)).toBe(99);
    expect(moveIndex(40, "Home", 6, 100)).toBe(0);
    expect(moveIndex(40, "End", 6, 100)).toBe(99);
  });

  it("ignores other keys and empty datasets", () => {
    expect(moveIndex(3, "Enter", 6, 100)).toBeNull();
    expect(moveIndex(0, "ArrowRight", 6, 0)).toBeNull();
  });
});
