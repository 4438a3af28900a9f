import { describe, expect, it } from "vitest";
import { accuracyText, encodeReference, formatNumber, parseReference } from "./concept-basket";

describe("concept basket payloads", () => {
  it("round-trips a reference", () => {
    expect(parseReference(encodeReference({ dataset: "dataset", index: 7 }))).toEqual({ dataset: "dataset", index: 7 });
  });

  it("refuses what is not a reference", () => {
    expect(parseReference("")).toBeNull();
    expect(parseReference(null)).toBeNull();
    expect(parseReference("not json")).toBeNull();
    expect(parseReference("[1, 2]")).toBeNull();
    expect(parseReference('{"dataset": "d", "index": -1}')).toBeNull();
    expect(parseReference('{"dataset": "d", "index": 1.5}')).toBeNull();
    expect(parseReference('{"dataset": 3, "index": 1}')).toBeNull();
  });

  it("formats numbers and accuracy", () => {
    expect(formatNumber(null)).toBe("–");
    expect(formatNumber(Number.NaN)).toBe("–");
    expect(formatNumber(0.5)).toBe("0.500");
    expect(formatNumber(0.001234)).toBe("1.23e-3");
    expect(accuracyText({})).toBe("");
    expect(accuracyText({ accuracy: 0.975, positives: 10, negatives: 90, layer: "l" })).toBe(
      "held-out balanced accuracy 97.5% at l (10 concept / 90 other positions)",
    );
  });
});
