import { describe, expect, it } from "vitest";
import { groupRuns, layerChoices, OTHER_GROUP } from "./layer-menu";

const GROUPS = [
  { group: "stem", layers: ["conv1"] },
  { group: "layer1", layers: ["layer1.0", "layer1.1"] },
  { group: "layer4", layers: ["layer4.0", "layer4.1"] },
];

describe("layerChoices", () => {
  it("lists every group's layers in order, each with its group", () => {
    const choices = layerChoices(GROUPS, "layer4.1");
    expect(choices.map((c) => c.value)).toEqual(["conv1", "layer1.0", "layer1.1", "layer4.0", "layer4.1"]);
    expect(choices.map((c) => c.group)).toEqual(["stem", "layer1", "layer1", "layer4", "layer4"]);
  });

  it("adds a layer set from Python that no group lists, in a group of its own", () => {
    const choices = layerChoices(GROUPS, "layer4.1.conv2");
    expect(choices.at(-1)).toEqual({ value: "layer4.1.conv2", label: "layer4.1.conv2", group: OTHER_GROUP });
    expect(choices).toHaveLength(6);
    expect(layerChoices(GROUPS, "")).toHaveLength(5);
  });

  it("labels entries with the given function", () => {
    const counts: Record<string, number> = { conv1: 64 };
    const choices = layerChoices([GROUPS[0]], "", (name) => `${name} (${counts[name]})`);
    expect(choices[0].label).toBe("conv1 (64)");
  });
});

describe("groupRuns", () => {
  it("groups consecutive entries of one group and keeps ungrouped entries apart", () => {
    const runs = groupRuns([
      { value: "a", label: "a" },
      { value: "b", label: "b", group: "g" },
      { value: "c", label: "c", group: "g" },
      { value: "d", label: "d", group: "h" },
    ]);
    expect(runs.map(([group, entries]) => [group, entries.map((e) => e.value)])).toEqual([
      [undefined, ["a"]],
      ["g", ["b", "c"]],
      ["h", ["d"]],
    ]);
  });
});
