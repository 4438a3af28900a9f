import { describe, expect, it } from "vitest";
import { scaleLabels } from "./colour-bar";

describe("scaleLabels", () => {
  it("labels both ends with the largest |R| and the middle with zero", () => {
    expect(scaleLabels(3.14159)).toEqual(["−3.14", "0", "+3.14"]);
    expect(scaleLabels(0.00123)).toEqual(["−1.23e-3", "0", "+1.23e-3"]);
  });

  it("names the scale in words when there is no single value", () => {
    expect(scaleLabels(null)).toEqual(["−max |R|", "0", "+max |R|"]);
    expect(scaleLabels(0)).toEqual(["−max |R|", "0", "+max |R|"]);
    expect(scaleLabels(Number.NaN)).toEqual(["−max |R|", "0", "+max |R|"]);
  });
});
