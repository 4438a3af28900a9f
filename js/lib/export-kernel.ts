/**
 * The exported page's stand-in for the kernel (crp_widgets/widgets/export.py writes its data): it holds the page's
 * state (sample, layer, channel in focus, selected channels, gallery options) and gives every view, for that state,
 * the traits the kernel gave it when the file was made. It answers the views' requests as the kernel would (a
 * click on a sample, a layer or a channel; a gallery option), from that data only: whatever the file does not hold,
 * the view says so in its `note` and keeps its last valid state, as the explorer keeps its state when it refuses a
 * value. Nothing here computes a picture: heatmaps and references are the kernel's, picked or cut out of what it sent.
 */

export const VIEWS = ["sample", "channels", "heatmaps", "gallery", "atlas", "graph"] as const;
export type ViewName = (typeof VIEWS)[number];

type Traits = Record<string, unknown>;
/** Trait name to the index of its value in `values`. */
type TraitIds = Record<string, number>;

export interface ViewData {
  base: TraitIds;
  states: Record<string, TraitIds>;
  /** Traits that show nothing, per part of the view (e.g. the grid of the heatmaps). */
  empty: Record<string, TraitIds>;
  /** The heatmaps only: the left heatmap's caption and note with one top channel selected, by "s|layer|channel". */
  selected?: Record<string, TraitIds>;
}

export interface About {
  samples: number[];
  layers: string[];
  channels: number;
  references: number;
  target: { class: number; name: string } | null;
  store: Traits | null;
}

export interface ExportData {
  samples: number[];
  layers: string[];
  /** "s|layer" to the channels whose heatmaps the file holds, most relevant first. */
  top: Record<string, number[]>;
  /** Channels per layer. */
  counts: Record<string, number>;
  /** The channel in focus of each layer (its attribution graph is held for every sample). */
  focus: Record<string, number>;
  views: Record<ViewName, ViewData>;
  /** The code of a view in a state: "view|..." to a value index. */
  code: Record<string, number>;
  initial: { sample: number; layer: string; channel: number; selected: number[]; top_k: number };
  about: About;
  /** Decoded values (buffers are `DataView`s). */
  values: unknown[];
}

interface ArrayValue {
  data: DataView;
  shape: number[];
  dtype: string;
}

interface GalleryOptions {
  mode: string;
  compare: boolean;
  view: string;
  k: number;
  maximization: string;
  init: string;
  cls: number | null;
}

export interface PageState {
  sample: number;
  layer: string;
  channel: number;
  selected: number[];
  /** The root of the attribution graph shown (kept when a card of the graph is chosen, as in the explorer). */
  graphRoot: [string, number];
  gallery: GalleryOptions;
  preview: { layer: string; channel: number } | null;
}

/** Gallery views the file holds (its references as crops and masked crops). */
export const GALLERY_VIEWS = ["crop", "masked"];
const PREVIEW_COUNT = 6;
const NOT_HELD = "Not in this file:";
const KERNEL = "that needs the explorer in Jupyter";

const join = (values: (string | number)[]): string => values.join(", ");
const plural = (count: number, word: string): string => `${count} ${word}${count === 1 ? "" : "s"}`;

/** Bytes `[start, start + length)` of a buffer view as a view of their own (no copy). */
function subview(view: DataView, start: number, length: number): DataView {
  return new DataView(view.buffer, view.byteOffset + start, length);
}

/** Rows of a `[k, ...]` float32 or uint8 array, in the given order (the kernel's own numbers, cut out). */
export function takeRows(array: ArrayValue, rows: number[]): ArrayValue {
  const [count, ...rest] = array.shape;
  const size = array.data.byteLength / Math.max(1, count);
  if (rows.every((row, i) => row === rows[0] + i)) {
    return { ...array, data: subview(array.data, rows[0] * size, rows.length * size), shape: [rows.length, ...rest] };
  }
  const bytes = new Uint8Array(rows.length * size);
  rows.forEach((row, i) => bytes.set(new Uint8Array(array.data.buffer, array.data.byteOffset + row * size, size), i * size));
  return { ...array, data: new DataView(bytes.buffer), shape: [rows.length, ...rest] };
}

