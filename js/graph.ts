/**
 * AttributionGraphView (crp_widgets/widgets/graph.py): the attribution graph of a concept (Achtibat et al. 2023,
 * Sec. 3.4, Fig. 17) drawn as SVG, and a path drill-down panel (after Ghosh's concept-detection report on VGG16).
 *
 * One row per layer, one card per channel (reference thumbnail, conditional heatmap, "ch c (share of the root)"),
 * edges as wide as the share of relevance that flows. Clicking a card selects the channel in the linked views, its
 * "+" expands a leaf one layer deeper; with the keyboard, arrows move between cards, Enter selects, "+" expands.
 * Images arrive as PNG bytes (heatmaps already in the paper's colours); the kernel computes everything.
 */
import type { AnyModel, RenderProps } from "@anywidget/types";
import { isEmpty, pngUrl } from "./lib/codecs";
import { colourBar } from "./lib/colour-bar";
import {
  type Direction,
  type GraphData,
  type GraphEdgeData,
  type GraphNodeData,
  type Geometry,
  type NodeKey,
  type Point,
  type Slot,
  cardOrigin,
  edgeEnds,
  edgePath,
  edgeWidth,
  labelPoints,
  expandBlocker,
  extent,
  formatShare,
  missingReference,
  neighbour,
  nodeId,
  placeNodes,
} from "./lib/graph-layout";
import { type Shell, element, mountShell } from "./lib/shell";
import { coalesced } from "./lib/views-dom";
import "./lib/theme.css";
import "./graph.css";

interface DrillChannel {
  channel: number;
  relevance: number;
  share: number;
  thumbnail: number | null;
}

interface DrillData {
  path: NodeKey[];
  layer: string | null;
  channels: DrillChannel[];
}

interface GraphModel {
  error: string;
  busy: boolean;
  width: number[];
  expand_k: number;
  expanded: NodeKey[];
  path: NodeKey[];
  drill_k: number;
  graph: Partial<GraphData>;
  selected: NodeKey | [];
  drill: Partial<DrillData>;
  image: DataView | null;
  thumbnails: DataView[];
  heatmaps: DataView[];
  drill_thumbnails: DataView[];
  drill_heatmaps: DataView[];
  labels: Record<string, { concepts?: (string | null)[]; iou?: number[] }>;
}

type Model = AnyModel<GraphModel>;
type Labels = GraphModel["labels"];

const SVG_NS = "http://www.w3.org/2000/svg";
const TILE = 64;
const PAD = 6;
const GEOMETRY: Geometry = {
  cardWidth: 2 * TILE + 3 * PAD,
  cardHeight: TILE + 2 * PAD + 22,
  slotWidth: 2 * TILE + 3 * PAD + 22,
  rowHeight: TILE + 2 * PAD + 22 + 84,
  left: 112,
  top: 14,
};
const ARROWS: Record<string, Direction> = { ArrowLeft: "left", ArrowRight: "right", ArrowUp: "up", ArrowDown: "down" };
const CHOICES = { levels: 6, width: 8, expand: 8, drill: 12 };

/** Object URLs of PNG bytes. Replaced URLs stay valid until `release`, once the drawing no longer uses them. */
class Images {
  private urls: string[] = [];
  private retired: string[] = [];

  set(views: ReadonlyArray<DataView | null> | null | undefined): void {
    this.retired.push(...this.urls);
    this.urls = (views ?? []).map((view) => (isEmpty(view) ? "" : pngUrl(view)));
  }

  at(index: number | null | undefined): string {
    return index == null ? "" : (this.urls[index] ?? "");
  }

  release(): void {
    for (const url of this.retired.splice(0)) if (url) URL.revokeObjectURL(url);
  }

  clear(): void {
    this.set([]);
    this.release();
  }
}

function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attributes: Record<string, string | number>,
  className?: string,
): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (className !== undefined) node.setAttribute("class", className);
  return node;
}

