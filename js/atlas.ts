/**
 * ConceptAtlas (crp_widgets/widgets/atlas.py): the concept atlas of a sample (Achtibat et al. 2023, Sec. 3.3, Fig. 15)
 * with a legend linking colours to channels, and a region drawn on it by brush, lasso, clicks on superpixels or the
 * keyboard, whose most relevant concepts (Eq. 11-12, Fig. 16) the kernel sends back.
 *
 * The kernel sends the image (PNG), the superpixel labels, the per-superpixel assignment of concepts and their
 * relevance (typed arrays); the atlas is painted here. The region travels back as a uint8 mask.
 */
import type { AnyModel, RenderProps } from "@anywidget/types";
import { NONE, conceptColor, displayScale, paintAtlas, paintOverlay } from "./lib/atlas-paint";
import {
  type Grid,
  type Point,
  applyShape,
  moveCursor,
  rasterizePolygon,
  regionSize,
  segmentAt,
  strokeBrush,
  toggleSegment,
} from "./lib/atlas-region";
import { type DecodedArray, decodeArray, isArrayMeta, isEmpty, pngUrl } from "./lib/codecs";
import { blend } from "./lib/blend";
import { colorize } from "./lib/colormap";
import { colourBar } from "./lib/colour-bar";
import { boundNumber, boundSelect, formatValue, uniqueId } from "./lib/gallery-atlas-controls";
import { type LayerGroup, layerChoices } from "./lib/layer-menu";
import { coalesced } from "./lib/views-dom";
import { type Shell, element, mountShell } from "./lib/shell";
import "./lib/theme.css";
import "./atlas.css";

interface ArrayValue {
  data: DataView;
  shape: number[];
  dtype: string;
}

interface Concept {
  channel: number;
  relevance: number;
  share: number;
}

interface RegionConcept {
  channel: number;
  relevance: number;
  share_of_total: number;
  share_of_region: number;
  references: { dataset: string; index: number; value: number }[];
}

interface AtlasModel {
  [trait: string]: unknown;
  error: string;
  busy: boolean;
  layer: string;
  channel: number | null;
  layers: { name: string; channels: number; spatial: boolean }[];
  layer_menu: LayerGroup[];
  mode: string;
  region: ArrayValue | null;
  image: DataView | null;
  segments: ArrayValue | null;
  assignment: ArrayValue | null;
  segment_relevance: ArrayValue | null;
  concepts: Concept[];
  caption: string;
  magnitude: number;
  region_concepts: RegionConcept[];
  region_summary: {
    pixels?: number;
    region_total?: number;
    total?: number;
    region_magnitude?: number;
    magnitude?: number;
    conditions?: string;
  };
  region_heatmaps: ArrayValue | null;
  region_images: DataView[];
}

type Model = AnyModel<AtlasModel>;

/** The atlas as decoded from the kernel's arrays. */
interface Atlas extends Grid {
  labels: Int32Array;
  first: Uint8Array;
  second: Uint8Array;
  relevance: Float32Array;
  concepts: number;
  pixelMode: boolean;
}

const MIN_DRAG_PX = 4; // a pointer that moves less than this (CSS pixels) clicks a superpixel
const percent = (value: number): string => `${(100 * value).toFixed(1)} %`;

function readArray(value: ArrayValue | null, dimensions: number): DecodedArray | null {
  if (value === null || value === undefined || isEmpty(value.data)) return null;
  const meta = { shape: value.shape, dtype: value.dtype };
  if (!isArrayMeta(meta) || meta.shape.length !== dimensions) {
    throw new Error(`expected a ${dimensions}-D array; got ${JSON.stringify(meta)}`);
  }
  return decodeArray(value.data, meta);
}

function decodeAtlas(model: Model): Atlas | null {
  const segments = readArray(model.get("segments"), 2);
  const assignment = readArray(model.get("assignment"), 2);
  const relevance = readArray(model.get("segment_relevance"), 2);
  if (segments === null || assignment === null || relevance === null) return null;
  const [height, width] = segments.shape;
  const count = assignment.shape[1];
  return {
    width,
    height,
    labels: Int32Array.from(segments.data, Math.round),
    first: assignment.data.slice(0, count) as Uint8Array,
    second: assignment.data.slice(count, 2 * count) as Uint8Array,
    relevance: relevance.data as Float32Array,
    concepts: relevance.shape[1],
    pixelMode: count === width * height,
  };
}

