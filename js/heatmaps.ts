/**
 * ConditionalHeatmaps (crp_widgets/widgets/heatmaps.py): the heatmap of the active conditions and a grid of one
 * conditional heatmap per selected (or top-k) channel of the layer, with each channel's share of the layer's
 * relevance. Every heatmap is coloured on its own (bwr, normalised by its maximum absolute value, CRP A.3.1) and
 * blended over the image with one opacity; a toggle switches to class-free localisation (Sec. 2.3.5).
 */
import type { RenderProps } from "@anywidget/types";
import { colourBar } from "./lib/colour-bar";
import { maxAbs } from "./lib/colormap";
import { element, mountShell } from "./lib/shell";
import { formatShare } from "./lib/views-bars";
import { coalesced, opacitySlider } from "./lib/views-dom";
import { compose, decodePayload, heatmapPixels, ImageSlot, type Pixels, paint } from "./lib/views-overlay";
import "./lib/theme.css";
import "./heatmaps.css";

interface GridInfo {
  layer?: string;
  channels?: number[];
  relevance?: number[];
  shares?: number[];
  magnitude?: number;
  selected?: boolean;
  conditions?: string;
  input?: string;
  class?: string | null;
  note?: string;
}

interface HeatmapInfo {
  about?: string;
  input?: string;
  conditioned?: boolean;
  kept?: number | null;
  few?: boolean;
}

interface HeatmapsModel {
  error: string;
  busy: boolean;
  image: DataView | null;
  heatmap: unknown;
  caption: string;
  heatmap_info: HeatmapInfo;
  grid: unknown;
  grid_info: GridInfo;
  top_k: number;
  opacity: number;
  localization: boolean;
}

/** What the conditions keep of the relevance, flagged when it is almost nothing. */
function keptText(info: HeatmapInfo): string {
  if (info.kept === undefined || info.kept === null) return "";
  const share = `${(100 * info.kept).toFixed(1)} %`;
  return info.few
    ? `The conditions leave ${share} of the relevance: almost nothing flows through these channels here.`
    : `The conditions keep ${share} of the relevance (summed |R| of the heatmap without conditions).`;
}

/** The grid's input, class and conditions on other layers, from the same computation as the grid. */
function gridSubtitle(info: GridInfo): string {
  if (info.input === undefined) return "";
  const target = info.class ? `, ${info.class}` : ", no class";
  const through = info.conditions ? `; only through ${info.conditions}` : "";
  return `for ${info.input}${target}${through}; % of the layer's summed |R|`;
}