/** One row of a `[k, H, W]` array as an `[H, W]` array. */
export function row(array: ArrayValue, index: number): ArrayValue {
  const taken = takeRows(array, [index]);
  return { ...taken, shape: taken.shape.slice(1) };
}

export class PageKernel {
  state: PageState;
  /** Why the last request of a view was refused (until the state changes). */
  private refusals: Partial<Record<ViewName, string>> = {};
  /** Traits only the page shows (an opacity, "show all", the page of the strip): kept as the view set them. */
  private readonly local: Partial<Record<ViewName, Traits>> = {};
  private readonly memo = new Map<string, unknown>();

  constructor(readonly data: ExportData) {
    const { initial } = data;
    const gallery = this.values(data.views.gallery.base);
    this.state = {
      sample: initial.sample,
      layer: initial.layer,
      channel: initial.channel,
      selected: [...initial.selected],
      graphRoot: [initial.layer, initial.channel],
      gallery: {
        mode: String(gallery.mode ?? "relevance"),
        compare: Boolean(gallery.compare),
        view: String(gallery.view ?? "crop"),
        k: data.about.references,
        maximization: String(gallery.maximization ?? "sum"),
        init: String(gallery.init ?? "relevance"),
        cls: null,
      },
      preview: null,
    };
  }

  // ------------------------------------------------------------------------------------------- what views show

  /** The traits `view` shows in the current state, with its `note` and `snippet`. */
  traits(view: ViewName): Traits {
    const shown = { ...this.shown(view) };
    const refusal = this.refusals[view];
    if (refusal) shown.note = shown.note ? `${refusal}\n${String(shown.note)}` : refusal;
    shown.note ??= "";
    Object.assign(shown, this.local[view]);
    shown.busy = false;
    shown.computing = "";
    return shown;
  }

  private shown(view: ViewName): Traits {
    switch (view) {
      case "sample":
        return this.sampleTraits();
      case "channels":
        return this.channelTraits();
      case "heatmaps":
        return this.heatmapTraits();
      case "gallery":
        return this.galleryTraits();
      case "atlas":
        return this.atlasTraits();
      case "graph":
        return this.graphTraits();
    }
  }

  private values(ids: TraitIds | undefined): Traits {
    const traits: Traits = {};
    for (const [name, id] of Object.entries(ids ?? {})) traits[name] = this.data.values[id];
    return traits;
  }

  private state_(view: ViewName, key: string): TraitIds | undefined {
    return this.data.views[view].states[key];
  }

  private empty(view: ViewName, ...parts: string[]): Traits {
    return Object.assign({}, ...parts.map((part) => this.values(this.data.views[view].empty[part])));
  }

  private code(key: string): string {
    const id = this.data.code[key];
    return id === undefined
      ? `# ${NOT_HELD} the code of what this view shows now.\n# The file holds the code of every view it shows as the kernel made it.\n`
      : String(this.data.values[id]);
  }

  private get key(): string {
    return `${this.state.sample}|${this.state.layer}`;
  }

  private get top(): number[] {
    return this.data.top[this.key] ?? [];
  }

  private sampleTraits(): Traits {
    const { sample } = this.state;
    return {
      ...this.values(this.data.views.sample.base),
      ...this.values(this.state_("sample", String(sample))),
      snippet: this.code(`sample|${sample}`),
    };
  }

