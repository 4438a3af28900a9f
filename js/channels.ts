/**
 * ChannelSelector (crp_widgets/widgets/channels.py): the channels of a layer ranked by relevance (CRP Eq. 10) as
 * signed bars with their share of the layer's relevance, and the conditions they make (Eq. 8) as removable chips.
 *
 * The bar list is a virtualised listbox: only the rows in view exist, so "show all" stays fast for thousands of
 * channels. Keyboard: arrow keys, Page keys and Home/End move the active channel, Space or Enter toggles it;
 * hovering or moving onto a channel previews its reference samples when the session has a reference store.
 */
import type { RenderProps } from "@anywidget/types";
import { fillSelect, type LayerGroup, layerChoices } from "./lib/layer-menu";
import { element, mountShell, type Shell } from "./lib/shell";
import {
  type BarScale,
  barColour,
  barGeometry,
  barScale,
  conditionGroups,
  formatShare,
  type RankedChannel,
  rankedChannels,
  scrollToRow,
  shownRows,
  visibleRows,
} from "./lib/views-bars";
import { coalesced, pngImage } from "./lib/views-dom";
import { decodePayload } from "./lib/views-overlay";
import "./lib/theme.css";
import "./channels.css";

interface ChannelModel {
  error: string;
  busy: boolean;
  layers: string[];
  layer_menu: LayerGroup[];
  layer: string;
  ranking: unknown;
  ranking_layer: string;
  total: number;
  magnitude: number;
  ranking_for: { input?: string; class?: string; conditions?: string };
  conditions: Record<string, number[]>;
  channel: number | null;
  top_k: number;
  show_all: boolean;
  has_references: boolean;
  preview: DataView[];
  preview_for: { layer?: string; channel?: number };
  labels: ChannelLabels;
}

/** Concept labels of a layer's channels (Network Dissection, Bau et al. 2017): best concept and IoU per channel. */
interface ChannelLabels {
  layer?: string;
  concepts?: (string | null)[];
  iou?: number[];
}

/** The concept label of `channel` ("stripes 0.12"), or null when the layer has no labels. */
function conceptLabel(labels: ChannelLabels, layer: string, channel: number): string | null {
  if (labels.layer !== layer || labels.concepts === undefined || labels.iou === undefined) return null;
  const concept = labels.concepts[channel];
  return `${concept ?? "none"} ${labels.iou[channel].toFixed(2)}`;
}

type Model = RenderProps<ChannelModel>["model"];

const ROW_HEIGHT = 22;
const MAX_VISIBLE_ROWS = 14;
const PREVIEW_DELAY_MS = 120;
const EQ8 =
  "Conditions (CRP Eq. 8): channels selected in one layer are OR-ed (∨), layers are AND-ed (∧). " +
  "Heatmaps and rankings follow only the relevance that flows through them.";

let instances = 0;

/** The layer chooser (the model's blocks by stage), the channel count and the "show all" toggle. */
function mountHeader(model: Model, shell: Shell, summary: HTMLElement): HTMLElement {
  const header = element("div", "crpw-controls crpw-channels-head");
  const layers = element("select", "crpw-layer");
  const layerLabel = element("label", "crpw-layer-label");
  layerLabel.append("Layer ", layers);
  const showAll = element("input", "crpw-show-all");
  showAll.type = "checkbox";
  const showAllLabel = element("label", "crpw-show-all-label");
  showAllLabel.append(showAll, " show all");
  header.append(layerLabel, summary, showAllLabel);

  layers.addEventListener("change", () => model.send({ type: "layer", layer: layers.value }));
  showAll.addEventListener("change", () => {
    model.set("show_all", showAll.checked);
    model.save_changes();
  });
  shell.listen(
    ["layer_menu", "layer"],
    () => fillSelect(layers, layerChoices(model.get("layer_menu"), model.get("layer")), model.get("layer")),
    true,
  );
  shell.listen(["show_all"], () => void (showAll.checked = model.get("show_all")), true);
  return header;
}

/** The active conditions of all layers as removable chips: ∨ within a layer, ∧ across layers. */
function mountConditions(model: Model, shell: Shell): HTMLElement {
  const box = element("div", "crpw-conditions");
  box.title = EQ8;
  box.setAttribute("aria-label", "Active conditions");

  const draw = (): void => {
    const groups = conditionGroups(model.get("conditions"), model.get("layers"));
    const parts: Node[] = [element("span", "crpw-conditions-title", "Conditions:")];
    if (groups.length === 0) parts.push(element("span", "crpw-conditions-none", "none (the whole relevance)"));
    groups.forEach((group, g) => {
      if (g > 0) parts.push(element("span", "crpw-operator", "∧"));
      const chips = element("span", "crpw-chip-group");
      chips.append(element("span", "crpw-chip-layer", `${group.layer}:`));
      group.channels.forEach((channel, c) => {
        if (c > 0) chips.append(element("span", "crpw-operator", "∨"));
        const chip = element("button", "crpw-chip", `${channel} ×`);
        chip.setAttribute("aria-label", `remove channel ${channel} of layer ${group.layer} from the conditions`);
        chip.addEventListener("click", () => model.send({ type: "remove", layer: group.layer, channel }));
        chips.append(chip);
      });
      parts.push(chips);
    });
    if (groups.length > 0) {
      const clear = element("button", "crpw-clear", "clear");
      clear.addEventListener("click", () => model.send({ type: "clear" }));
      parts.push(clear);
    }
    box.replaceChildren(...parts);
  };
  shell.listen(["conditions", "layers"], draw, true);
  return box;
}

