/**
 * UserConceptView (crp_widgets/widgets/concepts.py): a user-defined concept (SACV, Wang & Lee 2022). A basket of example
 * thumbnails (add the current sample, add by index, drop a reference-gallery tile, remove), the layer, "Learn"
 * with the classifier's held-out accuracy, the maps S_k (where the concept is) and S_k->c (where it contributes to
 * class c) over the current sample in bwr colours, and the concept's contribution to c over the class's images.
 */
import type { AnyModel, RenderProps } from "@anywidget/types";
import { accuracyText, formatNumber, parseReference, REFERENCE_TYPE } from "./lib/concept-basket";
import { boundNumber, boundSelect } from "./lib/gallery-atlas-controls";
import { colourBar } from "./lib/colour-bar";
import { type LayerGroup, layerChoices } from "./lib/layer-menu";
import { element, mountShell } from "./lib/shell";
import { coalesced, opacitySlider, pngImage } from "./lib/views-dom";
import { compose, decodePayload, heatmapPixels, ImageSlot, type Pixels, paint } from "./lib/views-overlay";
import "./lib/theme.css";
import "./lib/gallery-atlas-controls.css";
import "./concepts.css";

interface Reference {
  dataset: string;
  index: number;
}

interface ConceptsModel {
  [trait: string]: unknown;
  error: string;
  busy: boolean;
  basket: Reference[];
  thumbnails: DataView[];
  layer: string;
  layer_menu: LayerGroup[];
  n_random: number;
  concept_info: { accuracy?: number; positives?: number; negatives?: number; layer?: string; examples?: number };
  image: DataView | null;
  concept_map: unknown;
  contribution_map: unknown;
  maps_info: { cls?: number; name?: string; layer?: string };
  summary: {
    cls?: number;
    name?: string;
    images?: number;
    score?: number;
    inside?: number | null;
    outside?: number | null;
    inside_share?: number;
  };
  opacity: number;
}

function button(text: string, title: string): HTMLButtonElement {
  const node = element("button", "crpw-button", text);
  node.type = "button";
  node.title = title;
  return node;
}