async function decodeImage(view: DataView): Promise<Uint8ClampedArray<ArrayBuffer> & { grid: Grid }> {
  const url = pngUrl(view);
  try {
    const image = new Image();
    image.src = url;
    await image.decode();
    const scratch = document.createElement("canvas");
    scratch.width = image.naturalWidth;
    scratch.height = image.naturalHeight;
    const context = scratch.getContext("2d");
    if (context === null) throw new Error("the browser gave no 2D canvas context");
    context.drawImage(image, 0, 0);
    const { data } = context.getImageData(0, 0, scratch.width, scratch.height);
    return Object.assign(data, { grid: { width: scratch.width, height: scratch.height } });
  } finally {
    URL.revokeObjectURL(url);
  }
}

function putPixels(canvas: HTMLCanvasElement, rgba: Uint8ClampedArray<ArrayBuffer>, width: number, height: number): void {
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d")?.putImageData(new ImageData(rgba, width, height), 0, 0);
}

/** The controls above the atlas: layer, atlas kind, number of concepts, threshold and SLIC parameters. */
function atlasControls(shell: Shell, model: Model): { bar: HTMLElement; slic: HTMLElement } {
  const any = model as unknown as AnyModel<Record<string, unknown>>;
  const bar = element("div", "crpw-controls crpw-atlas-controls");
  const layer = boundSelect(shell, any, "layer", "Layer", []);
  shell.listen(
    ["layers", "layer_menu", "layer"],
    () => {
      const channels = new Map(model.get("layers").map((info) => [info.name, info.channels]));
      const label = (name: string): string => (channels.has(name) ? `${name} (${channels.get(name)})` : name);
      layer.setChoices(layerChoices(model.get("layer_menu"), model.get("layer"), label));
    },
    true,
  );
  const mode = boundSelect(shell, any, "mode", "Atlas", [
    { value: "superpixels", label: "superpixels" },
    { value: "pixels", label: "single pixels" },
  ]);
  const concepts = boundNumber(shell, any, "n_concepts", "Concepts", { min: 1, max: 12, step: 1 }, true);
  const threshold = boundNumber(
    shell,
    any,
    "threshold",
    "Density threshold",
    { min: 0, max: 1, step: 0.01, format: (v) => `${Math.round(100 * v)} % of max` },
    false,
  );
  bar.append(layer.field, mode.field, concepts.field, threshold.field);
  const slic = element("div", "crpw-controls crpw-atlas-slic");
  const segments = boundNumber(shell, any, "n_segments", "Superpixels", { min: 2, max: 2000, step: 1 }, true);
  const compactness = boundNumber(shell, any, "compactness", "Compactness", { min: 0.01, step: 0.5 }, false);
  const sigma = boundNumber(shell, any, "sigma", "Smoothing (px)", { min: 0, step: 0.25 }, false);
  slic.append(segments.field, compactness.field, sigma.field);
  shell.listen(
    ["mode"],
    () => {
      const pixels = model.get("mode") === "pixels";
      for (const input of [segments.input, compactness.input, sigma.input]) input.disabled = pixels;
      slic.classList.toggle("crpw-disabled", pixels);
    },
    true,
  );
  return { bar, slic };
}

/** Mark the legend entry of the channel in focus. */
function markFocus(list: HTMLOListElement, model: Model): void {
  const focus = String(model.get("channel"));
  for (const button of list.querySelectorAll<HTMLButtonElement>("button")) {
    button.setAttribute("aria-pressed", String(button.dataset.channel === focus));
  }
}

