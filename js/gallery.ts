/**
 * ReferenceGallery (crp_widgets/widgets/gallery.py): the reference samples of the channel in focus (Achtibat et al.
 * 2023, Sec. 2.3.3-2.3.5): RelMax or ActMax, sum or max, side by side (Fig. 9), as full samples, receptive-field crops,
 * heatmaps or masked crops (Fig. 8), with tabs for the classes that use the channel most (Fig. 13).
 *
 * The kernel sends every tile's picture as PNG bytes and a JSON description of the rows.
 */
import type { AnyModel, RenderProps } from "@anywidget/types";
import { isEmpty, pngUrl } from "./lib/codecs";
import { colourBar } from "./lib/colour-bar";
import { encodeReference, REFERENCE_TYPE } from "./lib/concept-basket";
import { boundCheckbox, boundNumber, boundRadios, boundSelect, formatValue } from "./lib/gallery-atlas-controls";
import { type LayerGroup, layerChoices } from "./lib/layer-menu";
import { coalesced } from "./lib/views-dom";
import { type Shell, element, mountShell } from "./lib/shell";
import "./lib/theme.css";
import "./gallery.css";

interface Tile {
  dataset: string;
  index: number;
  value: number;
  target: string | null;
}

interface Group {
  title: string;
  mode: string;
  tiles: Tile[];
}

interface ClassTab {
  cls: number;
  name: string;
  relevance: number;
}

interface StoreInfo {
  layers?: Record<string, number>;
  k?: number;
  class_k?: number;
  samples?: number;
  total?: number;
  complete?: boolean;
}

interface GalleryModel {
  [trait: string]: unknown;
  error: string;
  busy: boolean;
  layer: string;
  channel: number | null;
  mode: string;
  compare: boolean;
  cls: number | null;
  class_tabs: ClassTab[];
  groups: Group[];
  images: DataView[];
  store_info: StoreInfo;
  layer_menu: LayerGroup[];
  crop_note: string;
  message: string;
  concept: { concept?: string | null; iou?: number };
}

type Model = AnyModel<GalleryModel>;

function save(model: Model, trait: "channel" | "cls", value: number | null): void {
  model.set(trait, value);
  model.save_changes();
}

/** The channel number: empty while no channel is in focus. */
function channelField(shell: Shell, model: Model): HTMLLabelElement {
  const input = element("input", "crpw-number");
  input.type = "number";
  input.min = "0";
  input.step = "1";
  input.addEventListener("change", () => {
    const value = Number(input.value);
    if (input.value !== "" && Number.isInteger(value) && value >= 0) save(model, "channel", value);
    else input.value = String(model.get("channel") ?? "");
  });
  shell.listen(
    ["channel", "layer", "store_info"],
    () => {
      const channels = model.get("store_info").layers?.[model.get("layer")];
      input.max = channels === undefined ? "" : String(channels - 1);
      input.value = String(model.get("channel") ?? "");
    },
    true,
  );
  const field = element("label", "crpw-field");
  field.append(element("span", "crpw-field-name", "Channel"), input);
  return field;
}

function controls(shell: Shell, model: Model): HTMLElement {
  const any = model as unknown as AnyModel<Record<string, unknown>>;
  const bar = element("div", "crpw-controls crpw-gallery-controls");
  const layer = boundSelect(shell, any, "layer", "Layer", []);
  shell.listen(
    ["store_info", "layer_menu", "layer"],
    () => {
      const stored = model.get("store_info").layers;
      const label = (name: string): string => {
        if (stored === undefined) return name; // no store yet: the message says how to make one
        return Object.hasOwn(stored, name) ? `${name} (${stored[name]})` : `${name} (not in the store)`;
      };
      layer.setChoices(layerChoices(model.get("layer_menu"), model.get("layer"), label));
    },
    true,
  );
  const mode = boundRadios(shell, any, "mode", "References", [
    { value: "relevance", label: "RelMax" },
    { value: "activation", label: "ActMax" },
  ]);
  const compare = boundCheckbox(shell, any, "compare", "RelMax vs ActMax");
  const maximization = boundSelect(shell, any, "maximization", "Target", [
    { value: "sum", label: "sum" },
    { value: "max", label: "max" },
  ]);
  const k = boundNumber(shell, any, "k", "k", { min: 1, step: 1 }, true);
  shell.listen(["store_info"], () => (k.input.max = String(model.get("store_info").k ?? "")), true);
  const view = boundSelect(shell, any, "view", "View", []);
  shell.listen(
    ["crop_note"],
    () =>
      view.setChoices([
        { value: "sample", label: "full sample" },
        // Where every position sees the whole input, a crop is where the relevance is, not a receptive field.
        { value: "crop", label: model.get("crop_note") ? "relevant region" : "receptive field" },
        { value: "heatmap", label: "heatmap" },
        { value: "masked", label: "masked crop" },
      ]),
    true,
  );
  const init = boundSelect(shell, any, "init", "Heatmap from", [
    { value: "relevance", label: "relevance" },
    { value: "activation", label: "activation" },
  ]);
  bar.append(layer.field, channelField(shell, model), mode, compare, maximization.field, k.field, view.field, init.field);
  return bar;
}

