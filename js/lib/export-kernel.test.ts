import { describe, expect, it } from "vitest";
import { type ExportData, PageKernel, row, takeRows, VIEWS } from "./export-kernel";

/** A `[k, 2]` float32 array whose row i holds (i, i + 0.5). */
function rows(count: number) {
  const values = Array.from({ length: count }, (_, i) => [i, i + 0.5]).flat();
  return { data: new DataView(new Float32Array(values).buffer), shape: [count, 2], dtype: "float32" };
}

function floats(value: unknown): number[] {
  const { data } = value as { data: DataView };
  return Array.from(new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)));
}

const png = (byte: number): DataView => new DataView(new Uint8Array([137, 80, 78, 71, byte]).buffer);

/**
 * Data as crp_widgets/widgets/export.py writes it: samples 3 and 7, layers "a" (channels 5, 1, 2 held for sample 3)
 * and "b"; references of channels 5 and 1 of "a"; the graph of channel 5 of "a".
 */
function data(): ExportData {
  const values: unknown[] = [];
  const id = (value: unknown): number => values.push(value) - 1;
  const traits = (record: Record<string, unknown>): Record<string, number> =>
    Object.fromEntries(Object.entries(record).map(([name, value]) => [name, id(value)]));
  const heatmaps = (top: number[]) =>
    traits({
      heatmap: rows(1),
      caption: "Relevance for a class",
      heatmap_info: { input: "sample" },
      grid: rows(top.length),
      grid_info: { channels: top, relevance: top.map((c) => c * 10), shares: top.map((c) => c / 10), selected: false },
    });
  const gallery = (channel: number, mode: string, tiles: number) =>
    traits({
      groups: [{ title: `${mode} of ${channel}`, mode, tiles: Array.from({ length: tiles }, (_, i) => ({ index: i })) }],
      images: Array.from({ length: tiles }, (_, i) => png(channel * 10 + i)),
      class_tabs: [{ cls: 1 }],
      store_info: { k: 8, layers: ["a", "b"] },
      message: "",
    });
  const graph = (root: [string, number]) => traits({ graph: { root, nodes: [] }, path: [root], drill: { layer: "c" } });
  return {
    samples: [3, 7],
    layers: ["a", "b"],
    top: { "3|a": [5, 1, 2], "7|a": [1, 5, 4], "3|b": [0, 2], "7|b": [2, 0] },
    counts: { a: 8, b: 4 },
    focus: { a: 5, b: 0 },
    views: {
      sample: { base: traits({ count: 2 }), states: { "3": traits({ sample: 3 }), "7": traits({ sample: 7 }) }, empty: {} },
      channels: { base: traits({ show_all: false }), states: { "3|a": traits({ ranking_layer: "a" }) }, empty: {} },
      heatmaps: {
        base: traits({ opacity: 0.5, top_k: 16 }),
        states: { "3|a": heatmaps([5, 1, 2]), "7|a": heatmaps([1, 5, 4]), "3|b": heatmaps([0, 2]) },
        empty: { heatmap: traits({ heatmap: null, caption: "" }), grid: traits({ grid: null, grid_info: {} }) },
        selected: { "3|a|1": traits({ caption: "only through a channel 1" }) },
      },
      gallery: {
        base: traits({ mode: "relevance", compare: false, view: "crop", maximization: "sum", init: "relevance" }),
        states: {
          "a|5|relevance|crop": gallery(5, "relevance", 3),
          "a|5|activation|crop": gallery(5, "activation", 3),
          "a|1|relevance|crop": gallery(1, "relevance", 3),
        },
        empty: { tiles: traits({ groups: [], images: [], class_tabs: [] }) },
      },
      atlas: { base: traits({ n_concepts: 5 }), states: { "3|a": traits({ caption: "atlas" }) }, empty: {} },
      graph: {
        base: traits({ width: [3, 2] }),
        states: { "3|a": graph(["a", 5]), "7|a": graph(["a", 5]) },
        empty: { graph: traits({ graph: {} }), drill: traits({ drill: {} }) },
      },
    },
    code: { "heatmaps|3|a|": id("# top"), "heatmaps|3|a|1": id("# channel 1"), "gallery|a|5|relevance|1|crop": id("# both") },
    initial: { sample: 3, layer: "a", channel: 5, selected: [], top_k: 2 },
    about: { samples: [3, 7], layers: ["a", "b"], channels: 3, references: 3, target: null, store: {} },
    values,
  };
}

describe("rows cut out of the kernel's arrays", () => {
  it("take consecutive rows without a copy and others in the order asked", () => {
    const array = rows(4);
    const middle = takeRows(array, [1, 2]);
    expect(middle.data.buffer).toBe(array.data.buffer);
    expect(middle.shape).toEqual([2, 2]);
    expect(floats(middle)).toEqual([1, 1.5, 2, 2.5]);
    expect(floats(takeRows(array, [3, 0]))).toEqual([3, 3.5, 0, 0.5]);
    expect(row(array, 2).shape).toEqual([2]);
  });
});