function title(text: string): SVGTitleElement {
  const node = svg("title", {});
  node.textContent = text;
  return node;
}

function sameKey(key: readonly unknown[] | undefined, layer: string, channel: number): boolean {
  return key !== undefined && key.length === 2 && key[0] === layer && key[1] === channel;
}

function isGraph(data: Partial<GraphData>): data is GraphData {
  return Array.isArray(data.nodes) && Array.isArray(data.edges) && Array.isArray(data.layers) && data.nodes.length > 0;
}

function select(options: number, value: number, label: string, onChange: (value: number) => void): HTMLSelectElement {
  const node = element("select", "crpw-graph-select");
  node.setAttribute("aria-label", label);
  for (let n = 1; n <= options; n++) node.append(new Option(String(n), String(n)));
  node.value = String(value);
  node.addEventListener("change", () => onChange(Number(node.value)));
  return node;
}

/** Toolbar: levels, sub-concepts per level, sub-concepts per expansion, channels in the drill-down. */
function mountControls(model: Model, shell: Shell): HTMLElement {
  const bar = element("div", "crpw-graph-controls");
  const save = <K extends "width" | "expand_k" | "drill_k">(name: K, value: GraphModel[K]): void => {
    model.set(name, value);
    model.save_changes();
  };
  const draw = (): void => {
    const width = model.get("width");
    const levels = select(CHOICES.levels, width.length, "levels below the concept", (n) =>
      save("width", Array.from({ length: n }, (_, i) => width[i] ?? width[width.length - 1] ?? 2)),
    );
    const widths = width.map((w, i) =>
      select(CHOICES.width, w, `sub-concepts per concept at level ${i + 1}`, (value) =>
        save("width", width.map((old, j) => (j === i ? value : old))),
      ),
    );
    const expandK = select(CHOICES.expand, model.get("expand_k"), "sub-concepts added by +", (k) =>
      save("expand_k", k),
    );
    const drillK = select(CHOICES.drill, model.get("drill_k"), "channels listed in the drill-down", (k) =>
      save("drill_k", k),
    );
    const group = (text: string, ...controls: HTMLElement[]): HTMLElement => {
      const label = element("span", "crpw-graph-control", text);
      label.append(...controls);
      return label;
    };
    bar.replaceChildren(
      group("Levels", levels),
      group("Width per level", ...widths),
      group("+ adds", expandK),
      group("Drill-down top", drillK),
    );
  };
  shell.listen(["width", "expand_k", "drill_k"], draw, true);
  return bar;
}

interface GraphView {
  svg: SVGSVGElement;
  places: Map<string, Slot>;
  nodes: Map<string, GraphNodeData>;
  expandable: Set<string>;
}

function placeOf(places: Map<string, Slot>, [layer, channel]: NodeKey): Slot {
  const place = places.get(nodeId(layer, channel));
  if (place === undefined) throw new Error(`the graph has an edge to or from ${layer} ch ${channel} but no such node`);
  return place;
}

function drawRows(data: GraphData, width: number): SVGGElement {
  const group = svg("g", {}, "crpw-graph-rows");
  data.layers.forEach((layer, row) => {
    const y = cardOrigin({ row, slot: 0 }, GEOMETRY).y;
    group.append(svg("rect", { x: 0, y: y - 4, width, height: GEOMETRY.cardHeight + 8, rx: 6 }, "crpw-graph-band"));
    const label = svg("text", { x: 10, y: y + GEOMETRY.cardHeight / 2 }, "crpw-graph-layer");
    label.textContent = layer;
    group.append(label);
  });
  return group;
}