/** The legend: one button per concept, its colour, channel and share of the layer's summed |R|. */
function renderLegend(list: HTMLOListElement, model: Model, heading: HTMLElement): void {
  const magnitude = model.get("magnitude");
  heading.textContent = `Concepts (% of the layer's summed |R|, ${formatValue(magnitude)})`;
  list.replaceChildren(
    ...model.get("concepts").map((concept, position) => {
      const item = element("li", "");
      const button = element("button", "crpw-atlas-concept");
      button.type = "button";
      button.dataset.channel = String(concept.channel);
      button.title =
        `channel ${concept.channel}: relevance ${formatValue(concept.relevance)}, ${percent(concept.share)} of the ` +
        "layer's summed |R|. Click to show its references and heatmaps in the linked views.";
      const swatch = element("span", "crpw-atlas-swatch");
      swatch.style.background = conceptColor(position);
      button.append(
        swatch,
        element("span", "crpw-atlas-concept-name", `ch ${concept.channel}`),
        element("span", "crpw-value", percent(concept.share)),
      );
      button.addEventListener("click", () => {
        model.set("channel", concept.channel);
        model.save_changes();
      });
      item.append(button);
      return item;
    }),
  );
  markFocus(list, model);
}

/** The region's most relevant concepts: heatmap, shares of the global and regional relevance, references. */
class RegionPanel {
  readonly root = element("section", "crpw-atlas-region");
  private readonly summary = element("p", "crpw-atlas-region-summary");
  private readonly conditioned = element("p", "crpw-atlas-region-conditioned");
  private readonly list = element("ol", "crpw-atlas-region-list");
  private readonly scale = colourBar();
  private urls: string[] = [];
  /** The sample's pixels, under the region's heatmaps. */
  image: (Uint8ClampedArray<ArrayBuffer> & { grid: Grid }) | null = null;

  constructor(private readonly model: Model) {
    this.root.setAttribute("aria-label", "Concepts of the region");
    this.root.append(element("h4", "crpw-atlas-heading", "Region"), this.summary, this.conditioned, this.list);
    this.root.append(this.scale.root);
  }

  render(): void {
    const concepts = this.model.get("region_concepts");
    const summary = this.model.get("region_summary");
    if (!concepts.length || summary.pixels === undefined) {
      this.summary.textContent =
        "Drag over the atlas to brush a region or draw a lasso (choose the tool on the right); click superpixels " +
        "to add or remove them. Keyboard: focus the atlas, move with the arrow keys, Enter adds or removes.";
      this.conditioned.textContent = "";
      this.scale.root.hidden = true;
      this.clear();
      return;
    }
    this.summary.textContent =
      `${summary.pixels} pixels. Relevance inside: ${formatValue(summary.region_total ?? 0)} (signed sum over the ` +
      `channels; the layer's signed total is ${formatValue(summary.total ?? 0)}). The most relevant concepts ` +
      `inside: % of the layer's summed |R| (${formatValue(summary.magnitude ?? 0)}) and, in parentheses, % of ` +
      `the region's summed |R| (${formatValue(summary.region_magnitude ?? 0)}).`;
    this.conditioned.textContent = summary.conditions
      ? `Conditioned: only relevance through ${summary.conditions} counts.`
      : "";
    this.scale.root.hidden = false;
    const heatmaps = readArray(this.model.get("region_heatmaps"), 3);
    const images = this.model.get("region_images");
    this.clear();
    let next = 0;
    this.list.replaceChildren(
      ...concepts.map((concept, position) => {
        const item = this.card(concept, heatmaps, position, images.slice(next, next + concept.references.length));
        next += concept.references.length;
        return item;
      }),
    );
  }

