/**
 * SampleView (crp_widgets/widgets/sample.py): a paged grid of dataset thumbnails with label and prediction, the
 * explained class, and the class-conditional heatmap of the whole prediction over the image (Achtibat et al. 2023,
 * Fig. 2).
 *
 * Keyboard: the thumbnail grid is one focusable list; arrow keys (and Home/End) move through the thumbnails,
 * across pages, and Enter or Space explains the active one.
 */
import type { RenderProps } from "@anywidget/types";
import { colourBar } from "./lib/colour-bar";
import { maxAbs } from "./lib/colormap";
import { element, mountShell, type Shell } from "./lib/shell";
import { coalesced, opacitySlider, pngImage } from "./lib/views-dom";
import { compose, decodePayload, heatmapPixels, ImageSlot, type Pixels, paint } from "./lib/views-overlay";
import { columnsFor, moveIndex, pageCount, pageOf, pageRange } from "./lib/views-paging";
import "./lib/theme.css";
import "./sample.css";

interface ThumbnailInfo {
  index: number;
  label: number | null;
  prediction: number;
}

interface SampleModel {
  error: string;
  busy: boolean;
  count: number;
  page: number;
  page_size: number;
  thumbnails: DataView[];
  thumbnail_info: ThumbnailInfo[];
  classes: string[];
  sample: number;
  custom: boolean;
  target: number | null;
  prediction: number | null;
  explained: number | null;
  label: number | null;
  explained_for: { sample?: number | null; label?: number | null; note?: string };
  class_note: string;
  columns: number;
  image: DataView | null;
  heatmap: unknown;
  opacity: number;
}

type Model = RenderProps<SampleModel>["model"];

let instances = 0;

function className(model: Model, index: number | null): string {
  if (index === null) return "–";
  return model.get("classes")[index] ?? String(index);
}

/** Whether the thumbnails are the consecutive samples of their page (not a chosen few, as in an exported page). */
function isPageRange(indices: number[], start: number): boolean {
  return indices.every((index, i) => index === start + i);
}

/** The paged thumbnail grid and its pager. */
function mountBrowser(model: Model, shell: Shell, id: string): HTMLElement {
  const browser = element("section", "crpw-sample-browser");
  const grid = element("div", "crpw-thumbs");
  grid.tabIndex = 0;
  grid.setAttribute("role", "listbox");
  grid.setAttribute("aria-label", "Samples: arrow keys move, Enter explains");
  const pager = element("div", "crpw-pager");
  const previous = element("button", "crpw-page-previous", "‹");
  previous.setAttribute("aria-label", "previous page");
  const next = element("button", "crpw-page-next", "›");
  next.setAttribute("aria-label", "next page");
  const pageInput = element("input", "crpw-page-input");
  pageInput.type = "number";
  pageInput.min = "1";
  pageInput.setAttribute("aria-label", "page");
  const pages = element("span", "crpw-page-count");
  const pageLabel = element("label", "crpw-page-label");
  pageLabel.append("Page ", pageInput, pages);
  pager.append(previous, pageLabel, next);
  browser.append(grid, pager);

  let active = model.get("sample");
  let focusAfterLoad = false;

  const setPage = (page: number): void => {
    const last = pageCount(model.get("count"), model.get("page_size")) - 1;
    model.set("page", Math.min(last, Math.max(0, page)));
    model.save_changes();
  };
  const select = (index: number): void => model.send({ type: "select", index });

  const markSelection = (): void => {
    const chosen = model.get("custom") ? -1 : model.get("sample");
    for (const option of grid.querySelectorAll<HTMLElement>(".crpw-thumb")) {
      const index = Number(option.dataset.index);
      option.setAttribute("aria-selected", String(index === chosen));
      option.classList.toggle("crpw-active", index === active);
      if (index === active) grid.setAttribute("aria-activedescendant", option.id);
    }
  };

  const thumbnail = (info: ThumbnailInfo, view: DataView | undefined): HTMLElement => {
    const option = element("div", "crpw-thumb");
    option.id = `${id}-sample-${info.index}`;
    option.dataset.index = String(info.index);
    option.setAttribute("role", "option");
    const label = info.label === null ? "" : ` ${className(model, info.label)}`;
    const prediction = element("span", "crpw-thumb-prediction crpw-clip", `→ ${className(model, info.prediction)}`);
    prediction.classList.toggle("crpw-wrong", info.label !== null && info.label !== info.prediction);
    option.append(
      pngImage(view, "crpw-thumb-image"),
      element("span", "crpw-thumb-label crpw-clip", `#${info.index}${label}`),
      prediction,
    );
    const labelText = info.label === null ? "" : `, label ${className(model, info.label)}`;
    option.title = `sample ${info.index}${labelText}, predicted ${className(model, info.prediction)}`;
    option.addEventListener("click", () => {
      active = info.index;
      markSelection();
      select(info.index);
    });
    return option;
  };

  const drawThumbnails = (): void => {
    const size = model.get("page_size");
    grid.style.setProperty("--crpw-columns", String(model.get("columns") || columnsFor(size)));
    const views = model.get("thumbnails");
    const infos = model.get("thumbnail_info");
    grid.replaceChildren(...infos.map((info, i) => thumbnail(info, views[i])));
    const { start } = pageRange(model.get("page"), size, model.get("count"));
    if (!infos.some((info) => info.index === active)) active = infos[0]?.index ?? start;
    markSelection();
    if (focusAfterLoad) {
      grid.focus();
      focusAfterLoad = false;
    }
  };

  const drawPager = (): void => {
    const count = pageCount(model.get("count"), model.get("page_size"));
    const page = model.get("page");
    pageInput.max = String(count);
    pageInput.value = String(page + 1);
    pages.textContent = ` of ${count} (${model.get("count")} samples)`;
    previous.disabled = page <= 0;
    next.disabled = page >= count - 1;
  };

  grid.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      select(active);
      return;
    }
    const size = model.get("page_size");
    const indices = model.get("thumbnail_info").map((info) => info.index);
    if (!isPageRange(indices, pageRange(model.get("page"), size, model.get("count")).start)) {
      // Thumbnails of chosen samples (an exported page): move through them by position.
      const position = moveIndex(indices.indexOf(active), event.key, columnsFor(size), indices.length);
      if (position === null) return;
      event.preventDefault();
      active = indices[position];
      markSelection();
      return;
    }
    const target = moveIndex(active, event.key, columnsFor(size), model.get("count"));
    if (target === null) return;
    event.preventDefault();
    active = target;
    if (pageOf(target, size) !== model.get("page")) {
      focusAfterLoad = true;
      setPage(pageOf(target, size));
    }
    markSelection();
  });
  previous.addEventListener("click", () => setPage(model.get("page") - 1));
  next.addEventListener("click", () => setPage(model.get("page") + 1));
  pageInput.addEventListener("change", () => setPage(Number(pageInput.value) - 1));

  shell.listen(["thumbnails", "thumbnail_info", "classes", "columns"], coalesced(drawThumbnails), true);
  shell.listen(["sample", "custom"], () => {
    if (!model.get("custom")) active = model.get("sample");
    markSelection();
  });
  shell.listen(["page", "page_size", "count"], drawPager, true);
  return browser;
}

