/**
 * The runtime of an exported page (crp_widgets/widgets/export.py): it decodes the page's data, gives each of the
 * explorer's views (their own bundles, inlined in the page) a model served by the page's stand-in for the kernel
 * (js/lib/export-kernel.ts), and lays them out as the explorer does: the sample strip, the channels and the
 * conditional heatmaps on top, then tabs for the references, the concept atlas and the attribution graph. The page
 * makes no request: the data and the bundles are in it.
 */
import type { RenderProps } from "@anywidget/types";
import { type ExportData, PageKernel, VIEWS, type ViewName } from "./lib/export-kernel";
import { PageModel } from "./lib/export-model";
import { element } from "./lib/shell";

type Bundles = Record<string, string>;
type Traits = Record<string, unknown>;
interface Widget {
  render(props: RenderProps<Traits>): void | (() => void) | Promise<void | (() => void)>;
}

const TABS: [ViewName, string][] = [
  ["gallery", "References"],
  ["atlas", "Concept atlas"],
  ["graph", "Attribution graph"],
];
const KERNEL_TABS =
  "What-if, Decision, Other classes, Similar concepts, My concepts, Global importance and Class profiles compute " +
  "what they show when asked, so they need the explorer in Jupyter.";
/** Traits that only change how the page shows what it holds. */
const DISPLAY: Partial<Record<ViewName, string[]>> = {
  sample: ["opacity", "page"],
  channels: ["show_all"],
  heatmaps: ["opacity"],
};

/** Bytes of base64 text. */
function fromBase64(text: string): Uint8Array<ArrayBuffer> {
  const binary = atob(text.trim());
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** float32 values stored byte plane by byte plane (all first bytes, then all second bytes, ...), put back. */
export function unshuffle(planes: Uint8Array): DataView {
  const count = planes.length / 4;
  const bytes = new Uint8Array(planes.length);
  for (let plane = 0; plane < 4; plane++) {
    for (let i = 0; i < count; i++) bytes[4 * i + plane] = planes[plane * count + i];
  }
  return new DataView(bytes.buffer);
}

/** The page's data: `[header length][header JSON][buffers]`, gzip-compressed; buffers become `DataView`s. */
export async function decode(text: string): Promise<ExportData> {
  const stream = new Blob([fromBase64(text)]).stream().pipeThrough(new DecompressionStream("gzip"));
  const raw = await new Response(stream).arrayBuffer();
  const length = new DataView(raw).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(raw, 4, length))) as ExportData & {
    buffers: [number, number][];
    shuffled: number[];
  };
  const start = 4 + length;
  const shuffled = new Set(header.shuffled);
  const buffers = header.buffers.map(([offset, size], index) =>
    shuffled.has(index) ? unshuffle(new Uint8Array(raw, start + offset, size)) : new DataView(raw, start + offset, size),
  );
  const revive = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(revive);
    if (value !== null && typeof value === "object") {
      const record = value as Record<string, unknown>;
      if (typeof record.$b === "number" && Object.keys(record).length === 1) return buffers[record.$b];
      return Object.fromEntries(Object.entries(record).map(([key, item]) => [key, revive(item)]));
    }
    return value;
  };
  header.values = header.values.map(revive);
  return header;
}