function render({ model, el }: RenderProps<ConceptsModel>): () => void {
  const shell = mountShell(el, model, "concepts");
  const any = model as unknown as AnyModel<Record<string, unknown>>;

  // The basket: a drop zone listing the example thumbnails.
  const basket = element("section", "crpw-concepts-basket");
  basket.setAttribute("aria-label", "concept basket: drop reference tiles here");
  const heading = element("h4", "crpw-concepts-title", "Concept basket");
  const hint = element("div", "crpw-concepts-hint", "Add examples of the concept, or drag reference tiles here.");
  const list = element("ul", "crpw-concepts-list");
  basket.append(heading, hint, list);

  const addCurrent = button("Add current sample", "add the sample shown in the explorer to the basket");
  addCurrent.addEventListener("click", () => model.send({ type: "add_current" }));
  const indexInput = element("input", "crpw-number");
  indexInput.type = "number";
  indexInput.min = "0";
  indexInput.step = "1";
  indexInput.setAttribute("aria-label", "sample index to add");
  const addIndex = button("Add #", "add the dataset sample with this index");
  const sendIndex = (): void => {
    const value = Number(indexInput.value);
    if (indexInput.value !== "" && Number.isInteger(value) && value >= 0) model.send({ type: "add", index: value });
  };
  addIndex.addEventListener("click", sendIndex);
  indexInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter") sendIndex();
  });
  const clear = button("Clear", "empty the basket");
  clear.addEventListener("click", () => model.send({ type: "clear" }));
  const basketControls = element("div", "crpw-controls crpw-concepts-controls");
  basketControls.append(addCurrent, indexInput, addIndex, clear);

  const layer = boundSelect(shell, any, "layer", "Layer", []);
  shell.listen(
    ["layer_menu", "layer"],
    () => layer.setChoices(layerChoices(model.get("layer_menu"), model.get("layer"))),
    true,
  );
  const learn = button("Learn concept", "fit a linear classifier on the layer's spatial activations (SACV)");
  learn.classList.add("crpw-concepts-learn");
  learn.addEventListener("click", () => model.send({ type: "learn" }));
  const accuracy = element("output", "crpw-concepts-accuracy");
  const random = boundNumber(shell, any, "n_random", "Random counter-examples", { min: 1, step: 1 }, true);
  random.field.title = "random dataset samples whose positions are the negatives (TCAV's random concepts)";
  const learnControls = element("div", "crpw-controls crpw-concepts-controls");
  learnControls.append(layer.field, random.field, learn, accuracy);

  // The maps over the current sample.
  const opacity = opacitySlider();
  const maps = element("div", "crpw-concepts-maps");
  const figure = (caption: string): { root: HTMLElement; canvas: HTMLCanvasElement; caption: HTMLElement } => {
    const root = element("figure", "crpw-figure");
    const canvas = element("canvas", "crpw-concepts-canvas");
    canvas.setAttribute("role", "img");
    const text = element("figcaption", "crpw-caption", caption);
    root.append(canvas, text);
    return { root, canvas, caption: text };
  };
  const conceptFigure = figure("");
  const contributionFigure = figure("");
  conceptFigure.root.dataset.map = "concept";
  contributionFigure.root.dataset.map = "contribution";
  maps.append(conceptFigure.root, contributionFigure.root);
  const scale = colourBar();
  const summary = element("div", "crpw-concepts-summary");
  summary.setAttribute("role", "status");

  shell.body.append(basket, basketControls, learnControls, opacity.label, maps, scale.root, summary);

  // Dropping a reference-gallery tile adds it to the basket.
  basket.addEventListener("dragover", (event) => {
    if (event.dataTransfer?.types.includes(REFERENCE_TYPE)) {
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      basket.classList.add("crpw-concepts-drop");
    }
  });
  basket.addEventListener("dragleave", () => basket.classList.remove("crpw-concepts-drop"));
  basket.addEventListener("drop", (event) => {
    basket.classList.remove("crpw-concepts-drop");
    const reference = parseReference(event.dataTransfer?.getData(REFERENCE_TYPE));
    if (reference === null) return;
    event.preventDefault();
    model.send({ type: "add", dataset: reference.dataset, index: reference.index });
  });

  const renderBasket = (): void => {
    const entries = model.get("basket");
    const thumbnails = model.get("thumbnails");
    hint.hidden = entries.length > 0;
    heading.textContent = `Concept basket (${entries.length})`;
    list.replaceChildren(
      ...entries.map((entry, position) => {
        const item = element("li", "crpw-concepts-item");
        item.dataset.index = String(entry.index);
        item.dataset.dataset = entry.dataset;
        const thumbnail = thumbnails.length === entries.length ? thumbnails[position] : null;
        const image = pngImage(thumbnail, "crpw-concepts-thumb");
        image.alt = `${entry.dataset} sample ${entry.index}`;
        const remove = button("×", `remove ${entry.dataset} #${entry.index} from the basket`);
        remove.classList.add("crpw-concepts-remove");
        remove.setAttribute("aria-label", `remove sample ${entry.index}`);
        remove.addEventListener("click", () => model.send({ type: "remove", position }));
        item.append(image, element("span", "crpw-concepts-label", `#${entry.index}`), remove);
        return item;
      }),
    );
  };

  const image = new ImageSlot();
  let concept: Pixels | null = null;
  let contribution: Pixels | null = null;
  const draw = (): void => {
    const value = model.get("opacity");
    opacity.show(value);
    paint(conceptFigure.canvas, compose(image.pixels, concept, value));
    paint(contributionFigure.canvas, compose(image.pixels, contribution, value));
  };
  const loadMaps = (): void => {
    const a = decodePayload(model.get("concept_map"));
    const b = decodePayload(model.get("contribution_map"));
    concept = a === null ? null : heatmapPixels(a)[0];
    contribution = b === null ? null : heatmapPixels(b)[0];
    const info = model.get("maps_info");
    const name = info.name ?? "";
    conceptFigure.caption.textContent = concept === null ? "" : `Where the concept is (${info.layer})`;
    contributionFigure.caption.textContent = contribution === null ? "" : `Where it contributes to class ${name}`;
    conceptFigure.caption.title = "the concept map S_k of SACV (Wang & Lee 2022)";
    contributionFigure.caption.title = "the contribution map S_k→c of SACV (Wang & Lee 2022)";
    conceptFigure.canvas.setAttribute("aria-label", "where the concept is");
    contributionFigure.canvas.setAttribute("aria-label", `where the concept contributes to class ${name}`);
    scale.root.hidden = concept === null;
    draw();
  };
  const renderSummary = (): void => {
    const s = model.get("summary");
    if (s.cls === undefined) {
      summary.textContent = "";
      return;
    }
    if (!s.images) {
      summary.textContent = `No images of class ${s.name} in the dataset to summarise.`;
      return;
    }
    const found = Number.isFinite(s.inside ?? Number.NaN);
    summary.textContent =
      `Class ${s.name}, ${s.images} images: the concept raises the class's output on ` +
      `${Math.round((s.score ?? 0) * 100)} % of them; ` +
      (found
        ? `its mean contribution is ${formatNumber(s.inside)} where the concept is found and ` +
          `${formatNumber(s.outside)} elsewhere.`
        : `the concept is found in none of them; its mean contribution is ${formatNumber(s.outside)}.`);
    summary.title = "The share of images is the TCAV score (Kim et al. 2018); contributions are S_k→c of SACV.";
  };

  opacity.input.addEventListener("input", () => {
    model.set("opacity", Number(opacity.input.value));
    model.save_changes();
    draw();
  });
  shell.listen(["basket", "thumbnails"], coalesced(renderBasket), true);
  shell.listen(["concept_info"], () => (accuracy.value = accuracyText(model.get("concept_info"))), true);
  shell.listen(["image"], () => void image.load(model.get("image")).then((current) => current && draw()), true);
  shell.listen(["concept_map", "contribution_map", "maps_info"], coalesced(loadMaps), true);
  shell.listen(["summary"], renderSummary, true);
  shell.listen(["opacity"], draw, true);
  return shell.dispose;
}

export default { render };
