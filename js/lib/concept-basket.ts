/**
 * The concept basket's drag-and-drop payload (user concepts, SACV, Wang & Lee 2022): reference-gallery tiles carry a
 * `{dataset, index}` reference under a private MIME type; the UserConceptView (js/concepts.ts) accepts it.
 */

/** The dataTransfer type of a dragged reference. */
export const REFERENCE_TYPE = "application/x-crp-reference";

export interface SampleReference {
  dataset: string;
  index: number;
}

/** The JSON a gallery tile puts on the drag. */
export function encodeReference(reference: SampleReference): string {
  return JSON.stringify({ dataset: reference.dataset, index: reference.index });
}

/** Parse a dropped payload; `null` for anything that is not a reference (text from elsewhere, bad JSON). */
export function parseReference(text: string | null | undefined): SampleReference | null {
  if (!text) return null;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null) return null;
  const { dataset, index } = value as { dataset?: unknown; index?: unknown };
  if (typeof dataset !== "string" || typeof index !== "number" || !Number.isInteger(index) || index < 0) return null;
  return { dataset, index };
}

/** Short text of a number for the view (3 significant digits, exponent for tiny or huge values, "–" for none). */
export function formatNumber(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  const size = Math.abs(value);
  return size !== 0 && (size < 1e-2 || size >= 1e4) ? value.toExponential(2) : value.toPrecision(3);
}

/** The accuracy line shown after learning. */
export function accuracyText(info: { accuracy?: number; positives?: number; negatives?: number; layer?: string }): string {
  if (info.accuracy === undefined) return "";
  const percent = `${(info.accuracy * 100).toFixed(1)}%`;
  return `held-out balanced accuracy ${percent} at ${info.layer} (${info.positives} concept / ${info.negatives} other positions)`;
}