/** The requests of one view, answered by the kernel's stand-in; every view then shows the new state. */
function receiver(view: ViewName, kernel: PageKernel, models: Record<ViewName, PageModel>, refresh: (force?: [ViewName, string[]]) => void) {
  const model = (): PageModel => models[view];
  const save = (names: string[]): void => {
    const refused: string[] = [];
    for (const name of names) {
      const value = model().get(name);
      if (DISPLAY[view]?.includes(name)) {
        kernel.keep(view, name, value);
        continue;
      }
      let accepted: boolean;
      if (name === "layer") accepted = kernel.selectLayer(String(value), view);
      else if (name === "channel") accepted = value !== null && kernel.focus(Number(value), view);
      else if (view === "gallery") accepted = kernel.galleryOption(name, value);
      else if (view === "graph" && name === "path") {
        accepted = JSON.stringify(value) === JSON.stringify(kernel.traits("graph").path);
        if (!accepted) kernel.refuse("graph", "Not in this file: the drill-down along another path; that needs the explorer in Jupyter.");
      } else if (view === "atlas" && name === "region") {
        accepted = false;
        kernel.refuse("atlas", "Not in this file: the concepts of a drawn region; that needs the explorer in Jupyter.");
      } else {
        accepted = false;
        kernel.refuse(view, `Not in this file: the view with another ${name.replaceAll("_", " ")}; that needs the explorer in Jupyter.`);
      }
      if (!accepted) refused.push(name);
    }
    refresh([view, refused]);
  };
  const message = (content: Record<string, unknown>): void => {
    const type = content.type ?? content.kind;
    const force: string[] = [];
    if (type === "code") return;
    if (view === "sample" && type === "select") kernel.selectSample(Number(content.index));
    else if (view === "sample" && type === "target") {
      if (!kernel.explain(content.target === null ? null : Number(content.target))) force.push("target");
    } else if (view === "channels" && type === "toggle") kernel.toggle(Number(content.channel));
    else if (view === "channels" && type === "remove") {
      kernel.removeCondition(String(content.layer), content.channel == null ? null : Number(content.channel));
    } else if (view === "channels" && type === "clear") kernel.removeCondition(kernel.state.layer, null);
    else if (view === "channels" && type === "layer") {
      if (!kernel.selectLayer(String(content.layer), "channels")) force.push("layer");
    } else if (view === "channels" && type === "preview") kernel.preview(Number(content.channel));
    else if (view === "heatmaps" && type === "localization") {
      if (content.localization) {
        kernel.refuse("heatmaps", "Not in this file: class-free localisation; that needs the explorer in Jupyter.");
        force.push("localization");
      }
    } else if (view === "gallery" && type === "basket") {
      kernel.refuse("gallery", "Not in this file: the concept basket of My concepts; that needs the explorer in Jupyter.");
    } else if (view === "graph" && type === "select") kernel.selectNode(String(content.layer), Number(content.channel));
    else if (view === "graph" && type === "expand") {
      kernel.refuse("graph", "Not in this file: the sub-concepts of a card (+); that needs the explorer in Jupyter.");
    }
    refresh([view, force]);
  };
  return { save, message };
}

async function load(code: string): Promise<Widget> {
  const url = URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
  try {
    const module = (await import(/* @vite-ignore */ url)) as { default: Widget };
    return module.default;
  } finally {
    URL.revokeObjectURL(url);
  }
}

/** Decode the data, build the views and show them in `app`. */
export async function start(app: HTMLElement, bundles: Bundles, dataId: string): Promise<void> {
  const status = document.getElementById("crpx-status");
  const data = await decode(document.getElementById(dataId)?.textContent ?? "");
  const kernel = new PageKernel(data);
  const models = {} as Record<ViewName, PageModel>;
  const refresh = (force?: [ViewName, string[]]): void => {
    for (const view of VIEWS) models[view].update(kernel.traits(view), force && force[0] === view ? force[1] : []);
  };
  for (const view of VIEWS) models[view] = new PageModel(kernel.traits(view), receiver(view, kernel, models, refresh));

  const containers = {} as Record<ViewName, HTMLElement>;
  for (const view of VIEWS) {
    containers[view] = element("div", `crpx-view crpx-view-${view}`);
    containers[view].dataset.view = view;
  }
  const rendered = new Set<ViewName>();
  const show = async (view: ViewName): Promise<void> => {
    if (rendered.has(view)) return;
    rendered.add(view);
    const widget = await load(bundles[view]);
    const abort = new AbortController();
    await widget.render({
      model: models[view],
      el: containers[view],
      signal: abort.signal,
    } as unknown as RenderProps<Traits>);
  };

  const top = element("div", "crpx-top");
  top.append(containers.sample, containers.channels, containers.heatmaps);
  const bar = element("div", "crpx-tabs");
  bar.setAttribute("role", "tablist");
  const panels = element("div", "crpx-panels");
  const buttons = TABS.map(([view, title], index) => {
    const button = element("button", "crpx-tab", title);
    button.type = "button";
    button.setAttribute("role", "tab");
    button.id = `crpx-tab-${view}`;
    const panel = element("div", "crpx-panel");
    panel.setAttribute("role", "tabpanel");
    panel.setAttribute("aria-labelledby", button.id);
    panel.append(containers[view]);
    panels.append(panel);
    const select = (): void => {
      buttons.forEach((other, i) => {
        other.button.setAttribute("aria-selected", String(i === index));
        other.panel.hidden = i !== index;
      });
      void show(view);
    };
    button.addEventListener("click", select);
    bar.append(button);
    return { button, panel, select };
  });
  const kernelNote = element("p", "crpx-kernel", KERNEL_TABS);
  app.replaceChildren(top, bar, panels, kernelNote);
  await Promise.all([show("sample"), show("channels"), show("heatmaps")]);
  buttons[0].select();
  if (status) status.textContent = "";
  app.dataset.ready = "true";
}