/** An edge's curve (with its tooltip) and its percentage label, drawn above every curve. */
function drawEdge(edge: GraphEdgeData, [a, b]: [Point, Point], middle: Point): [SVGGElement, SVGTextElement] {
  const sign = edge.relevance < 0 ? "negative" : "positive";
  const group = svg("g", {}, `crpw-graph-edge crpw-graph-${sign}`);
  const percent = formatShare(edge.share);
  group.append(
    svg("path", { d: edgePath(a, b), "stroke-width": edgeWidth(edge.share).toFixed(2) }, "crpw-graph-flow"),
    title(
      `${edge.source[0]} ch ${edge.source[1]} → ${edge.target[0]} ch ${edge.target[1]}: ${percent} of the ` +
        `upper concept's relevance (${edge.relevance.toPrecision(3)})`,
    ),
  );
  const label = svg("text", { x: middle.x, y: middle.y + 4 }, "crpw-graph-percent");
  label.textContent = percent;
  return [group, label];
}

function drawNode(
  node: GraphNodeData,
  index: number,
  place: Slot,
  flags: { root: boolean; selected: boolean; expandable: boolean },
  images: GraphImages,
  labels: Labels = {},
  blocker: string | null = null,
): SVGGElement {
  const origin = cardOrigin(place, GEOMETRY);
  const classes = ["crpw-graph-node"];
  if (flags.root) classes.push("crpw-graph-root");
  if (flags.selected) classes.push("crpw-graph-selected");
  const transform = `translate(${origin.x} ${origin.y})`;
  const group = svg("g", { transform, tabindex: -1, role: "button" }, classes.join(" "));
  const share = formatShare(node.share);
  group.dataset.layer = node.layer;
  group.dataset.channel = String(node.channel);
  group.setAttribute(
    "aria-label",
    `layer ${node.layer}, channel ${node.channel}, ${share} of the root's relevance` +
      (flags.selected ? ", selected" : "") +
      (flags.expandable ? "; press + to expand" : blocker === null ? "" : `; ${blocker}`),
  );
  group.append(
    svg("rect", { width: GEOMETRY.cardWidth, height: GEOMETRY.cardHeight, rx: 6 }, "crpw-graph-card"),
    title(
      `layer ${node.layer}, channel ${node.channel}: relevance ${node.relevance.toPrecision(3)} ` +
        `(${share} of the root's)`,
    ),
  );
  const thumbnail = images.thumbnails.at(node.thumbnail);
  const tiles: Array<[string, number, string]> = [
    [thumbnail, PAD, "crpw-graph-thumbnail"],
    [images.heatmaps.at(index), 2 * PAD + TILE, "crpw-graph-heatmap"],
  ];
  for (const [href, x, className] of tiles) {
    if (href) group.append(svg("image", { href, x, y: PAD, width: TILE, height: TILE }, className));
    group.append(svg("rect", { x, y: PAD, width: TILE, height: TILE }, "crpw-graph-tile"));
  }
  if (!thumbnail) {
    // No reference of this channel: say so, instead of repeating the sample on every card.
    const missing = svg("g", {}, "crpw-graph-missing");
    const text = svg("text", { x: PAD + TILE / 2, y: PAD + TILE / 2 + 4, "text-anchor": "middle" });
    text.textContent = "no refs";
    missing.append(text, title(missingReference(node.layer, images.scanned)));
    group.append(missing);
  }
  const label = svg("text", { x: PAD, y: 2 * PAD + TILE + 14 }, "crpw-graph-label");
  label.textContent = `ch ${node.channel} (${share})`;
  group.append(label);
  const concepts = labels[node.layer];
  if (concepts?.concepts !== undefined && concepts.iou !== undefined && node.channel < concepts.concepts.length) {
    // The dissection label and IoU (Bau et al. 2017) on a strip at the foot of the heatmap tile; the reference stays whole.
    const text = `${concepts.concepts[node.channel] ?? "none"} ${concepts.iou[node.channel].toFixed(2)}`;
    const y = PAD + TILE - 12;
    const strip = svg("g", {}, "crpw-graph-concept");
    strip.append(
      svg("rect", { x: 2 * PAD + TILE, y, width: TILE, height: 12, fill: "rgba(0, 0, 0, 0.6)" }),
      svg("text", { x: 2 * PAD + TILE + 2, y: y + 9, fill: "#ffffff", "font-size": 9 }),
      title(`concept (Network Dissection): ${text}`),
    );
    (strip.children[1] as SVGTextElement).textContent = text;
    group.append(strip);
  }
  if (flags.expandable) {
    const expand = svg(
      "g",
      { transform: `translate(${GEOMETRY.cardWidth - 14} ${GEOMETRY.cardHeight - 13})`, role: "button" },
      "crpw-graph-expand",
    );
    expand.setAttribute("aria-label", `expand layer ${node.layer} channel ${node.channel}`);
    const plus = svg("text", { x: 0, y: 5 }, "crpw-graph-plus");
    plus.textContent = "+";
    expand.append(svg("circle", { r: 10 }), plus, title("expand: add its top sub-concepts one layer down"));
    group.append(expand);
  } else if (blocker !== null) {
    const why = svg(
      "g",
      { transform: `translate(${GEOMETRY.cardWidth - 14} ${GEOMETRY.cardHeight - 13})` },
      "crpw-graph-noexpand",
    );
    const mark = svg("text", { x: 0, y: 4 }, "crpw-graph-noexpand-mark");
    mark.textContent = "–";
    why.append(svg("circle", { r: 8 }), mark, title(blocker));
    group.append(why);
  }
  return group;
}

