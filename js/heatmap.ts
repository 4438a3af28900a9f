/**
 * HeatmapView: an image with a relevance heatmap blended over it (crp_widgets/widgets/heatmap.py).
 *
 * The kernel sends the image as PNG bytes and the heatmap as raw float32 bytes plus `{shape, dtype}`;
 * the heatmap is coloured here (bwr, normalised by its maximum absolute value) and blended with `opacity`.
 */
import type { AnyModel, RenderProps } from "@anywidget/types";
import { blend } from "./lib/blend";
import { decodeArray, isArrayMeta, isEmpty } from "./lib/codecs";
import { colorize, maxAbs } from "./lib/colormap";
import { colourBar } from "./lib/colour-bar";
import { keepControlKeys } from "./lib/keyboard";
import { element } from "./lib/shell";
import { opacitySlider } from "./lib/views-dom";
import { decodePng, type Pixels } from "./lib/views-overlay";
import "./lib/theme.css";

interface HeatmapModel {
  image_png: DataView | null;
  heatmap_data: DataView | null;
  heatmap_meta: unknown;
  opacity: number;
  caption: string;
  error: string;
}

function decodeHeatmap(model: AnyModel<HeatmapModel>): { pixels: Pixels; peak: number } | null {
  const view = model.get("heatmap_data");
  if (isEmpty(view)) return null;
  const meta = model.get("heatmap_meta");
  if (!isArrayMeta(meta) || meta.shape.length !== 2) {
    throw new Error(`heatmap_meta must describe a [H, W] array; got ${JSON.stringify(meta)}`);
  }
  const { data, shape } = decodeArray(view, meta);
  return { pixels: { width: shape[1], height: shape[0], rgba: colorize(data) }, peak: maxAbs(data) };
}

function render({ model, el }: RenderProps<HeatmapModel>): () => void {
  const root = element("div", "crpw crpw-heatmap");
  const errorBox = element("div", "crpw-error");
  errorBox.setAttribute("role", "alert");
  const figure = element("figure", "crpw-figure");
  const canvas = element("canvas", "crpw-canvas");
  canvas.setAttribute("role", "img");
  const caption = element("figcaption", "crpw-caption");
  const scale = colourBar();
  figure.append(canvas, scale.root, caption);

  const opacityControl = opacitySlider();
  const slider = opacityControl.input;
  root.append(errorBox, figure, opacityControl.label);
  el.replaceChildren(root);
  const releaseKeys = keepControlKeys(root);

  let image: Pixels | null = null;
  let heatmap: Pixels | null = null;
  let imageError = "";
  let heatmapError = "";
  let sizeError = "";
  let imageRequest = 0;
  let imageShown = 0;

  const showError = (): void => {
    errorBox.textContent = [model.get("error"), imageError, heatmapError, sizeError].filter(Boolean).join("\n");
  };

  const draw = (): void => {
    const opacity = model.get("opacity");
    opacityControl.show(opacity);
    const text = model.get("caption");
    caption.textContent = text;
    canvas.setAttribute("aria-label", text || "relevance heatmap");

    let pixels: Pixels | null = image ?? heatmap;
    sizeError = "";
    if (image !== null && heatmap !== null) {
      if (image.width === heatmap.width && image.height === heatmap.height) {
        pixels = { ...image, rgba: blend(image.rgba, heatmap.rgba, opacity) };
      } else if (imageShown === imageRequest) {
        // A new image may still be decoding; only a settled mismatch is an error.
        sizeError = `heatmap size [${heatmap.height}, ${heatmap.width}] differs from image size [${image.height}, ${image.width}]`;
      }
    }
    canvas.hidden = pixels === null;
    if (pixels !== null) {
      canvas.width = pixels.width;
      canvas.height = pixels.height;
      canvas.getContext("2d")?.putImageData(new ImageData(pixels.rgba, pixels.width, pixels.height), 0, 0);
    }
    showError();
  };

  const loadHeatmap = (): void => {
    try {
      heatmapError = "";
      const decoded = decodeHeatmap(model);
      heatmap = decoded?.pixels ?? null;
      scale.show(decoded?.peak ?? null);
    } catch (error) {
      heatmap = null;
      heatmapError = String(error);
    }
    scale.root.hidden = heatmap === null;
    draw();
  };

  const loadImage = async (): Promise<void> => {
    const request = ++imageRequest;
    const view = model.get("image_png");
    let decoded: Pixels | null = null;
    let message = "";
    try {
      decoded = isEmpty(view) ? null : await decodePng(view);
    } catch (error) {
      message = `could not decode the image: ${String(error)}`;
    }
    if (request !== imageRequest) return;
    imageShown = request;
    image = decoded;
    imageError = message;
    draw();
  };

  const onSlider = (): void => {
    model.set("opacity", Number(slider.value));
    model.save_changes();
    draw();
  };
  const onImage = (): void => void loadImage();

  slider.addEventListener("input", onSlider);
  model.on("change:image_png", onImage);
  model.on("change:heatmap_data", loadHeatmap);
  model.on("change:heatmap_meta", loadHeatmap);
  model.on("change:opacity", draw);
  model.on("change:caption", draw);
  model.on("change:error", showError);

  loadHeatmap();
  void loadImage();

  return () => {
    releaseKeys();
    slider.removeEventListener("input", onSlider);
    model.off("change:image_png", onImage);
    model.off("change:heatmap_data", loadHeatmap);
    model.off("change:heatmap_meta", loadHeatmap);
    model.off("change:opacity", draw);
    model.off("change:caption", draw);
    model.off("change:error", showError);
  };
}

export default { render };
