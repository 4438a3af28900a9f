import { describe, expect, it } from "vitest";
import { coalesced, formatValue } from "./gallery-atlas-controls";

describe("formatValue", () => {
  it("shows three significant digits, and exponents for very small or large values", () => {
    expect(formatValue(7.3512)).toBe("7.35");
    expect(formatValue(-28.94)).toBe("-28.9");
    expect(formatValue(0)).toBe("0.00");
    expect(formatValue(2.345e-5)).toBe("2.35e-5");
    expect(formatValue(-123456)).toBe("-1.23e+5");
  });
});

describe("coalesced", () => {
  it("runs an update once for all calls made in the same task", async () => {
    let runs = 0;
    const update = coalesced(() => runs++);
    update();
    update();
    update();
    expect(runs).toBe(0);
    await Promise.resolve();
    expect(runs).toBe(1);
    update();
    await Promise.resolve();
    expect(runs).toBe(2);
  });
});