/** The pictures a graph card draws from, and the layers the reference store holds (`null` without a store). */
interface GraphImages {
  sample: string;
  thumbnails: Images;
  heatmaps: Images;
  scanned: string[] | null;
}

function drawGraph(
  data: GraphData,
  selected: readonly unknown[],
  images: GraphImages,
  concepts: Labels = {},
): GraphView {
  const places = placeNodes(data);
  const size = extent(places.values(), GEOMETRY);
  const root = svg("svg", { width: size.width, height: size.height, viewBox: `0 0 ${size.width} ${size.height}` });
  root.setAttribute("class", "crpw-graph-svg");
  root.setAttribute("role", "group");
  root.setAttribute("aria-label", `attribution graph of layer ${data.root[0]} channel ${data.root[1]}`);
  const edges = svg("g", {}, "crpw-graph-edges");
  const percents = svg("g", {}, "crpw-graph-percents");
  const nodes = svg("g", {}, "crpw-graph-nodes");
  const ends = data.edges.map((edge) => edgeEnds(placeOf(places, edge.source), placeOf(places, edge.target), GEOMETRY));
  const labels = labelPoints(ends);
  for (const [index, edge] of data.edges.entries()) {
    const [curve, label] = drawEdge(edge, ends[index], labels[index]);
    edges.append(curve);
    percents.append(label);
  }
  const byId = new Map<string, GraphNodeData>();
  const expandable = new Set<string>();
  data.nodes.forEach((node, index) => {
    const id = nodeId(node.layer, node.channel);
    byId.set(id, node);
    // A leaf expands, unless its layer is the lowest one (nothing below it to follow); otherwise say why not.
    const blocker = expandBlocker(node, data);
    if (blocker === null) expandable.add(id);
    const flags = {
      root: sameKey(data.root, node.layer, node.channel),
      selected: sameKey(selected, node.layer, node.channel),
      expandable: expandable.has(id),
    };
    nodes.append(
      drawNode(node, index, placeOf(places, [node.layer, node.channel]), flags, images, concepts, blocker),
    );
  });
  root.append(drawRows(data, size.width), edges, percents, nodes);
  return { svg: root, places, nodes: byId, expandable };
}

/** The widget's pictures, one `Images` per PNG trait, refreshed when the trait changes. */
const PNG_TRAITS = ["image", "thumbnails", "heatmaps", "drill_thumbnails", "drill_heatmaps"] as const;
type Pictures = Record<(typeof PNG_TRAITS)[number], Images>;

