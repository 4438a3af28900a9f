import { describe, expect, it } from "vitest";
import {
  barColour,
  barGeometry,
  barScale,
  conditionGroups,
  formatShare,
  rankedChannels,
  scrollToRow,
  shownRows,
  visibleRows,
} from "./views-bars";

describe("rankedChannels", () => {
  it("reads (channel, relevance, share) rows in order", () => {
    const rows = rankedChannels(new Float32Array([5, 2, 0.5, 1, -1, -0.25]), [2, 3]);
    expect(rows).toEqual([
      { channel: 5, relevance: 2, share: 0.5 },
      { channel: 1, relevance: -1, share: -0.25 },
    ]);
  });

  it("refuses other shapes", () => {
    expect(() => rankedChannels(new Float32Array(4), [2, 2])).toThrow(/\[C, 3\]/);
  });
});

describe("bars", () => {
  it("put the zero axis where negative and positive relevance leave room for each other", () => {
    const scale = barScale([3, 1, -1]);
    expect(scale.axis).toBeCloseTo(0.25);
    expect(barGeometry(3, scale)).toEqual({ left: 0.25, width: 0.75 });
    const negative = barGeometry(-1, scale);
    expect(negative.left).toBeCloseTo(0);
    expect(negative.width).toBeCloseTo(0.25);
  });

  it("start at the left edge when nothing contradicts, and are empty when nothing is relevant", () => {
    expect(barScale([2, 1, 0]).axis).toBe(0);
    expect(barGeometry(1, barScale([2, 1, 0]))).toEqual({ left: 0, width: 0.5 });
    expect(barGeometry(0, barScale([0, 0]))).toEqual({ left: 0, width: 0 });
  });

  it("ignore non-finite values", () => {
    const scale = barScale([Number.NaN, 1, Number.POSITIVE_INFINITY]);
    expect(scale).toEqual({ axis: 0, unit: 1 });
    expect(barGeometry(Number.NaN, scale).width).toBe(0);
  });

  it("are red when supporting and blue when contradicting (bwr)", () => {
    expect(barColour(0.3)).toBe("rgb(255, 51, 51)");
    expect(barColour(-2)).toBe("rgb(51, 51, 255)");
  });
});

describe("the virtual list", () => {
  it("renders the rows in view plus a margin", () => {
    expect(visibleRows(0, 100, 20, 512, 2)).toEqual({ start: 0, stop: 7 });
    expect(visibleRows(2000, 100, 20, 512, 2)).toEqual({ start: 98, stop: 107 });
    expect(visibleRows(10230, 100, 20, 512, 2)).toEqual({ start: 509, stop: 512 });
  });

  it("shows the top-k or every channel", () => {
    expect(shownRows(512, 10, false)).toBe(10);
    expect(shownRows(512, 10, true)).toBe(512);
    expect(shownRows(4, 10, false)).toBe(4);
  });

  it("scrolls just enough to bring a row into view", () => {
    expect(scrollToRow(3, 0, 100, 20)).toBe(0);
    expect(scrollToRow(10, 0, 100, 20)).toBe(120);
    expect(scrollToRow(2, 120, 100, 20)).toBe(40);
  });
});

describe("formatShare", () => {
  it("writes percentages with a real minus sign", () => {
    expect(formatShare(0.1234)).toBe("12.3 %");
    expect(formatShare(-0.04)).toBe("−4.0 %");
    expect(formatShare(-0.00001)).toBe("0.0 %");
    expect(formatShare(Number.NaN)).toBe("–");
  });
});

describe("conditionGroups", () => {
  it("lists non-empty conditions in layer order", () => {
    const groups = conditionGroups({ "features.8": [3, 5], "features.2": [1], "head": [] }, [
      "features.2",
      "features.8",
      "head",
    ]);
    expect(groups).toEqual([
      { layer: "features.2", channels: [1] },
      { layer: "features.8", channels: [3, 5] },
    ]);
  });
});