  private channelTraits(): Traits {
    const { layer, channel, selected, preview } = this.state;
    const traits: Traits = {
      ...this.values(this.data.views.channels.base),
      ...this.values(this.state_("channels", this.key)),
      layer,
      channel,
      conditions: this.memoised(`conditions|${layer}|${[...selected].sort((a, b) => a - b)}`, () =>
        selected.length > 0 ? { [layer]: [...selected].sort((a, b) => a - b) } : {},
      ),
      snippet: this.code(`channels|${this.key}`),
    };
    if (preview !== null) {
      traits.preview = this.memoised(`preview|${preview.layer}|${preview.channel}`, () => {
        const found = this.gallerySnapshot(preview.layer, preview.channel, "relevance", "crop");
        return found === undefined ? [] : (found.images as DataView[]).slice(0, PREVIEW_COUNT);
      });
      traits.preview_for = this.memoised(`preview-for|${preview.layer}|${preview.channel}`, () => ({ ...preview }));
    }
    return traits;
  }

  private memoised<T>(key: string, make: () => T): T {
    if (!this.memo.has(key)) this.memo.set(key, make());
    return this.memo.get(key) as T;
  }

  private heatmapTraits(): Traits {
    const { layer, selected } = this.state;
    const key = this.key;
    const held = this.values(this.state_("heatmaps", key));
    const traits: Traits = { ...this.values(this.data.views.heatmaps.base), ...held };
    traits.top_k = this.data.initial.top_k;
    traits.localization = false;
    const top = this.top;
    const grid = held.grid as ArrayValue | null | undefined;
    const info = (held.grid_info ?? {}) as Traits;
    const cut = (positions: number[], chosen: boolean): Traits => ({
      grid: grid ? this.memoised(`grid|${key}|${positions}`, () => takeRows(grid, positions)) : null,
      grid_info: this.memoised(`grid-info|${key}|${positions}|${chosen}`, () => ({
        ...info,
        channels: positions.map((p) => top[p]),
        relevance: positions.map((p) => (info.relevance as number[])[p]),
        shares: positions.map((p) => (info.shares as number[])[p]),
        selected: chosen,
      })),
    });
    if (selected.length === 0) {
      const count = Math.min(this.data.initial.top_k, top.length);
      return { ...traits, ...cut([...Array(count).keys()], false), snippet: this.code(`heatmaps|${key}|`) };
    }
    const missing = selected.filter((channel) => !top.includes(channel));
    if (missing.length > 0 || grid == null) {
      const which = missing.length === 1 ? `channel ${missing[0]}` : `channels ${join(missing)}`;
      return {
        ...traits,
        ...this.empty("heatmaps", "heatmap", "grid"),
        note:
          `${NOT_HELD} the heatmaps of ${which} of ${layer}. It holds those of the ${plural(top.length, "channel")} ` +
          `most relevant for sample #${this.state.sample}: ${join(top)}.`,
        snippet: this.code(""),
      };
    }
    const positions = selected.map((channel) => top.indexOf(channel)).sort((a, b) => a - b);
    const shown = { ...traits, ...cut(positions, true) };
    if (positions.length === 1) {
      const channel = top[positions[0]];
      const heatmap = this.memoised(`heatmap|${key}|${positions[0]}`, () => row(grid, positions[0]));
      return {
        ...shown,
        heatmap,
        ...this.values(this.data.views.heatmaps.selected?.[`${key}|${channel}`]),
        snippet: this.code(`heatmaps|${key}|${channel}`),
      };
    }
    const channels = positions.map((p) => top[p]);
    return {
      ...shown,
      ...this.empty("heatmaps", "heatmap"),
      note:
        `${NOT_HELD} the heatmap through channels ${channels.join(" or ")} together (it holds one channel at a ` +
        "time; each is in the grid).",
      snippet: this.code(""),
    };
  }

  private gallerySnapshot(layer: string, channel: number, mode: string, view: string): Traits | undefined {
    const ids = this.state_("gallery", `${layer}|${channel}|${mode}|${view}`);
    return ids === undefined ? undefined : this.values(ids);
  }