function mountPictures(model: Model, shell: Shell, redraw: () => void): Pictures {
  const pictures = Object.fromEntries(PNG_TRAITS.map((trait) => [trait, new Images()])) as Pictures;
  for (const trait of PNG_TRAITS) {
    const load = (): void => {
      const value = model.get(trait);
      pictures[trait].set(Array.isArray(value) ? value : [value]);
      redraw();
    };
    shell.listen([trait], load, true);
  }
  shell.onDispose(() => {
    for (const images of Object.values(pictures)) images.clear();
  });
  return pictures;
}

interface Section {
  element: HTMLElement;
  draw(): void;
}

/** The graph area: SVG drawing, roving keyboard focus, clicks on cards and on "+". */
function mountGraph(model: Model, pictures: Pictures): Section {
  const area = element("div", "crpw-graph-area");
  const heading = element("div", "crpw-graph-heading");
  const scale = colourBar();
  const scroller = element("div", "crpw-graph-scroller");
  area.append(heading, scale.root, scroller);
  let view: GraphView | null = null;
  let active = "";

  const send = (kind: "select" | "expand", id: string): void => {
    const node = view?.nodes.get(id);
    if (node !== undefined) model.send({ kind, layer: node.layer, channel: node.channel });
  };
  const activate = (id: string, focus: boolean): void => {
    if (view === null) return;
    for (const card of view.svg.querySelectorAll<SVGGElement>(".crpw-graph-node")) {
      const mine = nodeId(card.dataset.layer ?? "", Number(card.dataset.channel)) === id;
      card.setAttribute("tabindex", mine ? "0" : "-1");
      if (mine && focus) card.focus();
    }
    active = id;
  };
  const draw = (): void => {
    const data = model.get("graph");
    const hadFocus = view !== null && view.svg.contains(document.activeElement);
    if (!isGraph(data)) {
      const [layer, channel] = model.get("selected");
      view = null;
      heading.textContent =
        layer === undefined
          ? "Select a channel (state.layer and state.channel) to see its attribution graph."
          : `No attribution graph for layer ${layer}, channel ${channel}.`;
      scroller.replaceChildren();
      return;
    }
    const root = data.nodes.find((node) => sameKey(data.root, node.layer, node.channel));
    const relevance = root === undefined ? "–" : root.relevance.toPrecision(3);
    heading.textContent =
      `Attribution graph of layer ${data.root[0]}, channel ${data.root[1]} (relevance ${relevance}) for class ` +
      `“${data.class}”: edges show the share of the upper concept's relevance, cards the share of the root's. ` +
      "Each card: the channel's top reference (left) and its heatmap on this sample (right).";
    const images = {
      sample: pictures.image.at(0),
      thumbnails: pictures.thumbnails,
      heatmaps: pictures.heatmaps,
      scanned: data.scanned ?? null,
    };
    view = drawGraph(data, model.get("selected"), images, model.get("labels"));
    scroller.replaceChildren(view.svg);
    activate(view.nodes.has(active) ? active : nodeId(...data.root), hadFocus);
  };

  scroller.addEventListener("click", (event) => {
    const target = event.target as Element;
    const card = target.closest<SVGGElement>(".crpw-graph-node");
    if (card === null) return;
    const id = nodeId(card.dataset.layer ?? "", Number(card.dataset.channel));
    activate(id, true);
    send(target.closest(".crpw-graph-expand") !== null ? "expand" : "select", id);
  });
  scroller.addEventListener("keydown", (event) => {
    if (view === null) return;
    const direction = ARROWS[event.key];
    if (direction !== undefined) {
      const next = neighbour(view.places, active, direction);
      if (next !== null) activate(next, true);
      event.preventDefault();
    } else if (event.key === "Enter" || event.key === " ") {
      send("select", active);
      event.preventDefault();
    } else if (event.key === "+") {
      if (view.expandable.has(active)) send("expand", active);
      event.preventDefault();
      event.stopPropagation();
    }
  });
  return { element: area, draw };
}