  private card(concept: RegionConcept, heatmaps: DecodedArray | null, position: number, images: DataView[]): HTMLLIElement {
    const item = element("li", "crpw-atlas-card");
    item.dataset.channel = String(concept.channel);
    const name = element("button", "crpw-atlas-card-name", `ch ${concept.channel}`);
    name.type = "button";
    name.title = "Focus this channel in the linked views";
    name.addEventListener("click", () => {
      this.model.set("channel", concept.channel);
      this.model.save_changes();
    });
    const shares = element(
      "span",
      "crpw-atlas-card-share",
      `${percent(concept.share_of_total)} (${percent(concept.share_of_region)})`,
    );
    shares.title =
      `relevance inside the region ${formatValue(concept.relevance)}: ${percent(concept.share_of_total)} of the ` +
      `layer's summed |R|, ${percent(concept.share_of_region)} of the region's`;
    const head = element("div", "crpw-atlas-card-head");
    head.append(name, shares);
    item.append(head);
    if (heatmaps !== null && position < heatmaps.shape[0]) {
      const [, height, width] = heatmaps.shape;
      const canvas = element("canvas", "crpw-atlas-card-heatmap");
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", `conditional heatmap of channel ${concept.channel}`);
      const slice = heatmaps.data.subarray(position * width * height, (position + 1) * width * height);
      const colours = colorize(slice);
      const picture = this.image !== null && this.image.length === colours.length ? blend(this.image, colours, 0.5) : colours;
      putPixels(canvas, picture, width, height);
      item.append(canvas);
    }
    if (images.length) {
      const references = element("div", "crpw-atlas-card-references");
      concept.references.forEach((reference, i) => {
        const url = pngUrl(images[i]);
        this.urls.push(url);
        const image = element("img", "crpw-atlas-reference");
        image.src = url;
        image.alt = `${reference.dataset} #${reference.index}`;
        image.title = `${reference.dataset} #${reference.index}, relevance ${formatValue(reference.value)}`;
        references.append(image);
      });
      item.append(references);
    }
    return item;
  }

  clear(): void {
    for (const url of this.urls.splice(0)) URL.revokeObjectURL(url);
    this.list.replaceChildren();
  }
}

/** A pointer drawing on the atlas, from pointerdown to pointerup. */
interface Stroke {
  id: number;
  start: Point;
  last: Point;
  /** Where it started, in CSS pixels (to tell a click from a drag). */
  client: Point;
  lasso: Point[];
  moved: boolean;
  /** 1 adds to the region, 0 erases. */
  value: 0 | 1;
  /** The region before the stroke (restored when the stroke is cancelled). */
  before: Uint8Array;
}

/** The atlas picture, the region overlay and the pointer and keyboard drawing on it. */
class AtlasStage {
  readonly root = element("figure", "crpw-figure crpw-atlas-figure");
  readonly readout = element("div", "crpw-atlas-readout");
  private readonly base = element("canvas", "crpw-atlas-canvas");
  private readonly top = element("canvas", "crpw-atlas-overlay");
  private readonly caption = element("figcaption", "crpw-caption");
  private image: (Uint8ClampedArray<ArrayBuffer> & { grid: Grid }) | null = null;
  private atlas: Atlas | null = null;
  private mask: Uint8Array = new Uint8Array(0);
  private scale = 1;
  private cursor: Point | null = null;
  private stroke: Stroke | null = null;
  tool: "brush" | "lasso" = "brush";
  /** Brush radius in CSS pixels on screen, whatever the image size. */
  brushRadius = 12;
  erase = false;

  constructor(private readonly model: Model) {
    const stage = element("div", "crpw-atlas-stage");
    this.base.setAttribute("aria-hidden", "true");
    this.top.tabIndex = 0;
    this.top.setAttribute("role", "application");
    this.top.setAttribute(
      "aria-label",
      "Concept atlas. Arrow keys move between superpixels, Enter or Space adds or removes one from the region.",
    );
    this.readout.setAttribute("aria-live", "polite");
    stage.append(this.base, this.top);
    this.root.append(stage, this.caption, this.readout);
    this.top.addEventListener("pointerdown", (event) => this.down(event));
    this.top.addEventListener("pointermove", (event) => this.move(event));
    this.top.addEventListener("pointerup", (event) => this.up(event));
    this.top.addEventListener("pointercancel", (event) => this.cancel(event));
    this.top.addEventListener("pointerleave", () => this.stroke === null && (this.readout.textContent = ""));
    this.top.addEventListener("keydown", (event) => this.key(event));
    this.top.addEventListener("focus", () => this.showCursor());
    this.top.addEventListener("blur", () => {
      this.cursor = null;
      this.paintTop();
    });
  }

  get grid(): Grid | null {
    return this.atlas;
  }

  setCaption(text: string): void {
    this.caption.textContent = text;
  }

  setImage(image: (Uint8ClampedArray<ArrayBuffer> & { grid: Grid }) | null): void {
    this.image = image;
    this.paintBase();
  }