/** The reference preview that pops up next to the hovered or active channel. */
class Preview {
  readonly box = element("div", "crpw-preview");
  private timer = 0;
  private wanted: { layer: string; channel: number; top: number } | null = null;

  constructor(private readonly model: Model) {
    this.box.hidden = true;
    this.box.setAttribute("role", "tooltip");
  }

  /** Ask for the references of `channel`, shown at `top` (pixels from the top of the list) once they arrive. */
  request(layer: string, channel: number, top: number): void {
    if (!this.model.get("has_references")) return;
    const same = this.wanted !== null && this.wanted.layer === layer && this.wanted.channel === channel;
    this.wanted = { layer, channel, top };
    if (same) return;
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => this.model.send({ type: "preview", channel }), PREVIEW_DELAY_MS);
    this.draw();
  }

  hide(): void {
    window.clearTimeout(this.timer);
    this.wanted = null;
    this.box.hidden = true;
  }

  draw(): void {
    const shown = this.model.get("preview_for");
    const wanted = this.wanted;
    if (wanted === null || shown.layer !== wanted.layer || shown.channel !== wanted.channel) {
      this.box.hidden = true;
      return;
    }
    const images = this.model.get("preview").map((view) => pngImage(view, "crpw-preview-image"));
    const title = element("div", "crpw-preview-title", `channel ${wanted.channel}: references (RelMax)`);
    const strip = element("div", "crpw-preview-strip");
    strip.append(...(images.length > 0 ? images : [element("span", "", "no references stored")]));
    this.box.replaceChildren(title, strip);
    this.box.style.top = `${wanted.top}px`;
    this.box.hidden = false;
  }
}

/** What the bars show, from the same computation as the bars: input, class, conditions, and the denominators. */
function legendLines(model: Model): HTMLElement[] {
  const about = model.get("ranking_for");
  const magnitude = model.get("magnitude").toPrecision(3);
  const total = model.get("total").toPrecision(3).replace("-", "−");
  const lines = [
    element("div", "", `Red supports ${about.class ?? "the class"}, blue contradicts it.`),
    element("div", "", `% = share of the layer's summed |R| (${magnitude}); the signed total is ${total}.`),
  ];
  if (about.input !== undefined) {
    lines.unshift(element("div", "crpw-legend-for", `${model.get("ranking_layer")} for ${about.input}`));
  }
  if (about.conditions) {
    const conditioned = element("div", "crpw-legend-conditioned", `Only relevance through ${about.conditions}.`);
    lines.push(conditioned);
  }
  for (const line of lines) {
    line.classList.add("crpw-clip");
    line.title = line.textContent ?? "";
  }
  return lines;
}

