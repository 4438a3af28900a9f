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
