import { describe, expect, it } from "vitest";
import { PageModel } from "./export-model";

function recorder() {
  const saved: string[][] = [];
  const messages: Record<string, unknown>[] = [];
  return { saved, messages, receiver: { save: (names: string[]) => saved.push(names), message: (m: Record<string, unknown>) => messages.push(m) } };
}

describe("the model a view gets in an exported page", () => {
  it("shows a change at once and hands saved traits and messages to the page after the event", async () => {
    const { saved, messages, receiver } = recorder();
    const model = new PageModel({ opacity: 0.5 }, receiver);
    const seen: string[] = [];
    model.on("change:opacity", () => seen.push(String(model.get("opacity"))));
    model.set("opacity", 0.7);
    model.save_changes();
    model.send({ type: "toggle", channel: 3 });
    expect(seen).toEqual(["0.7"]);
    expect(saved).toEqual([]); // like a kernel, the page answers after the event
    await Promise.resolve();
    expect(saved).toEqual([["opacity"]]);
    expect(messages).toEqual([{ type: "toggle", channel: 3 }]);
    model.save_changes(); // nothing left to save
    await Promise.resolve();
    expect(saved).toHaveLength(1);
  });

  it("fires a change per changed trait, or when forced, and stops after off", () => {
    const model = new PageModel({ a: 1, b: [1] }, recorder().receiver);
    const seen: string[] = [];
    const handler = (): void => void seen.push("a");
    model.on("change:a", handler);
    model.on("change:b", () => seen.push("b"));
    model.on("change", () => seen.push("any"));
    const list = model.get("b");
    expect(model.update({ a: 1, b: list })).toEqual([]);
    expect(model.update({ a: 2, b: list })).toEqual(["a"]);
    expect(model.update({ a: 2 }, ["a"])).toEqual(["a"]);
    model.off("change:a", handler);
    model.update({ a: 3 });
    expect(seen).toEqual(["a", "any", "a", "any", "any"]);
    expect(model.get("a")).toBe(3);
  });
});
