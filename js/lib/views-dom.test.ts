import { describe, expect, it } from "vitest";
import { coalesced } from "./views-dom";

describe("coalesced", () => {
  it("runs a task once after a burst of change events, and again after the next burst", async () => {
    let runs = 0;
    const request = coalesced(() => runs++);
    request();
    request();
    request();
    expect(runs).toBe(0);
    await Promise.resolve();
    expect(runs).toBe(1);
    request();
    await Promise.resolve();
    expect(runs).toBe(2);
  });
});