function picture(src: string, className: string): HTMLImageElement {
  const image = element("img", className);
  if (src) image.src = src;
  image.alt = "";
  return image;
}

/** The drill-down panel: the path as breadcrumbs, and the next layer's top-k channels under it. */
/** A channel's top reference, or a tile that says why there is none. */
function reference(href: string, layer: string, scanned: string[] | null | undefined): HTMLElement {
  if (href) return picture(href, "crpw-graph-item-thumbnail");
  const missing = element("span", "crpw-graph-item-thumbnail crpw-graph-item-missing", "no refs");
  missing.title = missingReference(layer, scanned);
  return missing;
}

function mountDrill(model: Model, pictures: Pictures): Section {
  const panel = element("section", "crpw-graph-drill");
  panel.setAttribute("aria-label", "path drill-down");
  const crumbs = element("nav", "crpw-graph-crumbs");
  crumbs.setAttribute("aria-label", "drill-down path");
  const note = element("div", "crpw-graph-note");
  const items = element("ul", "crpw-graph-items");
  panel.append(crumbs, note, items);
  const setPath = (path: NodeKey[]): void => {
    model.set("path", path);
    model.save_changes();
  };

  const drawCrumbs = (): void => {
    const path = model.get("path");
    const list = element("ol", "crpw-graph-crumb-list");
    path.forEach(([layer, channel], index) => {
      const item = element("li", "crpw-graph-crumb");
      const button = element("button", "crpw-graph-crumb-button", `${layer} · ch ${channel}`);
      button.type = "button";
      if (index === path.length - 1) button.setAttribute("aria-current", "step");
      button.addEventListener("click", () => setPath(path.slice(0, index + 1)));
      item.append(button);
      list.append(item);
    });
    crumbs.replaceChildren(element("span", "crpw-graph-crumb-title", "Path"), list);
    panel.hidden = path.length === 0;
  };
  const drawItem = (layer: string, path: NodeKey[], entry: DrillChannel, index: number): HTMLLIElement => {
    const item = element("li", "crpw-graph-item");
    const button = element("button", "crpw-graph-item-button");
    button.type = "button";
    button.setAttribute("aria-label", `extend the path with layer ${layer} channel ${entry.channel}`);
    button.append(
      reference(pictures.drill_thumbnails.at(entry.thumbnail), layer, model.get("graph").scanned),
      picture(pictures.drill_heatmaps.at(index), "crpw-graph-item-heatmap"),
      element("span", "crpw-graph-item-label", `ch ${entry.channel} (${formatShare(entry.share)})`),
    );
    button.addEventListener("click", () => setPath([...path, [layer, entry.channel]]));
    item.append(button);
    return item;
  };
  const drawItems = (): void => {
    const { layer, path = [], channels = [] } = model.get("drill");
    note.textContent =
      layer === undefined
        ? ""
        : layer === null
          ? "The path reached the lowest explainable layer."
          : `Top channels of layer ${layer} given the path (share of the last channel's relevance); ` +
            "pick one to go deeper.";
    items.replaceChildren(...(layer ? channels.map((entry, index) => drawItem(layer, path, entry, index)) : []));
  };
  const draw = (): void => {
    drawCrumbs();
    drawItems();
  };
  return { element: panel, draw };
}

function render({ model, el }: RenderProps<GraphModel>): () => void {
  const shell = mountShell(el, model, "graph");
  const sections: Section[] = [];
  const redraw = coalesced(() => {
    for (const section of sections) section.draw();
    for (const images of Object.values(pictures)) images.release();
  });
  const pictures = mountPictures(model, shell, redraw);
  sections.push(mountGraph(model, pictures), mountDrill(model, pictures));
  shell.body.append(mountControls(model, shell), ...sections.map((section) => section.element));
  shell.listen(["graph", "selected", "path", "drill", "labels"], redraw, true);
  return () => shell.dispose();
}

export default { render };
