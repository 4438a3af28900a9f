import { describe, expect, it } from "vitest";
import { formatValue } from "./gallery-atlas-controls";

describe("formatValue", () => {
  it("shows three significant digits, and exponents for very small or large values", () => {
    expect(formatValue(7.3512)).toBe("7.35");
    expect(formatValue(-28.94)).toBe("-28.9");
    expect(formatValue(0)).toBe("0.00");
    expect(formatValue(2.345e-5)).toBe("2.35e-5");
    expect(formatValue(-123456)).toBe("-1.23e+5");
  });
});