  setAtlas(atlas: Atlas | null): void {
    this.atlas = atlas;
    if (atlas !== null && this.mask.length !== atlas.width * atlas.height) this.readRegion();
    this.paintBase();
  }

  /** Take the region from the kernel (a mask of another size is ignored until the atlas matches it). */
  readRegion(): void {
    const grid = this.atlas;
    if (grid === null) return;
    const region = readArray(this.model.get("region"), 2);
    const fits = region !== null && region.shape[0] === grid.height && region.shape[1] === grid.width;
    this.mask = fits ? Uint8Array.from(region.data) : new Uint8Array(grid.width * grid.height);
    this.paintTop();
  }

  private paintBase(): void {
    const { atlas, image } = this;
    const fits = atlas !== null && image !== null && image.grid.width === atlas.width && image.grid.height === atlas.height;
    this.root.hidden = !fits;
    if (!fits) return;
    this.scale = displayScale(atlas);
    const picture = { ...atlas, image, boundaries: !atlas.pixelMode };
    putPixels(this.base, paintAtlas(picture, this.scale), atlas.width * this.scale, atlas.height * this.scale);
    const cssWidth = (320 * atlas.width) / Math.max(atlas.width, atlas.height);
    this.base.style.width = `${cssWidth}px`;
    this.paintTop();
  }

  private paintTop(): void {
    const atlas = this.atlas;
    if (atlas === null || this.mask.length !== atlas.width * atlas.height) return;
    const cursor = this.cursor === null ? null : this.segmentMask(segmentAt(atlas.labels, atlas, this.cursor));
    const pixels = paintOverlay(atlas, this.scale, { region: this.mask, cursor });
    putPixels(this.top, pixels, atlas.width * this.scale, atlas.height * this.scale);
    const lasso = this.stroke?.lasso ?? [];
    const context = this.top.getContext("2d");
    if (context !== null && lasso.length > 1) {
      context.beginPath();
      context.moveTo(lasso[0].x * this.scale, lasso[0].y * this.scale);
      for (const point of lasso.slice(1)) context.lineTo(point.x * this.scale, point.y * this.scale);
      context.closePath();
      context.setLineDash([4, 3]);
      context.lineWidth = Math.max(1, this.scale / 2);
      context.strokeStyle = "#ffd400";
      context.stroke();
    }
  }

  private segmentMask(label: number): Uint8Array {
    const labels = this.atlas?.labels ?? new Int32Array(0);
    return Uint8Array.from(labels, (l) => (l === label ? 1 : 0));
  }

  private toImage(event: PointerEvent): Point {
    const rect = this.top.getBoundingClientRect();
    const grid = this.atlas ?? { width: 1, height: 1 };
    return {
      x: ((event.clientX - rect.left) / rect.width) * grid.width,
      y: ((event.clientY - rect.top) / rect.height) * grid.height,
    };
  }

  private down(event: PointerEvent): void {
    if (this.atlas === null || (event.pointerType === "mouse" && event.button !== 0)) return;
    event.preventDefault();
    this.top.focus({ preventScroll: true });
    this.top.setPointerCapture(event.pointerId);
    const point = this.toImage(event);
    this.stroke = {
      id: event.pointerId,
      start: point,
      last: point,
      client: { x: event.clientX, y: event.clientY },
      lasso: [point],
      moved: false,
      value: this.erase || event.altKey ? 0 : 1,
      before: this.mask.slice(),
    };
  }

  private move(event: PointerEvent): void {
    const atlas = this.atlas;
    if (atlas === null) return;
    const point = this.toImage(event);
    const stroke = this.stroke;
    if (stroke === null || stroke.id !== event.pointerId) {
      this.describe(point);
      return;
    }
    if (!stroke.moved && Math.hypot(event.clientX - stroke.client.x, event.clientY - stroke.client.y) < MIN_DRAG_PX) {
      return;
    }
    stroke.moved = true;
    if (this.tool === "brush") {
      const radius = (this.brushRadius * atlas.width) / this.top.getBoundingClientRect().width;
      strokeBrush(this.mask, atlas, stroke.last, point, radius, stroke.value);
    } else {
      stroke.lasso.push(point);
    }
    stroke.last = point;
    this.paintTop();
  }