describe("the exported page's stand-in for the kernel", () => {
  it("shows the top channels' heatmaps, then one selected channel's on the left and in the grid", () => {
    const kernel = new PageKernel(data());
    let traits = kernel.traits("heatmaps");
    expect(traits.top_k).toBe(2);
    expect((traits.grid_info as { channels: number[] }).channels).toEqual([5, 1]);
    expect(floats(traits.grid)).toEqual([0, 0.5, 1, 1.5]);
    expect(traits.snippet).toBe("# top");
    expect(traits.note).toBe("");

    kernel.toggle(1);
    traits = kernel.traits("heatmaps");
    expect(traits.grid_info).toMatchObject({ channels: [1], relevance: [10], shares: [0.1], selected: true });
    expect(floats(traits.grid)).toEqual([1, 1.5]);
    expect(floats(traits.heatmap)).toEqual([1, 1.5]); // the left heatmap is the grid's row of channel 1
    expect(traits.caption).toBe("only through a channel 1");
    expect(traits.snippet).toBe("# channel 1");
    expect(kernel.traits("channels").conditions).toEqual({ a: [1] });
    expect(kernel.state.channel).toBe(1);
  });

  it("says so when several channels together or a channel it does not hold are asked for", () => {
    const kernel = new PageKernel(data());
    kernel.toggle(2);
    kernel.toggle(5);
    let traits = kernel.traits("heatmaps");
    expect((traits.grid_info as { channels: number[] }).channels).toEqual([5, 2]); // in rank order
    expect(traits.heatmap).toBeNull();
    expect(traits.note).toMatch(/^Not in this file: the heatmap through channels 5 or 2 together/);
    expect(traits.snippet).toMatch(/^# Not in this file/);

    kernel.toggle(7);
    traits = kernel.traits("heatmaps");
    expect(traits.grid).toBeNull();
    expect(traits.note).toBe(
      "Not in this file: the heatmaps of channel 7 of a. It holds those of the 3 channels most relevant for sample #3: 5, 1, 2.",
    );
    expect(kernel.traits("gallery").note).toMatch(/^Not in this file: the references of channel 7 of a/);
    expect(kernel.traits("gallery").groups).toEqual([]);
  });

  it("refuses what it does not hold with a note and keeps its state until a request it holds", () => {
    const kernel = new PageKernel(data());
    expect(kernel.selectLayer("z", "channels")).toBe(false);
    expect(kernel.state.layer).toBe("a");
    expect(kernel.traits("channels").note).toBe("Not in this file: layer z. It holds a, b.");
    expect(kernel.focus(8, "gallery")).toBe(false); // layer a has channels 0 to 7
    expect(kernel.explain(4)).toBe(false);
    expect(kernel.traits("sample").note).toMatch(/other classes: it explains each sample's predicted class/);
    expect(kernel.selectSample(7)).toBe(true);
    for (const view of VIEWS) expect(kernel.traits(view).note ?? "").not.toMatch(/layer z/);
    expect(kernel.traits("sample").sample).toBe(7);
    expect(kernel.selectLayer("b", "atlas")).toBe(true);
    expect([kernel.state.layer, kernel.state.channel, kernel.state.selected]).toEqual(["b", 0, []]);
  });

  it("puts RelMax and ActMax side by side, cuts k, and refuses options it does not hold", () => {
    const kernel = new PageKernel(data());
    expect(kernel.galleryOption("compare", true)).toBe(true);
    let traits = kernel.traits("gallery");
    expect((traits.groups as { title: string }[]).map((group) => group.title)).toEqual([
      "relevance of 5",
      "activation of 5",
    ]);
    expect((traits.images as DataView[]).map((view) => view.getUint8(4))).toEqual([50, 51, 52, 50, 51, 52]);
    expect(traits.snippet).toBe("# both");
    expect(traits.store_info).toEqual({ k: 3, layers: ["a", "b"] }); // k: the references the file holds, not the store
    expect(kernel.galleryOption("k", 2)).toBe(true);
    traits = kernel.traits("gallery");
    expect((traits.images as DataView[]).map((view) => view.getUint8(4))).toEqual([50, 51, 50, 51]);
    expect(traits.snippet).toMatch(/^# Not in this file/); // the code is held for the whole k only
    expect(kernel.galleryOption("k", 4)).toBe(false);
    expect(kernel.galleryOption("view", "heatmap")).toBe(false);
    expect(kernel.galleryOption("view", "sample")).toBe(false);
    expect(kernel.traits("gallery").note).toBe(
      "Not in this file: the full samples of the references (it holds their crops and masked crops); that needs the explorer in Jupyter.",
    );
    expect(kernel.galleryOption("view", "masked")).toBe(true);
    expect(kernel.traits("gallery").note).toMatch(/^Not in this file: the references of channel 5 of a/); // none masked here
    expect(kernel.galleryOption("view", "crop")).toBe(true);
    expect(kernel.galleryOption("cls", 1)).toBe(false);
    expect(kernel.traits("gallery").note).toMatch(/^Not in this file: class-conditional references/);
    expect(kernel.state.gallery).toMatchObject({ compare: true, k: 2, view: "crop", cls: null });
  });

  it("keeps the graph's root when one of its cards is chosen, and says which graph it holds", () => {
    const kernel = new PageKernel(data());
    expect(kernel.traits("graph").graph).toEqual({ root: ["a", 5], nodes: [] });
    kernel.selectNode("b", 2); // a card of a lower layer: the linked views follow it
    expect([kernel.state.layer, kernel.state.channel]).toEqual(["b", 2]);
    let traits = kernel.traits("graph");
    expect(traits.graph).toEqual({ root: ["a", 5], nodes: [] });
    expect(traits.selected).toEqual(["b", 2]);
    kernel.selectLayer("a", "channels");
    kernel.focus(1, "channels"); // a channel chosen elsewhere roots the graph there: not held
    traits = kernel.traits("graph");
    expect(traits.graph).toEqual({});
    expect(traits.note).toBe(
      "Not in this file: the attribution graph of channel 1 of a. It holds the graph of channel 5 of a for every sample.",
    );
  });

  it("keeps what only changes how the page shows it", () => {
    const kernel = new PageKernel(data());
    kernel.keep("heatmaps", "opacity", 0.8);
    kernel.toggle(1);
    expect(kernel.traits("heatmaps").opacity).toBe(0.8);
    expect(kernel.traits("heatmaps").busy).toBe(false);
  });
});
