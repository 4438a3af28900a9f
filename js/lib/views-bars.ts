/**
 * Layout of the ChannelSelector's signed relevance bars (js/channels.ts), and of its list of conditions.
 *
 * Bars share one scale over all channels of the layer, so that showing more of them never rescales the others:
 * the zero axis sits where the largest contradicting (negative) and the largest supporting (positive) relevance
 * leave room for each other. Supporting bars are red and contradicting ones blue, the colours of the paper's
 * heatmaps (bwr, Appendix A.3.1). Long lists are virtualised: only the rows in view (plus a margin) exist.
 */
import { bwr, toByte } from "./colormap";

export interface RankedChannel {
  channel: number;
  relevance: number;
  share: number;
}

/** Rows `(channel, relevance, share)` of the kernel's `ranking` array `[C, 3]`, in rank order. */
export function rankedChannels(data: ArrayLike<number>, shape: number[]): RankedChannel[] {
  if (shape.length !== 2 || shape[1] !== 3) {
    throw new Error(`a channel ranking is a [C, 3] array; got shape [${shape.join(", ")}]`);
  }
  const rows: RankedChannel[] = [];
  for (let i = 0; i < shape[0]; i++) {
    rows.push({ channel: data[3 * i], relevance: data[3 * i + 1], share: data[3 * i + 2] });
  }
  return rows;
}

export interface BarScale {
  /** Position of the zero axis, as a fraction of the bar track. */
  axis: number;
  /** Track fraction per unit of relevance. */
  unit: number;
}

/** The common scale of bars for these relevance values. */
export function barScale(values: ArrayLike<number>): BarScale {
  let positive = 0;
  let negative = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v)) continue;
    positive = Math.max(positive, v);
    negative = Math.max(negative, -v);
  }
  const span = positive + negative;
  return span > 0 ? { axis: negative / span, unit: 1 / span } : { axis: 0, unit: 0 };
}

/** Where a bar starts and how wide it is, as fractions of the track. */
export function barGeometry(value: number, scale: BarScale): { left: number; width: number } {
  const width = Number.isFinite(value) ? Math.abs(value) * scale.unit : 0;
  return { left: value < 0 ? scale.axis - width : scale.axis, width };
}

function css([r, g, b]: [number, number, number]): string {
  return `rgb(${toByte(r)}, ${toByte(g)}, ${toByte(b)})`;
}

/** Bar colour: supporting red, contradicting blue (bwr at ±0.8, light enough for text on both themes). */
export function barColour(value: number): string {
  return css(bwr(value < 0 ? -0.8 : 0.8));
}

/** The rows of the list to render for a scroll position (with `overscan` extra rows on each side). */
export function visibleRows(
  scrollTop: number,
  viewport: number,
  rowHeight: number,
  count: number,
  overscan = 4,
): { start: number; stop: number } {
  const first = Math.floor(Math.max(0, scrollTop) / rowHeight);
  const last = Math.ceil((Math.max(0, scrollTop) + viewport) / rowHeight);
  return { start: Math.max(0, first - overscan), stop: Math.min(count, last + overscan) };
}

/** How many of `total` channels the list shows. */
export function shownRows(total: number, topK: number, showAll: boolean): number {
  return showAll ? total : Math.min(total, Math.max(0, topK));
}

/** The scroll position that brings row `index` into view, or `scrollTop` when it is already visible. */
export function scrollToRow(index: number, scrollTop: number, viewport: number, rowHeight: number): number {
  const top = index * rowHeight;
  if (top < scrollTop) return top;
  if (top + rowHeight > scrollTop + viewport) return top + rowHeight - viewport;
  return scrollTop;
}

/** A share of the layer's relevance as a percentage, e.g. "12.3 %" or "−4.0 %". */
export function formatShare(share: number): string {
  if (!Number.isFinite(share)) return "–";
  const text = `${Math.abs(share * 100).toFixed(1)} %`;
  return share < 0 && text !== "0.0 %" ? `−${text}` : text;
}

export interface ConditionGroup {
  layer: string;
  channels: number[];
}

/** The conditions as groups per layer, in the model's layer order (layers the list lacks come last). */
export function conditionGroups(conditions: Record<string, number[]>, layers: string[]): ConditionGroup[] {
  const position = (layer: string): number => {
    const index = layers.indexOf(layer);
    return index < 0 ? layers.length : index;
  };
  return Object.entries(conditions)
    .filter(([, channels]) => channels.length > 0)
    .sort(([a], [b]) => position(a) - position(b) || a.localeCompare(b))
    .map(([layer, channels]) => ({ layer, channels: [...channels] }));
}