  private up(event: PointerEvent): void {
    const atlas = this.atlas;
    const stroke = this.stroke;
    if (atlas === null || stroke === null || stroke.id !== event.pointerId) return;
    this.stroke = null;
    if (this.top.hasPointerCapture(event.pointerId)) this.top.releasePointerCapture(event.pointerId);
    if (!stroke.moved) {
      const label = segmentAt(atlas.labels, atlas, stroke.start);
      const added = toggleSegment(this.mask, atlas.labels, label);
      this.readout.textContent = `${this.segmentName(label)} ${added ? "added to" : "removed from"} the region`;
    } else if (this.tool === "lasso") {
      applyShape(this.mask, rasterizePolygon(stroke.lasso, atlas), stroke.value);
    }
    this.paintTop();
    this.commit();
  }

  private cancel(event: PointerEvent): void {
    if (this.stroke === null || this.stroke.id !== event.pointerId) return;
    this.mask = this.stroke.before;
    this.stroke = null;
    this.paintTop();
  }

  private key(event: KeyboardEvent): void {
    const atlas = this.atlas;
    if (atlas === null) return;
    const step = atlas.pixelMode ? 1 : Math.max(1, Math.round(Math.max(atlas.width, atlas.height) / 16));
    const moves: Record<string, [number, number]> = {
      ArrowLeft: [-step, 0],
      ArrowRight: [step, 0],
      ArrowUp: [0, -step],
      ArrowDown: [0, step],
    };
    const cursor = this.cursor ?? { x: atlas.width / 2, y: atlas.height / 2 };
    if (event.key in moves) {
      const [dx, dy] = moves[event.key];
      this.cursor = moveCursor(cursor, atlas, dx, dy);
      this.describe(this.cursor);
    } else if (event.key === "Enter" || event.key === " ") {
      const label = segmentAt(atlas.labels, atlas, cursor);
      const added = toggleSegment(this.mask, atlas.labels, label);
      this.readout.textContent = `${this.segmentName(label)} ${added ? "added to" : "removed from"} the region`;
      this.commit();
    } else {
      return;
    }
    event.preventDefault();
    this.paintTop();
  }

  /** Show the keyboard cursor when the atlas gets the keyboard focus (not when a pointer focuses it). */
  private showCursor(): void {
    const atlas = this.atlas;
    if (atlas === null || !this.top.matches(":focus-visible")) return;
    this.cursor = this.cursor ?? moveCursor({ x: atlas.width / 2, y: atlas.height / 2 }, atlas, 0, 0);
    this.describe(this.cursor);
    this.paintTop();
  }

  private segmentName(label: number): string {
    const atlas = this.atlas;
    if (atlas !== null && atlas.pixelMode) return `pixel (${label % atlas.width}, ${Math.floor(label / atlas.width)})`;
    return `superpixel ${label}`;
  }

  /** Say which concepts are most relevant in the superpixel under the pointer or the keyboard cursor. */
  private describe(point: Point): void {
    const atlas = this.atlas;
    if (atlas === null) return;
    const label = segmentAt(atlas.labels, atlas, point);
    const concepts = this.model.get("concepts");
    const row = atlas.relevance.subarray(label * atlas.concepts, (label + 1) * atlas.concepts);
    const ranked = [...row.keys()].sort((a, b) => row[b] - row[a]).slice(0, 3);
    const inRegion = this.mask[Math.floor(point.y) * atlas.width + Math.floor(point.x)] === 1 ? ", in the region" : "";
    const text =
      atlas.first[label] === NONE
        ? "below the density threshold"
        : ranked.map((i) => `ch ${concepts[i]?.channel ?? "?"} ${formatValue(row[i])}`).join(", ");
    this.readout.textContent = `${this.segmentName(label)}${inRegion}: ${text}`;
  }

  private commit(): void {
    const atlas = this.atlas;
    if (atlas === null) return;
    const empty = regionSize(this.mask) === 0;
    const value = { data: new DataView(this.mask.slice().buffer), shape: [atlas.height, atlas.width], dtype: "uint8" };
    this.model.set("region", empty ? null : value);
    this.model.save_changes();
  }