/** Tabs: all classes, then the classes that use the channel most (class-conditional RelMax, Fig. 13). */
function renderTabs(list: HTMLElement, model: Model): void {
  const selected = model.get("cls");
  const relmax = model.get("mode") === "relevance" || model.get("compare");
  const tabs: { cls: number | null; label: string; title: string }[] = [
    { cls: null, label: "All classes", title: "references from every class" },
    ...model.get("class_tabs").map((tab) => ({
      cls: tab.cls,
      label: tab.name,
      title: `class-conditional references; mean relevance of the channel for ${tab.name}: ${formatValue(tab.relevance)}`,
    })),
  ];
  list.hidden = tabs.length === 1;
  list.replaceChildren(
    ...tabs.map((tab) => {
      const button = element("button", "crpw-gallery-tab", tab.label);
      button.type = "button";
      button.setAttribute("role", "tab");
      button.title = tab.title;
      const active = tab.cls === selected;
      button.setAttribute("aria-selected", String(active));
      button.tabIndex = active ? 0 : -1;
      button.disabled = tab.cls !== null && !relmax;
      button.addEventListener("click", () => save(model, "cls", tab.cls));
      return button;
    }),
  );
}

/** Arrow keys move between tabs (the tab pattern of WAI-ARIA). */
function tabKeys(list: HTMLElement): void {
  list.addEventListener("keydown", (event) => {
    const tabs = [...list.querySelectorAll<HTMLButtonElement>("button:not(:disabled)")];
    const current = tabs.indexOf(document.activeElement as HTMLButtonElement);
    const step = event.key === "ArrowRight" ? 1 : event.key === "ArrowLeft" ? -1 : 0;
    if (current < 0 || step === 0) return;
    event.preventDefault();
    const next = tabs[(current + step + tabs.length) % tabs.length];
    next.focus();
    next.click();
  });
}

/** A reference tile: draggable onto the concept basket (js/concepts.ts), with a "+" button doing the same. */
function tileFigure(tile: Tile, url: string, model: Model): HTMLElement {
  const figure = element("figure", "crpw-gallery-tile");
  figure.draggable = true;
  figure.addEventListener("dragstart", (event) => {
    event.dataTransfer?.setData(REFERENCE_TYPE, encodeReference(tile));
    if (event.dataTransfer) event.dataTransfer.effectAllowed = "copy";
  });
  const add = element("button", "crpw-gallery-basket", "+");
  add.type = "button";
  add.title = `add ${tile.dataset} #${tile.index} to the concept basket`;
  add.setAttribute("aria-label", add.title);
  add.addEventListener("click", () => model.send({ type: "basket", dataset: tile.dataset, index: tile.index }));
  figure.append(add);
  const image = element("img", "crpw-gallery-image");
  image.src = url;
  image.alt = `${tile.dataset} sample ${tile.index}`;
  const caption = element("figcaption", "crpw-gallery-caption");
  caption.append(
    element("span", "crpw-gallery-source", `${tile.dataset} #${tile.index}`),
    element("span", "crpw-value", formatValue(tile.value)),
  );
  if (tile.target !== null) caption.title = `heatmap for class ${tile.target}`;
  figure.append(image, caption);
  return figure;
}

class Rows {
  readonly root = element("div", "crpw-gallery-rows");
  private urls: string[] = [];

  render(model: Model): void {
    this.clear();
    const images = model.get("images");
    const groups = model.get("groups");
    this.root.classList.toggle("crpw-gallery-compare", groups.length > 1);
    let next = 0;
    this.root.replaceChildren(
      ...groups.map((group) => {
        const section = element("section", "crpw-gallery-group");
        section.dataset.mode = group.mode;
        const grid = element("div", "crpw-gallery-grid");
        for (const tile of group.tiles) {
          const view = images[next++];
          if (isEmpty(view)) continue;
          const url = pngUrl(view);
          this.urls.push(url);
          grid.append(tileFigure(tile, url, model));
        }
        section.append(element("h4", "crpw-gallery-title", group.title), grid);
        return section;
      }),
    );
  }

  clear(): void {
    for (const url of this.urls.splice(0)) URL.revokeObjectURL(url);
    this.root.replaceChildren();
  }
}

function progressText(info: StoreInfo): string {
  if (info.complete !== false) return "";
  return `Scan running: ${info.samples ?? 0} of ${info.total ?? "?"} samples so far; the references fill in as it goes.`;
}

function render({ model, el }: RenderProps<GalleryModel>): () => void {
  const shell = mountShell(el, model, "gallery");
  const progress = element("div", "crpw-gallery-progress");
  progress.setAttribute("role", "status");
  const message = element("div", "crpw-gallery-message");
  const cropNote = element("div", "crpw-gallery-crop-note");
  cropNote.setAttribute("role", "note");
  const tabs = element("div", "crpw-gallery-tabs");
  tabs.setAttribute("role", "tablist");
  tabs.setAttribute("aria-label", "Classes");
  tabKeys(tabs);
  const rows = new Rows();
  // The channel's concept label from Network Dissection (Bau et al. 2017), above its references.
  const concept = element("div", "crpw-gallery-concept");
  shell.listen(
    ["concept"],
    () => {
      const label = model.get("concept");
      concept.hidden = label.iou === undefined;
      concept.textContent =
        label.iou === undefined
          ? ""
          : `Concept (Network Dissection): ${label.concept ?? "none"}, IoU ${label.iou.toFixed(3)}`;
    },
    true,
  );
  const scale = colourBar();
  shell.listen(["view"], () => void (scale.root.hidden = model.get("view") !== "heatmap"), true);
  shell.body.append(controls(shell, model), concept, progress, message, cropNote, tabs, rows.root, scale.root);
  shell.listen(["store_info"], () => (progress.textContent = progressText(model.get("store_info"))), true);
  shell.listen(["message"], () => (message.textContent = model.get("message")), true);
  shell.listen(
    ["crop_note"],
    () => {
      cropNote.textContent = model.get("crop_note");
      cropNote.hidden = !model.get("crop_note");
    },
    true,
  );
  shell.listen(["class_tabs", "cls", "mode", "compare"], () => renderTabs(tabs, model), true);
  shell.listen(["groups", "images"], coalesced(() => rows.render(model)), true);
  shell.onDispose(() => rows.clear());
  return shell.dispose;
}

export default { render };