  private galleryTraits(): Traits {
    const { layer, channel, gallery } = this.state;
    const options = { layer, channel, ...gallery };
    const base = { ...this.values(this.data.views.gallery.base), ...options };
    const none = this.state_("gallery", "none");
    if (none !== undefined) return { ...base, ...this.values(none), ...options, snippet: this.code("") };
    const modes = gallery.compare ? ["relevance", "activation"] : [gallery.mode];
    const found = modes.map((mode) => this.gallerySnapshot(layer, channel, mode, gallery.view));
    if (found.some((snapshot) => snapshot === undefined)) {
      return {
        ...base,
        ...this.empty("gallery", "tiles"),
        message: "",
        note:
          `${NOT_HELD} the references of channel ${channel} of ${layer}. It holds those of the channels whose ` +
          "heatmaps it holds.",
        snippet: this.code(""),
      };
    }
    const snapshots = found as Traits[];
    const key = `gallery|${layer}|${channel}|${modes}|${gallery.view}|${gallery.k}`;
    const { groups, images } = this.memoised(key, () => {
      const groups: Traits[] = [];
      const images: DataView[] = [];
      for (const snapshot of snapshots) {
        let next = 0;
        const pictures = snapshot.images as DataView[];
        for (const group of snapshot.groups as { tiles: unknown[] }[]) {
          const tiles = group.tiles.slice(0, gallery.k);
          groups.push({ ...group, tiles });
          images.push(...pictures.slice(next, next + tiles.length));
          next += group.tiles.length;
        }
      }
      return { groups, images };
    });
    const first = snapshots[0];
    const empty = groups.every((group) => (group.tiles as unknown[]).length === 0);
    const compareKey = gallery.compare ? "relevance|1" : `${gallery.mode}|0`;
    const stored = first.store_info as Traits | undefined;
    return {
      ...base,
      ...first,
      ...options,
      // the references the file holds per channel: the most the gallery's k can show
      store_info: this.memoised("store-info", () => ({ ...stored, k: this.data.about.references })),
      groups,
      images,
      message: empty ? first.message : "",
      snippet:
        gallery.k === this.data.about.references
          ? this.code(`gallery|${layer}|${channel}|${compareKey}|${gallery.view}`)
          : this.code(""),
    };
  }

  private atlasTraits(): Traits {
    const { layer, channel } = this.state;
    return {
      ...this.values(this.data.views.atlas.base),
      ...this.values(this.state_("atlas", this.key)),
      layer,
      channel,
      region: null,
      snippet: this.code(`atlas|${this.key}`),
    };
  }

  private graphTraits(): Traits {
    const { sample, layer, channel, graphRoot } = this.state;
    const [rootLayer, rootChannel] = graphRoot;
    const base = this.values(this.data.views.graph.base);
    const held = this.values(this.state_("graph", `${sample}|${rootLayer}`));
    const root = (held.graph as { root?: [string, number] } | undefined)?.root;
    const selected = this.memoised(`selected|${layer}|${channel}`, () => [layer, channel]);
    if (root !== undefined && root[0] === rootLayer && root[1] === rootChannel) {
      return { ...base, ...held, selected, snippet: this.code(`graph|${sample}|${rootLayer}`) };
    }
    const focus = this.data.focus[rootLayer];
    const where =
      focus === undefined ? "" : ` It holds the graph of channel ${focus} of ${rootLayer} for every sample.`;
    return {
      ...base,
      ...this.empty("graph", "graph", "drill"),
      path: [],
      expanded: [],
      selected,
      note: `${NOT_HELD} the attribution graph of channel ${rootChannel} of ${rootLayer}.${where}`,
      snippet: this.code(""),
    };
  }

  // ------------------------------------------------------------------------------------------------ requests

  /** Keep a trait that only changes how the page shows what it holds (nothing to look up). */
  keep(view: ViewName, name: string, value: unknown): void {
    this.local[view] = { ...this.local[view], [name]: value };
  }

  /** Clear the notes of refused requests: the state moved on. */
  private moved(): void {
    this.refusals = {};
  }

  /** Refuse a request of `view` with a note; returns the traits to show again (they did not change). */
  refuse(view: ViewName, why: string): void {
    this.refusals[view] = why;
  }

