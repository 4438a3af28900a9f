/**
 * The colour scale under every heatmap: the hues of the paper's bwr colours (Appendix A.3.1 of Achtibat et al. 2023)
 * from the largest contradicting relevance (blue) through zero (no colour: the image shows, see blend.ts) to the
 * largest supporting one (red). A heatmap is scaled to its own largest |R|, so the ends are labelled with that value, or, for a grid of
 * heatmaps scaled one by one, with "largest |R| of each".
 */
import { formatValue } from "./gallery-atlas-controls";
import { element } from "./shell";

/** The three labels of a colour bar: the negative end, zero and the positive end. */
export function scaleLabels(peak: number | null): [string, string, string] {
  if (peak === null || !Number.isFinite(peak) || peak <= 0) return ["−max |R|", "0", "+max |R|"];
  const text = formatValue(peak);
  return [`−${text}`, "0", `+${text}`];
}

export interface ColourBar {
  root: HTMLElement;
  /** Label the ends with the heatmap's largest |R| (`null`: each heatmap of a grid has its own). */
  show(peak: number | null): void;
}

/** A colour bar element: a gradient with "contradicts" and "supports" at its ends, and the scale's values. */
export function colourBar(): ColourBar {
  const root = element("div", "crpw-colour-bar");
  root.setAttribute("role", "img");
  const gradient = element("div", "crpw-colour-bar-gradient");
  const labels = element("div", "crpw-colour-bar-labels");
  const low = element("span", "crpw-colour-bar-low");
  const zero = element("span", "crpw-colour-bar-zero");
  const high = element("span", "crpw-colour-bar-high");
  labels.append(low, zero, high);
  root.append(gradient, labels);
  const show = (peak: number | null): void => {
    const [a, b, c] = scaleLabels(peak);
    low.textContent = a;
    zero.textContent = b;
    high.textContent = c;
    root.title =
      "Colour scale: blue contradicts, red supports; the stronger the colour, the larger |R|, up to the largest " +
      "|R| of the heatmap" + (peak === null ? " (each heatmap its own)" : "") + ". Pixels without relevance show the image.";
    root.setAttribute("aria-label", `colour scale from ${a} (blue) through 0 to ${c} (red)`);
  };
  show(null);
  return { root, show };
}
