import { describe, expect, it } from "vitest";
import {
  type GraphData,
  type GraphEdgeData,
  type GraphNodeData,
  type Geometry,
  type NodeKey,
  cardOrigin,
  edgeEnds,
  edgePoint,
  edgePath,
  edgeWidth,
  extent,
  expandBlocker,
  formatShare,
  missingReference,
  labelPoints,
  nearestFree,
  neighbour,
  nodeId,
  placeNodes,
} from "./graph-layout";

const G: Geometry = { cardWidth: 100, cardHeight: 80, slotWidth: 120, rowHeight: 150, left: 50, top: 10 };

function node(layer: string, channel: number, added = false): GraphNodeData {
  return { layer, channel, level: 0, relevance: 1, share: 0.5, added, thumbnail: null };
}

function edge(source: NodeKey, target: NodeKey, share = 0.5, added = false): GraphEdgeData {
  return { source, target, relevance: share, share, added };
}

/** The engine's graph for width (3, 2) with one node reached twice: "b" 1 is a child of "a" 0 and of "a" 1. */
function fig17(): GraphData {
  return {
    root: ["c", 9],
    layers: ["c", "b", "a"],
    lowest: "z",
    target: 0,
    class: "bee eater",
    nodes: [node("c", 9), node("b", 4), node("b", 7), node("b", 2), node("a", 0), node("a", 1), node("a", 5)],
    edges: [
      edge(["c", 9], ["b", 4]),
      edge(["c", 9], ["b", 7]),
      edge(["c", 9], ["b", 2]),
      edge(["b", 4], ["a", 0]),
      edge(["b", 4], ["a", 1]),
      edge(["b", 7], ["a", 1]),
      edge(["b", 7], ["a", 5]),
    ],
  };
}

function expand(graph: GraphData, parent: NodeKey, children: NodeKey[]): GraphData {
  const fresh = children.filter(([l, c]) => !graph.nodes.some((n) => n.layer === l && n.channel === c));
  const layers = [...graph.layers];
  for (const [layer] of children) if (!layers.includes(layer)) layers.push(layer);
  return {
    ...graph,
    layers,
    nodes: [...graph.nodes, ...fresh.map(([l, c]) => node(l, c, true))],
    edges: [...graph.edges, ...children.map((child) => edge(parent, child, 0.25, true))],
  };
}

function slots(graph: GraphData): Record<string, [number, number]> {
  return Object.fromEntries([...placeNodes(graph)].map(([id, { row, slot }]) => [id, [row, slot]]));
}

