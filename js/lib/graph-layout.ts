/**
 * Geometry of the attribution graph (Achtibat et al. 2023, Sec. 3.4, Fig. 17), apart from the DOM: where each node goes
 * (one row per layer, stable when nodes expand), the edges' paths and widths, share labels, and keyboard moves.
 *
 * The kernel (crp_widgets/widgets/graph.py) lists the engine's nodes first, each row in the engine's order
 * (children grouped under their parents), then the nodes added by expansions in the order they were added. The
 * engine's rows are centred; an added node goes to the free place nearest below its parent, and nothing placed
 * before it ever moves.
 */

export type NodeKey = [string, number];

export interface GraphNodeData {
  layer: string;
  channel: number;
  level: number;
  relevance: number;
  /** Relevance relative to the root's (Fig. 17, in parentheses). */
  share: number;
  added: boolean;
  thumbnail: number | null;
}

export interface GraphEdgeData {
  source: NodeKey;
  target: NodeKey;
  relevance: number;
  /** The share of the source's relevance that flows into the target (the edge label). */
  share: number;
  added: boolean;
}

export interface GraphData {
  root: NodeKey;
  layers: string[];
  /** The model's explainable layer nearest the input: its nodes have nothing below to expand into. */
  lowest: string;
  target: number;
  class: string;
  /** The layers the reference store holds (`null` without a store). */
  scanned?: string[] | null;
  nodes: GraphNodeData[];
  edges: GraphEdgeData[];
}

/** A node's place: its row and its horizontal position in slots (one slot per card, halves allowed). */
export interface Slot {
  row: number;
  slot: number;
}

export interface Point {
  x: number;
  y: number;
}

/** Sizes in pixels: cards, the slot and row pitch, and the margins (row labels on the left). */
export interface Geometry {
  cardWidth: number;
  cardHeight: number;
  slotWidth: number;
  rowHeight: number;
  left: number;
  top: number;
}

export type Direction = "left" | "right" | "up" | "down";

/** The identifier of a node, unique within a graph. */
export function nodeId(layer: string, channel: number): string {
  return JSON.stringify([layer, channel]);
}

function keyId([layer, channel]: NodeKey): string {
  return nodeId(layer, channel);
}

/** The place nearest to `desired` (right first on ties), a slot or more from every occupied one, not below `floor`. */
export function nearestFree(occupied: readonly number[], desired: number, floor: number): number {
  const free = (slot: number): boolean => slot >= floor && occupied.every((o) => Math.abs(o - slot) >= 1 - 1e-9);
  for (let step = 0; ; step++) {
    for (const candidate of step === 0 ? [desired] : [desired + step / 2, desired - step / 2]) {
      if (free(candidate)) return candidate;
    }
  }
}

function rowIndex(graph: GraphData, layer: string): number {
  const row = graph.layers.indexOf(layer);
  if (row < 0) throw new Error(`node layer ${JSON.stringify(layer)} is not one of the graph's rows`);
  return row;
}

/** The engine's rows, centred around slot 0, in the engine's order. */
function placeBase(graph: GraphData, placed: Map<string, Slot>): void {
  const base = graph.nodes.filter((node) => !node.added);
  const counts = new Map<number, number>();
  for (const node of base) {
    const row = rowIndex(graph, node.layer);
    counts.set(row, (counts.get(row) ?? 0) + 1);
  }
  const seen = new Map<number, number>();
  for (const node of base) {
    const row = rowIndex(graph, node.layer);
    const index = seen.get(row) ?? 0;
    seen.set(row, index + 1);
    placed.set(nodeId(node.layer, node.channel), { row, slot: index - ((counts.get(row) ?? 1) - 1) / 2 });
  }
}

/** Each added node as near as possible under its slot among its expansion's children, right of `floor`. */
function placeAdded(graph: GraphData, placed: Map<string, Slot>, floor: number): void {
  const added = graph.edges.filter((edge) => edge.added);
  for (const node of graph.nodes.filter((n) => n.added)) {
    const id = nodeId(node.layer, node.channel);
    const edge = added.find((e) => keyId(e.target) === id);
    const parent = edge && placed.get(keyId(edge.source));
    if (edge === undefined || parent === undefined) {
      throw new Error(`added node ${id} has no placed parent; the kernel lists parents before their children`);
    }
    const siblings = added.filter((e) => keyId(e.source) === keyId(edge.source));
    const desired = parent.slot + siblings.indexOf(edge) - (siblings.length - 1) / 2;
    const row = rowIndex(graph, node.layer);
    const occupied = [...placed.values()].filter((p) => p.row === row).map((p) => p.slot);
    placed.set(id, { row, slot: nearestFree(occupied, desired, floor) });
  }
}

/** Every node's row and slot, the leftmost engine node at slot 0 (added nodes never go left of it). */
export function placeNodes(graph: GraphData): Map<string, Slot> {
  const placed = new Map<string, Slot>();
  placeBase(graph, placed);
  const floor = Math.min(0, ...[...placed.values()].map((p) => p.slot));
  placeAdded(graph, placed, floor);
  for (const place of placed.values()) place.slot -= floor;
  return placed;
}

/** The top-left corner of a node's card. */
export function cardOrigin({ row, slot }: Slot, g: Geometry): Point {
  return { x: g.left + slot * g.slotWidth + (g.slotWidth - g.cardWidth) / 2, y: g.top + row * g.rowHeight };
}