function render({ model, el }: RenderProps<HeatmapsModel>): () => void {
  const shell = mountShell(el, model, "heatmaps");

  const main = element("figure", "crpw-figure crpw-hm-main");
  const mainCanvas = element("canvas", "crpw-hm-canvas");
  mainCanvas.setAttribute("role", "img");
  const mainScale = colourBar();
  const mainCaption = element("figcaption", "crpw-caption crpw-hm-caption");
  const kept = element("div", "crpw-hm-kept");
  main.append(mainCanvas, mainScale.root, mainCaption, kept);

  const opacity = opacitySlider();
  const localization = element("input", "crpw-localization");
  localization.type = "checkbox";
  const localizationLabel = element("label", "crpw-controls");
  localizationLabel.title =
    "Start each heatmap from the channels' activations instead of a class: where a concept is, " +
    "regardless of the prediction (CRP Sec. 2.3.5)";
  localizationLabel.append(localization, " class-free localisation");
  const controls = element("div", "crpw-controls crpw-hm-controls");
  controls.append(opacity.label, localizationLabel);

  const title = element("div", "crpw-hm-title crpw-clip");
  const subtitle = element("div", "crpw-hm-subtitle crpw-clip");
  const note = element("div", "crpw-hm-note");
  const grid = element("div", "crpw-hm-grid");
  const gridScale = colourBar();
  const left = element("div", "crpw-hm-left");
  left.append(main, controls);
  const right = element("div", "crpw-hm-right");
  right.append(title, subtitle, note, grid, gridScale.root);
  const columns = element("div", "crpw-hm-columns");
  columns.append(left, right);
  shell.body.append(columns);

  const image = new ImageSlot();
  let heatmap: Pixels | null = null;
  let cells: Array<{ canvas: HTMLCanvasElement; pixels: Pixels }> = [];

  const draw = (): void => {
    const value = model.get("opacity");
    opacity.show(value);
    paint(mainCanvas, compose(image.pixels, heatmap, value));
    for (const cell of cells) paint(cell.canvas, compose(image.pixels, cell.pixels, value));
  };

  const loadHeatmap = (): void => {
    const array = decodePayload(model.get("heatmap"));
    heatmap = array === null ? null : heatmapPixels(array)[0];
    mainScale.root.hidden = array === null;
    mainScale.show(array === null ? null : maxAbs(array.data));
    const caption = model.get("caption");
    const info = model.get("heatmap_info");
    mainCaption.textContent = caption && info.input ? `${caption} · ${info.input}` : caption;
    mainCaption.title = info.about ? `${mainCaption.textContent}\n${info.about}` : caption;
    kept.textContent = keptText(info);
    kept.classList.toggle("crpw-hm-few", Boolean(info.few));
    mainCanvas.setAttribute("aria-label", `heatmap: ${caption}`);
    draw();
    // On screen: a performance mark for latency measurements (click to updated heatmap, see the README).
    performance.mark("crpw:heatmap", { detail: { caption } });
  };

  const loadGrid = (): void => {
    const info = model.get("grid_info");
    const array = decodePayload(model.get("grid"));
    const layers = array === null ? [] : heatmapPixels(array);
    const channels = info.channels ?? [];
    const shares = info.shares ?? [];
    const which = info.selected ? "selected" : `top ${channels.length}`;
    title.textContent = info.layer === undefined ? "" : `Per channel of ${info.layer}: ${which}`;
    title.title = title.textContent;
    subtitle.textContent = gridSubtitle(info);
    subtitle.title = subtitle.textContent;
    note.textContent = info.note ?? "";
    gridScale.root.hidden = channels.length === 0;
    gridScale.show(null);
    cells = layers.map((pixels) => ({ canvas: element("canvas", "crpw-hm-cell-canvas"), pixels }));
    grid.replaceChildren(
      ...cells.map(({ canvas }, i) => {
        const figure = element("figure", "crpw-figure crpw-hm-cell");
        const share = formatShare(shares[i] ?? Number.NaN);
        canvas.setAttribute("role", "img");
        canvas.setAttribute("aria-label", `conditional heatmap of channel ${channels[i]}, ${share} of the relevance`);
        figure.dataset.channel = String(channels[i]);
        const caption = element("figcaption", "crpw-caption");
        caption.append(
          element("span", "crpw-hm-channel", `channel ${channels[i]}`),
          element("span", "crpw-hm-share", share),
        );
        const magnitude = info.magnitude === undefined ? "" : ` (${info.magnitude.toPrecision(3)})`;
        caption.title = `channel ${channels[i]}: ${share} of the layer's summed |R|${magnitude}`;
        figure.append(canvas, caption);
        return figure;
      }),
    );
    draw();
    performance.mark("crpw:grid", { detail: { layer: info.layer, channels } });
  };

  opacity.input.addEventListener("input", () => {
    model.set("opacity", Number(opacity.input.value));
    model.save_changes();
    draw();
  });
  localization.addEventListener("change", () => {
    model.send({ type: "localization", localization: localization.checked });
  });

  shell.listen(["image"], () => void image.load(model.get("image")).then((current) => current && draw()), true);
  shell.listen(["heatmap", "caption", "heatmap_info"], coalesced(loadHeatmap), true);
  shell.listen(["grid", "grid_info"], coalesced(loadGrid), true);
  shell.listen(["opacity"], draw, true);
  shell.listen(["localization"], () => void (localization.checked = model.get("localization")), true);
  return shell.dispose;
}

export default { render };