  selectSample(index: number): boolean {
    if (!this.data.samples.includes(index)) {
      this.refuse("sample", `${NOT_HELD} sample #${index}. It holds samples ${join(this.data.samples)}.`);
      return false;
    }
    this.moved();
    this.state.sample = index;
    return true;
  }

  explain(target: number | null, view: ViewName = "sample"): boolean {
    const held = this.data.about.target?.class ?? null;
    if (target === held) return true;
    const what = held === null ? "each sample's predicted class" : `class ${this.data.about.target?.name}`;
    this.refuse(view, `${NOT_HELD} other classes: it explains ${what}; ${KERNEL}.`);
    return false;
  }

  selectLayer(layer: string, view: ViewName): boolean {
    if (!this.data.layers.includes(layer)) {
      this.refuse(view, `${NOT_HELD} layer ${layer}. It holds ${join(this.data.layers)}.`);
      return false;
    }
    if (layer === this.state.layer) return true;
    this.moved();
    const channel = this.data.focus[layer];
    Object.assign(this.state, { layer, channel, selected: [], graphRoot: [layer, channel], preview: null });
    return true;
  }

  /** Focus `channel` of the current layer (the gallery's field, the atlas's legend, a channel click). */
  focus(channel: number, view: ViewName): boolean {
    const count = this.data.counts[this.state.layer];
    if (!Number.isInteger(channel) || channel < 0 || (count !== undefined && channel >= count)) {
      this.refuse(view, `channel ${channel} is out of range: layer ${this.state.layer} has ${count} channels (0 to ${count - 1})`);
      return false;
    }
    this.moved();
    this.state.channel = channel;
    this.state.graphRoot = [this.state.layer, channel];
    return true;
  }

  toggle(channel: number): void {
    if (!this.focus(channel, "channels")) return;
    const selected = new Set(this.state.selected);
    if (selected.has(channel)) selected.delete(channel);
    else selected.add(channel);
    this.state.selected = [...selected];
  }

  removeCondition(layer: string, channel: number | null): void {
    this.moved();
    if (layer !== this.state.layer) return;
    this.state.selected = channel === null ? [] : this.state.selected.filter((c) => c !== channel);
  }

  /** A card of the attribution graph chosen: the linked views follow it, the graph keeps its root. */
  selectNode(layer: string, channel: number): void {
    if (!this.data.layers.includes(layer)) {
      this.refuse("graph", `${NOT_HELD} layer ${layer}, so its views cannot follow this card. It holds ${join(this.data.layers)}.`);
      return;
    }
    this.moved();
    if (layer !== this.state.layer) this.state.selected = [];
    this.state.layer = layer;
    this.state.channel = channel;
  }

  preview(channel: number): void {
    this.state.preview = { layer: this.state.layer, channel };
  }

  /** A gallery option set: what the file holds is shown at once; anything else is refused with a note. */
  galleryOption(name: string, value: unknown): boolean {
    const options = this.state.gallery;
    delete this.refusals.gallery; // an earlier refusal is answered by this request
    const why = (text: string): boolean => {
      this.refuse("gallery", `${NOT_HELD} ${text}; ${KERNEL}.`);
      return false;
    };
    switch (name) {
      case "mode":
        options.mode = String(value);
        return true;
      case "compare":
        options.compare = Boolean(value);
        return true;
      case "view":
        if (!GALLERY_VIEWS.includes(String(value))) {
          const shown = value === "heatmap" ? "the heatmaps of the references" : "the full samples of the references";
          return why(`${shown} (it holds their crops and masked crops)`);
        }
        options.view = String(value);
        return true;
      case "k": {
        const k = Number(value);
        if (!Number.isInteger(k) || k < 1 || k > this.data.about.references) {
          return why(`${k} references per channel (it holds ${this.data.about.references})`);
        }
        options.k = k;
        return true;
      }
      case "maximization":
        return value === options.maximization || why(`the references for the ${String(value)} of the channel`);
      case "init":
        return value === options.init || why("heatmaps started from the activation");
      case "cls":
        return value === null || why("class-conditional references");
      default:
        return why(`the option ${name}`);
    }
  }
}
