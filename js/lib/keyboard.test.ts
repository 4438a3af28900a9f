import { describe, expect, it } from "vitest";
import { isControlKey } from "./keyboard";

const plain = { shiftKey: false, ctrlKey: false, altKey: false, metaKey: false };

describe("isControlKey", () => {
  it("keeps the keys that sliders and buttons use", () => {
    for (const key of ["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "Home", "End", "PageUp", "Enter", " "]) {
      expect(isControlKey({ ...plain, key })).toBe(true);
    }
  });

  it("lets other keys and modified keys through to JupyterLab", () => {
    expect(isControlKey({ ...plain, key: "a" })).toBe(false);
    expect(isControlKey({ ...plain, key: "Escape" })).toBe(false);
    expect(isControlKey({ ...plain, key: "Enter", shiftKey: true })).toBe(false);
    expect(isControlKey({ ...plain, key: "ArrowDown", ctrlKey: true })).toBe(false);
  });
});
