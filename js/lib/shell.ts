/**
 * The frame every component draws into: a themed root, an error box bound to the `error` trait, a busy
 * indicator bound to `busy` (a computation is waiting or running in the kernel) that says what it computes for
 * (`computing`, e.g. "sample #5, features.conv4"), and control keys kept inside the widget (see keyboard.ts).
 * While busy, the view still shows what it computed before, dimmed, with its own caption. Components put their content into `body` and register their model
 * listeners with `listen`, so that one `dispose` undoes everything.
 *
 * Every view also gets a "code" button (bottom right): it opens a panel with the Python calls that reproduce what
 * the view shows (the `snippet` trait, which the kernel writes while the panel is open: `{type: "code", open}`),
 * with a copy button. A `note` trait, when a model has one, shows a neutral line above the view (the exported page
 * says there what it does not hold).
 */
import type { AnyModel } from "@anywidget/types";
import { keepControlKeys } from "./keyboard";

export interface ShellTraits {
  error: string;
  busy: boolean;
}

export interface Shell {
  root: HTMLDivElement;
  body: HTMLDivElement;
  /** Call `handler` on each of the `change:<trait>` events (and once now if `immediately`). */
  listen(traits: string[], handler: () => void, immediately?: boolean): void;
  /** Remove every listener registered through the shell, plus extra clean-ups added with `onDispose`. */
  dispose(): void;
  onDispose(cleanup: () => void): void;
}

/** Create an element with a class name (and optional text). */
export function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  text?: string,
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function mountShell<T extends ShellTraits>(el: HTMLElement, model: AnyModel<T>, name: string): Shell {
  const root = element("div", `crpw crpw-${name}`);
  const status = element("div", "crpw-status");
  const errorBox = element("div", "crpw-error");
  errorBox.setAttribute("role", "alert");
  const busy = element("div", "crpw-busy", "computing…");
  busy.setAttribute("role", "status");
  busy.setAttribute("aria-live", "polite");
  const note = element("div", "crpw-note");
  note.setAttribute("role", "status");
  status.append(errorBox, note, busy);
  const body = element("div", "crpw-body");
  const code = codePanel(model as unknown as AnyModel<Record<string, unknown>>);
  root.append(status, body, code.button, code.panel);
  el.replaceChildren(root);

  const cleanups: Array<() => void> = [keepControlKeys(root)];
  const anyModel = model as unknown as AnyModel<Record<string, unknown>>;
  const listen = (traits: string[], handler: () => void, immediately = false): void => {
    for (const trait of traits) {
      const event = `change:${trait}`;
      anyModel.on(event, handler);
      cleanups.push(() => anyModel.off(event, handler));
    }
    if (immediately) handler();
  };
  listen(
    ["error"],
    () => {
      errorBox.textContent = String(anyModel.get("error") ?? "");
    },
    true,
  );
  listen(
    ["note"],
    () => {
      note.textContent = String(anyModel.get("note") ?? "");
    },
    true,
  );
  listen(["snippet"], code.show, true);
  cleanups.push(code.dispose);
  listen(
    ["busy", "computing"],
    () => {
      const isBusy = Boolean(anyModel.get("busy"));
      const what = String(anyModel.get("computing") ?? "");
      busy.textContent = what ? `computing for ${what}…` : "computing…";
      busy.hidden = !isBusy;
      root.classList.toggle("crpw-is-busy", isBusy);
      root.setAttribute("aria-busy", String(isBusy));
    },
    true,
  );
  return {
    root,
    body,
    listen,
    dispose: () => {
      for (const cleanup of cleanups.splice(0).reverse()) cleanup();
    },
    onDispose: (cleanup) => cleanups.push(cleanup),
  };
}

/** Copy `text` to the clipboard (the Clipboard API where the page may use it, else a selected text area). */
export async function copyText(text: string): Promise<void> {
  try {
    await navigator.clipboard.writeText(text);
    return;
  } catch {
    // A page without clipboard access (an insecure origin, a denied permission): select and copy.
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.append(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

/** The "code" button and its panel: the view's Python calls (`snippet`), asked for while the panel is open. */
function codePanel(model: AnyModel<Record<string, unknown>>): {
  button: HTMLButtonElement;
  panel: HTMLElement;
  show: () => void;
  dispose: () => void;
} {
  const button = element("button", "crpw-code-button", "code");
  button.type = "button";
  button.title = "Show the Python calls that reproduce this view";
  button.setAttribute("aria-expanded", "false");
  const panel = element("section", "crpw-code");
  panel.hidden = true;
  panel.setAttribute("aria-label", "Python code of this view");
  const head = element("div", "crpw-code-head");
  const title = element("span", "crpw-code-title", "Python: what this view shows");
  const copy = element("button", "crpw-code-copy", "copy");
  copy.type = "button";
  const close = element("button", "crpw-code-close", "×");
  close.type = "button";
  close.setAttribute("aria-label", "close the code");
  head.append(title, copy, close);
  const text = element("pre", "crpw-code-text");
  text.tabIndex = 0;
  panel.append(head, text);

  const show = (): void => {
    const snippet = String(model.get("snippet") ?? "");
    text.textContent = snippet || "writing the code…";
    copy.disabled = snippet === "";
  };
  let isOpen = false;
  const setOpen = (open: boolean): void => {
    isOpen = open;
    panel.hidden = !open;
    button.setAttribute("aria-expanded", String(open));
    model.send({ type: "code", open });
    if (open) show();
  };
  button.addEventListener("click", () => setOpen(!isOpen));
  close.addEventListener("click", () => setOpen(false));
  copy.addEventListener("click", () => {
    void copyText(String(model.get("snippet") ?? "")).then(() => {
      copy.textContent = "copied";
      window.setTimeout(() => (copy.textContent = "copy"), 1500);
    });
  });
  return { button, panel, show, dispose: () => panel.replaceChildren() };
}