/** The explained input with its class-conditional heatmap, the class chooser and the opacity slider. */
function mountExplanation(model: Model, shell: Shell): HTMLElement {
  const section = element("section", "crpw-sample-explained");
  const figure = element("figure", "crpw-figure");
  const canvas = element("canvas", "crpw-sample-canvas");
  canvas.setAttribute("role", "img");
  const scale = colourBar();
  const caption = element("figcaption", "crpw-caption crpw-sample-caption");
  figure.append(canvas, scale.root, caption);

  const classes = element("select", "crpw-target");
  const classLabel = element("label", "crpw-controls");
  classLabel.append("Explain ", classes);
  const note = element("div", "crpw-sample-note");
  const opacity = opacitySlider();
  const slider = opacity.input;
  section.append(figure, classLabel, note, opacity.label);

  const image = new ImageSlot();
  let heatmap: Pixels | null = null;

  const draw = (): void => {
    const value = model.get("opacity");
    opacity.show(value);
    paint(canvas, compose(image.pixels, heatmap, value));
  };

  // The caption comes from the same computation as the picture (explained_for), never from the newer state.
  const describe = (): void => {
    const about = model.get("explained_for");
    if (about.sample === undefined) {
      caption.textContent = "";
      caption.title = "";
      return;
    }
    const explained = className(model, model.get("explained"));
    const predicted = className(model, model.get("prediction"));
    const label = about.label ?? null;
    const input =
      about.sample === null
        ? `your image${about.note ? ` (${about.note})` : ""}`
        : `sample #${about.sample}${label === null ? "" : `, label ${className(model, label)}`}`;
    caption.textContent = `Relevance for “${explained}” (prediction: ${predicted}) · ${input}`;
    caption.title = caption.textContent;
    canvas.setAttribute("aria-label", `heatmap of the relevance for ${explained}, ${input}`);
  };

  const drawClasses = (): void => {
    const names = model.get("classes");
    const prediction = element("option", "", `prediction (${className(model, model.get("prediction"))})`);
    prediction.value = "";
    const options = names.map((name, index) => {
      const option = element("option", "", name);
      option.value = String(index);
      return option;
    });
    classes.replaceChildren(prediction, ...options);
    const target = model.get("target");
    classes.value = target === null ? "" : String(target);
  };

  classes.addEventListener("change", () => {
    model.send({ type: "target", target: classes.value === "" ? null : Number(classes.value) });
  });
  slider.addEventListener("input", () => {
    model.set("opacity", Number(slider.value));
    model.save_changes();
    draw();
  });

  shell.listen(["image"], () => void image.load(model.get("image")).then((current) => current && draw()), true);
  shell.listen(
    ["heatmap"],
    () => {
      const array = decodePayload(model.get("heatmap"));
      heatmap = array === null ? null : heatmapPixels(array)[0];
      scale.root.hidden = array === null;
      scale.show(array === null ? null : maxAbs(array.data));
      draw();
    },
    true,
  );
  shell.listen(["opacity"], draw, true);
  shell.listen(["explained", "prediction", "explained_for", "classes"], coalesced(describe), true);
  shell.listen(["class_note"], () => void (note.textContent = model.get("class_note")), true);
  shell.listen(["classes", "target", "prediction"], drawClasses, true);
  return section;
}

function render({ model, el }: RenderProps<SampleModel>): () => void {
  const shell = mountShell(el, model, "sample");
  const id = `crpw-sample-${++instances}`;
  const layout = element("div", "crpw-sample-layout");
  shell.listen(["columns"], () => shell.root.classList.toggle("crpw-sample-compact", model.get("columns") > 0), true);
  layout.append(mountBrowser(model, shell, id), mountExplanation(model, shell));
  shell.body.append(layout);
  return shell.dispose;
}

export default { render };