/** The virtualised listbox of signed relevance bars. */
function mountBars(model: Model, shell: Shell, id: string, summary: HTMLElement): HTMLElement {
  const wrap = element("div", "crpw-bars-wrap");
  const list = element("div", "crpw-bars");
  list.tabIndex = 0;
  list.setAttribute("role", "listbox");
  list.setAttribute("aria-multiselectable", "true");
  const spacer = element("div", "crpw-bars-spacer");
  list.append(spacer);
  const preview = new Preview(model);
  const legend = element("div", "crpw-legend");
  wrap.append(list, preview.box, legend);

  let rows: RankedChannel[] = [];
  let scale: BarScale = { axis: 0, unit: 0 };
  let active = 0;

  const shown = (): number => shownRows(rows.length, model.get("top_k"), model.get("show_all"));
  const selected = (): Set<number> => new Set(model.get("conditions")[model.get("ranking_layer")] ?? []);
  const rowId = (channel: number): string => `${id}-channel-${channel}`;

  const row = (index: number, chosen: Set<number>): HTMLElement => {
    const { channel, relevance, share } = rows[index];
    const isSelected = chosen.has(channel);
    const item = element("div", "crpw-bar-row");
    item.id = rowId(channel);
    item.dataset.index = String(index);
    item.setAttribute("role", "option");
    item.setAttribute("aria-selected", String(isSelected));
    item.classList.toggle("crpw-active", index === active);
    item.style.top = `${index * ROW_HEIGHT}px`;
    item.title = `channel ${channel}: relevance ${relevance.toPrecision(3)}, ${formatShare(share)} of the layer's summed |R|; click to ${isSelected ? "remove it from" : "add it to"} the conditions`;
    const track = element("div", "crpw-bar-track");
    const axis = element("div", "crpw-bar-axis");
    axis.style.left = `${scale.axis * 100}%`;
    const bar = element("div", "crpw-bar");
    const { left, width } = barGeometry(relevance, scale);
    bar.style.left = `${left * 100}%`;
    bar.style.width = `${width * 100}%`;
    bar.style.background = barColour(relevance);
    track.append(axis, bar);
    item.append(
      element("span", "crpw-bar-label", `${isSelected ? "✓ " : ""}${channel}`),
      track,
      element("span", "crpw-bar-share", formatShare(share)),
    );
    const concept = conceptLabel(model.get("labels"), model.get("ranking_layer"), channel);
    if (concept !== null) {
      // The dissection label and its IoU, next to the channel's bar (the references stay on hover).
      const tag = element("span", "crpw-bar-concept", concept);
      tag.style.cssText = "white-space: nowrap; overflow: hidden; text-overflow: ellipsis; font-size: 0.85em;";
      item.style.gridTemplateColumns = "4em 1fr 8em 5.5em";
      item.insertBefore(tag, item.lastChild);
      item.title += `; concept (Network Dissection IoU): ${concept}`;
    }
    return item;
  };

  const draw = (): void => {
    const count = shown();
    const viewport = Math.min(count, MAX_VISIBLE_ROWS) * ROW_HEIGHT;
    list.style.height = `${viewport}px`;
    spacer.style.height = `${count * ROW_HEIGHT}px`;
    const { start, stop } = visibleRows(list.scrollTop, viewport, ROW_HEIGHT, count);
    const chosen = selected();
    const items: HTMLElement[] = [];
    for (let i = start; i < stop; i++) items.push(row(i, chosen));
    spacer.replaceChildren(...items);
    if (count > 0) list.setAttribute("aria-activedescendant", rowId(rows[active].channel));
    else list.removeAttribute("aria-activedescendant");
    list.setAttribute("aria-label", `Channels of layer ${model.get("ranking_layer")}, ranked by relevance`);
    summary.textContent = `${count} of ${rows.length} channels`;
  };

  let layer = "";
  const load = (): void => {
    const array = decodePayload(model.get("ranking"));
    rows = array === null ? [] : rankedChannels(array.data, array.shape);
    if (model.get("ranking_layer") !== layer) {
      layer = model.get("ranking_layer");
      active = 0;
      list.scrollTop = 0;
    }
    scale = barScale(rows.map((r) => r.relevance));
    legend.replaceChildren(...legendLines(model));
    active = Math.min(active, Math.max(0, shown() - 1));
    preview.hide();
    draw();
  };

  const previewRow = (index: number): void => {
    preview.request(model.get("ranking_layer"), rows[index].channel, (index + 1) * ROW_HEIGHT - list.scrollTop);
  };

  const activate = (index: number): void => {
    const count = shown();
    if (count === 0) return;
    active = Math.min(count - 1, Math.max(0, index));
    list.scrollTop = scrollToRow(active, list.scrollTop, list.clientHeight, ROW_HEIGHT);
    draw();
    previewRow(active);
  };

  const toggle = (index: number): void => model.send({ type: "toggle", channel: rows[index].channel });

  const rowOf = (event: Event): number | null => {
    const item = (event.target as HTMLElement).closest<HTMLElement>(".crpw-bar-row");
    return item === null ? null : Number(item.dataset.index);
  };

  list.addEventListener("scroll", draw);
  list.addEventListener("click", (event) => {
    const index = rowOf(event);
    if (index === null) return;
    active = index;
    toggle(index);
    draw();
  });
  list.addEventListener("mouseover", (event) => {
    const index = rowOf(event);
    if (index !== null) previewRow(index);
  });
  list.addEventListener("mouseleave", () => preview.hide());
  list.addEventListener("blur", () => preview.hide());
  list.addEventListener("keydown", (event) => {
    const page = MAX_VISIBLE_ROWS - 1;
    const moves: Record<string, number> = {
      ArrowDown: active + 1,
      ArrowUp: active - 1,
      PageDown: active + page,
      PageUp: active - page,
      Home: 0,
      End: shown() - 1,
    };
    if (event.key === " " || event.key === "Enter") {
      event.preventDefault();
      if (shown() > 0) toggle(active);
    } else if (Object.hasOwn(moves, event.key)) {
      event.preventDefault();
      activate(moves[event.key]);
    }
  });

  shell.listen(["ranking", "ranking_layer", "ranking_for", "magnitude", "total"], coalesced(load), true);
  shell.listen(["conditions", "top_k", "show_all", "labels"], draw);
  shell.listen(["preview", "preview_for", "has_references"], coalesced(() => preview.draw()));
  return wrap;
}

function render({ model, el }: RenderProps<ChannelModel>): () => void {
  const shell = mountShell(el, model, "channels");
  const id = `crpw-channels-${++instances}`;
  const summary = element("span", "crpw-value crpw-channel-count");
  shell.body.append(
    mountHeader(model, shell, summary),
    mountConditions(model, shell),
    mountBars(model, shell, id, summary),
  );
  return shell.dispose;
}

export default { render };