/** The size of the drawing that holds every placed node. */
export function extent(places: Iterable<Slot>, g: Geometry): { width: number; height: number } {
  let slots = 0;
  let rows = 0;
  for (const { row, slot } of places) {
    slots = Math.max(slots, slot + 1);
    rows = Math.max(rows, row + 1);
  }
  const height = g.top + Math.max(0, rows - 1) * g.rowHeight + g.cardHeight + g.top;
  return { width: g.left + slots * g.slotWidth, height };
}

/** An edge leaves the bottom centre of the upper card and enters the top centre of the lower one. */
export function edgeEnds(source: Slot, target: Slot, g: Geometry): [Point, Point] {
  const a = cardOrigin(source, g);
  const b = cardOrigin(target, g);
  return [
    { x: a.x + g.cardWidth / 2, y: a.y + g.cardHeight },
    { x: b.x + g.cardWidth / 2, y: b.y },
  ];
}

/** A vertical S-curve from `a` to `b` (cubic Bézier with both control points at half height). */
export function edgePath(a: Point, b: Point): string {
  const middle = (a.y + b.y) / 2;
  return `M ${a.x} ${a.y} C ${a.x} ${middle}, ${b.x} ${middle}, ${b.x} ${b.y}`;
}

/** The point of `edgePath(a, b)` at curve parameter `t` in [0, 1] (t = 0.5: the average of the ends). */
export function edgePoint(a: Point, b: Point, t: number): Point {
  const u = 1 - t;
  const near = u * u * u + 3 * u * u * t; // weight of the control point and end at a; the rest is b's
  const smooth = 3 * t * t - 2 * t * t * t; // vertically, both control points lie halfway
  return { x: near * a.x + (1 - near) * b.x, y: a.y + (b.y - a.y) * smooth };
}

/** Where labels may sit along an edge, best first: the middle, then further towards either end. */
const LABEL_STEPS = [0.5, 0.35, 0.65, 0.22, 0.78];

/**
 * A place for each edge's label along its curve, in the edges' order: the middle of the curve unless an earlier
 * label's box (`width` x `height`, centred) overlaps there; then the next free step towards either end (crossing
 * edges share their middle). When every step is taken, the middle.
 */
export function labelPoints(edges: ReadonlyArray<[Point, Point]>, width = 40, height = 16): Point[] {
  const placed: Point[] = [];
  const free = (p: Point): boolean =>
    placed.every((q) => Math.abs(p.x - q.x) >= width || Math.abs(p.y - q.y) >= height);
  for (const [a, b] of edges) {
    const candidates = LABEL_STEPS.map((t) => edgePoint(a, b, t));
    placed.push(candidates.find(free) ?? candidates[0]);
  }
  return placed;
}

/**
 * Stroke width of an edge: linear in the percentage of relevance that flows (Fig. 17), from `thinnest` at 0 % to
 * `thickest` at 100 % or more; the sign (supporting or contradicting relevance) is shown by colour, not width.
 */
export function edgeWidth(share: number, thinnest = 1.5, thickest = 14): number {
  const fraction = Number.isFinite(share) ? Math.min(1, Math.abs(share)) : 0;
  return thinnest + (thickest - thinnest) * fraction;
}

/** A share as a percentage with two significant digits below 10 % ("57%", "2.9%", "0.14%", "-12%"). */
export function formatShare(share: number): string {
  if (!Number.isFinite(share)) return "–";
  const percent = share * 100;
  const size = Math.abs(percent);
  const digits = size >= 10 || size === 0 ? 0 : size >= 1 ? 1 : Math.min(6, 1 - Math.floor(Math.log10(size)));
  return `${percent.toFixed(digits)}%`;
}

/**
 * The node an arrow key moves to: left/right the nearest one in the same row, up/down the nearest one (by slot,
 * the left one on ties) in the row above/below; `null` when there is none.
 */
export function neighbour(places: Map<string, Slot>, from: string, direction: Direction): string | null {
  const start = places.get(from);
  if (start === undefined) return null;
  const row = start.row + (direction === "up" ? -1 : direction === "down" ? 1 : 0);
  let best: string | null = null;
  let bestScore = Infinity;
  for (const [id, place] of places) {
    if (id === from || place.row !== row) continue;
    const offset = place.slot - start.slot;
    if ((direction === "left" && offset >= 0) || (direction === "right" && offset <= 0)) continue;
    const score = Math.abs(offset) + (offset < 0 ? 0 : 1e-6);
    if (score < bestScore) {
      best = id;
      bestScore = score;
    }
  }
  return best;
}

/**
 * Why a node of the graph has no "+" (it cannot expand), or `null` when it can: a node expands one layer deeper
 * when no edge leaves it yet and a layer lies below its own.
 */
export function expandBlocker(node: GraphNodeData, graph: GraphData): string | null {
  if (node.layer === graph.lowest) {
    return `no "+": ${node.layer} is the lowest explainable layer, there is no layer below to expand into`;
  }
  const id = nodeId(node.layer, node.channel);
  if (graph.edges.some((edge) => nodeId(...edge.source) === id)) {
    return `no "+": its sub-concepts are shown already (the edges below it)`;
  }
  return null;
}

/** Why a node shows no reference picture: no store, or a store without the node's layer. */
export function missingReference(layer: string, scanned: readonly string[] | null | undefined): string {
  if (scanned === null || scanned === undefined) return "no references: the explorer has no reference store";
  return `no references: the store holds ${scanned.join(", ") || "no layer"}, not ${layer}`;
}
