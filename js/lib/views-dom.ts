/**
 * DOM helpers of the SampleView, the ChannelSelector and the ConditionalHeatmaps (js/sample.ts, js/channels.ts,
 * js/heatmaps.ts).
 */
import { isEmpty, pngUrl } from "./codecs";
import { element } from "./shell";

/**
 * Run `task` once after the current burst of trait changes: a kernel message that sets several traits fires one
 * change event per trait, and the task needs them all.
 */
export function coalesced(task: () => void): () => void {
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    queueMicrotask(() => {
      pending = false;
      task();
    });
  };
}

/** An image element showing PNG bytes; its object URL is released once the image has loaded (or failed). */
export function pngImage(view: DataView | null | undefined, className: string): HTMLImageElement {
  const image = element("img", className);
  image.alt = "";
  if (isEmpty(view)) return image;
  const url = pngUrl(view);
  const release = (): void => URL.revokeObjectURL(url);
  image.addEventListener("load", release, { once: true });
  image.addEventListener("error", release, { once: true });
  image.src = url;
  return image;
}

/** The opacity control of a heatmap overlay: a range input in [0, 1] with a percentage readout. */
export interface OpacitySlider {
  label: HTMLLabelElement;
  input: HTMLInputElement;
  /** Show `value` (the model's opacity) on the slider and in the readout. */
  show(value: number): void;
}

export function opacitySlider(): OpacitySlider {
  const input = element("input", "crpw-opacity");
  input.type = "range";
  input.min = "0";
  input.max = "1";
  input.step = "0.05";
  const readout = element("output", "crpw-value");
  const label = element("label", "crpw-controls");
  label.append("Opacity ", input, readout);
  const show = (value: number): void => {
    input.value = String(value);
    readout.value = `${Math.round(value * 100)}%`;
    input.setAttribute("aria-valuetext", readout.value);
  };
  return { label, input, show };
}