  clearRegion(): void {
    this.mask.fill(0);
    this.paintTop();
    this.commit();
  }
}

/** The region tools: brush or lasso, brush size, erase, clear. */
function regionTools(stage: AtlasStage): HTMLElement {
  const tools = element("fieldset", "crpw-atlas-tools");
  tools.append(element("legend", "crpw-field-name", "Region tool"));
  const name = uniqueId("tool");
  for (const [value, label] of [
    ["brush", "Brush"],
    ["lasso", "Lasso"],
  ] as const) {
    const input = element("input", "");
    input.type = "radio";
    input.name = name;
    input.value = value;
    input.checked = stage.tool === value;
    input.addEventListener("change", () => (stage.tool = value));
    const option = element("label", "crpw-radio");
    option.append(input, element("span", "", label));
    tools.append(option);
  }
  const size = element("input", "crpw-range");
  size.type = "range";
  size.min = "2";
  size.max = "40";
  size.value = String(stage.brushRadius);
  const readout = element("output", "crpw-value", `${stage.brushRadius} px`);
  size.addEventListener("input", () => {
    stage.brushRadius = Number(size.value);
    readout.value = `${size.value} px`;
    size.setAttribute("aria-valuetext", `radius ${readout.value}`);
  });
  const sizeField = element("label", "crpw-field");
  sizeField.append(element("span", "crpw-field-name", "Brush size"), size, readout);
  const erase = element("input", "crpw-checkbox");
  erase.type = "checkbox";
  erase.addEventListener("change", () => (stage.erase = erase.checked));
  const eraseField = element("label", "crpw-field crpw-check");
  eraseField.append(erase, element("span", "crpw-field-name", "Erase (or hold Alt)"));
  const clear = element("button", "crpw-button", "Clear region");
  clear.type = "button";
  clear.addEventListener("click", () => stage.clearRegion());
  tools.append(sizeField, eraseField, clear);
  return tools;
}

function render({ model, el }: RenderProps<AtlasModel>): () => void {
  const shell = mountShell(el, model, "atlas");
  const any = model as unknown as AnyModel<Record<string, unknown>>;
  const { bar, slic } = atlasControls(shell, model);
  const stage = new AtlasStage(model);
  const legend = element("ol", "crpw-atlas-legend");
  legend.setAttribute("aria-label", "Concepts: colour and channel");
  const legendHeading = element("h4", "crpw-atlas-heading", "Concepts");
  const side = element("div", "crpw-atlas-side");
  side.append(
    legendHeading,
    element("p", "crpw-atlas-note", "Fill: most relevant concept. Dots: second most relevant. Click to focus a channel."),
    legend,
    regionTools(stage),
    boundNumber(shell, any, "region_k", "Region concepts", { min: 1, max: 12, step: 1 }, true).field,
  );
  const main = element("div", "crpw-atlas-main");
  main.append(stage.root, side);
  const region = new RegionPanel(model);
  shell.body.append(bar, slic, main, region.root);

  let imageRequest = 0;
  const loadImage = async (): Promise<void> => {
    const request = ++imageRequest;
    const view = model.get("image");
    const decoded = isEmpty(view) ? null : await decodeImage(view);
    if (request === imageRequest) {
      stage.setImage(decoded);
      region.image = decoded;
      region.render();
    }
  };
  shell.listen(["image"], () => void loadImage().catch((error) => stage.setCaption(`image: ${String(error)}`)), true);
  // The atlas's arrays change together: decode them once per update.
  shell.listen(["segments", "assignment", "segment_relevance"], coalesced(() => stage.setAtlas(decodeAtlas(model))), true);
  shell.listen(["region"], () => stage.readRegion(), true);
  shell.listen(["caption"], () => stage.setCaption(model.get("caption")), true);
  shell.listen(["concepts", "magnitude"], coalesced(() => renderLegend(legend, model, legendHeading)), true);
  shell.listen(["channel"], () => markFocus(legend, model));
  shell.listen(["region_concepts", "region_summary", "region_heatmaps", "region_images"], coalesced(() => region.render()), true);
  shell.onDispose(() => region.clear());
  return shell.dispose;
}

export default { render };