describe("placeNodes", () => {
  it("puts each layer in its row and centres the engine's rows, leftmost node at slot 0", () => {
    expect(slots(fig17())).toEqual({
      [nodeId("c", 9)]: [0, 1],
      [nodeId("b", 4)]: [1, 0],
      [nodeId("b", 7)]: [1, 1],
      [nodeId("b", 2)]: [1, 2],
      [nodeId("a", 0)]: [2, 0],
      [nodeId("a", 1)]: [2, 1],
      [nodeId("a", 5)]: [2, 2],
    });
  });

  it("keeps every placed node where it was when nodes expand", () => {
    const before = slots(fig17());
    const once = expand(fig17(), ["a", 5], [["z", 3], ["z", 8]]);
    const twice = expand(once, ["b", 2], [["a", 5], ["a", 6]]);
    const after = slots(twice);
    for (const [id, place] of Object.entries(before)) expect(after[id]).toEqual(place);
    for (const [id, place] of Object.entries(slots(once))) expect(after[id]).toEqual(place);
  });

  it("places an expansion's children under their parent in a new row", () => {
    const after = slots(expand(fig17(), ["a", 5], [["z", 3], ["z", 8]]));
    expect(after[nodeId("z", 3)]).toEqual([3, 1.5]);
    expect(after[nodeId("z", 8)]).toEqual([3, 2.5]);
  });

  it("moves a child to the nearest free place in a full row, never onto another card", () => {
    const graph = expand(fig17(), ["b", 2], [["a", 6], ["a", 0]]);
    const after = slots(graph);
    expect(after[nodeId("a", 6)]).toEqual([2, 3]);
    const row = Object.values(after).filter(([r]) => r === 2).map(([, s]) => s).sort((p, q) => p - q);
    for (let i = 1; i < row.length; i++) expect(row[i] - row[i - 1]).toBeGreaterThanOrEqual(1);
  });

  it("never places an added node left of the engine's leftmost one", () => {
    const graph = expand(fig17(), ["a", 0], [["z", 1], ["z", 2], ["z", 3]]);
    expect(Math.min(...Object.values(slots(graph)).map(([, s]) => s))).toBe(0);
  });

  it("names a node listed under a layer that is not a row", () => {
    const graph = { ...fig17(), layers: ["c", "b"] };
    expect(() => placeNodes(graph)).toThrow(/"a" is not one of the graph's rows/);
  });
});

describe("nearestFree", () => {
  it("takes the desired place when free, else the nearest one at least a slot away, right first", () => {
    expect(nearestFree([], 2, 0)).toBe(2);
    expect(nearestFree([2], 2, 0)).toBe(3);
    expect(nearestFree([1, 2, 3], 2, 0)).toBe(4);
    expect(nearestFree([0.5], 0, -5)).toBe(-0.5);
    expect(nearestFree([1], 0.5, 0)).toBe(0);
  });

  it("stays right of the floor", () => {
    expect(nearestFree([0], -1, 0)).toBe(1);
  });
});

describe("edge geometry", () => {
  it("runs from the bottom centre of the upper card to the top centre of the lower one", () => {
    const [a, b] = edgeEnds({ row: 0, slot: 1 }, { row: 1, slot: 0 }, G);
    expect(cardOrigin({ row: 0, slot: 1 }, G)).toEqual({ x: 180, y: 10 });
    expect(a).toEqual({ x: 230, y: 90 });
    expect(b).toEqual({ x: 110, y: 160 });
    expect(edgePath(a, b)).toBe("M 230 90 C 230 125, 110 125, 110 160");
    expect(edgePoint(a, b, 0.5)).toEqual({ x: 170, y: 125 });
    expect(edgePoint(a, b, 0)).toEqual(a);
    expect(edgePoint(a, b, 1)).toEqual(b);
  });

  it("follows the curve: nearer the upper end for small t, symmetric about the middle", () => {
    const a = { x: 0, y: 0 };
    const b = { x: 100, y: 100 };
    const early = edgePoint(a, b, 0.25);
    const late = edgePoint(a, b, 0.75);
    expect(early.x).toBeCloseTo(15.625);
    expect(early.y).toBeCloseTo(15.625);
    expect(late.x).toBeCloseTo(100 - early.x);
    expect(late.y).toBeCloseTo(100 - early.y);
  });

  it("scales the width linearly with the share that flows, by magnitude, capped at 100 %", () => {
    expect(edgeWidth(0, 1, 11)).toBe(1);
    expect(edgeWidth(0.3, 1, 11)).toBeCloseTo(4);
    expect(edgeWidth(-0.3, 1, 11)).toBeCloseTo(4);
    expect(edgeWidth(1.7, 1, 11)).toBe(11);
    expect(edgeWidth(Number.NaN, 1, 11)).toBe(1);
    expect(edgeWidth(0.5)).toBeGreaterThan(edgeWidth(0.25));
  });

  it("sizes the drawing to the rightmost slot and the lowest row", () => {
    expect(extent(placeNodes(fig17()).values(), G)).toEqual({ width: 50 + 3 * 120, height: 10 + 2 * 150 + 80 + 10 });
  });
});

describe("labelPoints", () => {
  const top = (x: number): { x: number; y: number } => ({ x, y: 0 });
  const bottom = (x: number): { x: number; y: number } => ({ x, y: 100 });

  it("puts a label in the middle of its edge when nothing is there", () => {
    expect(labelPoints([[top(0), bottom(200)]])).toEqual([{ x: 100, y: 50 }]);
  });

  it("moves the label of a crossing edge along its curve until the boxes no longer overlap", () => {
    const crossing: Array<[{ x: number; y: number }, { x: number; y: number }]> = [
      [top(0), bottom(200)],
      [top(200), bottom(0)],
      [top(100), bottom(100)],
    ];
    const labels = labelPoints(crossing, 40, 16);
    expect(labels[0]).toEqual({ x: 100, y: 50 });
    expect(labels[1].y).toBeLessThan(50); // the next step, towards its upper end
    expect(labels[2].y).toBeLessThan(50);
    for (let i = 0; i < labels.length; i++) {
      for (let j = i + 1; j < labels.length; j++) {
        const apart = Math.abs(labels[i].x - labels[j].x) >= 40 || Math.abs(labels[i].y - labels[j].y) >= 16;
        expect(apart).toBe(true);
      }
    }
  });

  it("falls back to the middle when every place along the edge is taken", () => {
    const same: Array<[{ x: number; y: number }, { x: number; y: number }]> = Array.from({ length: 7 }, () => [
      top(0),
      bottom(0),
    ]);
    expect(labelPoints(same, 40, 1000).at(-1)).toEqual({ x: 0, y: 50 });
  });
});

describe("formatShare", () => {
  it("writes percentages with two significant digits below 10 %", () => {
    expect(formatShare(0.576)).toBe("58%");
    expect(formatShare(1)).toBe("100%");
    expect(formatShare(0.029)).toBe("2.9%");
    expect(formatShare(0.0014)).toBe("0.14%");
    expect(formatShare(-0.12)).toBe("-12%");
    expect(formatShare(0)).toBe("0%");
    expect(formatShare(Number.POSITIVE_INFINITY)).toBe("–");
  });
});

describe("neighbour", () => {
  const places = placeNodes(fig17());

  it("moves left and right within a row, to the nearest card", () => {
    expect(neighbour(places, nodeId("b", 7), "left")).toBe(nodeId("b", 4));
    expect(neighbour(places, nodeId("b", 7), "right")).toBe(nodeId("b", 2));
    expect(neighbour(places, nodeId("b", 2), "right")).toBeNull();
  });

  it("moves up and down to the nearest card of the next row, the left one on ties", () => {
    expect(neighbour(places, nodeId("c", 9), "down")).toBe(nodeId("b", 7));
    expect(neighbour(places, nodeId("a", 5), "up")).toBe(nodeId("b", 2));
    expect(neighbour(places, nodeId("c", 9), "up")).toBeNull();
    const shifted = new Map([
      ["top", { row: 0, slot: 1.5 }],
      ["left", { row: 1, slot: 1 }],
      ["right", { row: 1, slot: 2 }],
    ]);
    expect(neighbour(shifted, "top", "down")).toBe("left");
  });

  it("answers null for an unknown node", () => {
    expect(neighbour(places, "nope", "down")).toBeNull();
  });
});

describe("expandBlocker", () => {
  const graph: GraphData = {
    root: ["l3", 0],
    layers: ["l3", "l2", "l1"],
    lowest: "l1",
    target: 0,
    class: "a",
    nodes: [],
    edges: [{ source: ["l3", 0], target: ["l2", 4], relevance: 1, share: 0.5, added: false }],
  };
  const node = (layer: string, channel: number) => ({
    layer,
    channel,
    level: 0,
    relevance: 1,
    share: 1,
    added: false,
    thumbnail: null,
  });

  it("lets a leaf above the lowest layer expand", () => {
    expect(expandBlocker(node("l2", 4), graph)).toBeNull();
  });

  it("says why an expanded node or a node of the lowest layer has no plus", () => {
    expect(expandBlocker(node("l3", 0), graph)).toMatch(/sub-concepts are shown already/);
    expect(expandBlocker(node("l1", 2), graph)).toMatch(/l1 is the lowest explainable layer/);
  });
});

describe("missingReference", () => {
  it("names the store's layers or the missing store", () => {
    expect(missingReference("l1", ["l2", "l3"])).toBe("no references: the store holds l2, l3, not l1");
    expect(missingReference("l1", null)).toMatch(/no reference store/);
  });
});
