/**
 * The frame every component draws into: a themed root, an error box bound to the `error` trait, a busy
 * indicator bound to `busy` (a computation is waiting or running in the kernel) that says what it computes for
 * (`computing`, e.g. "sample #5, features.conv4"), and control keys kept inside the widget (see keyboard.ts).
 * While busy, the view still shows what it computed before, dimmed, with its own caption. Components put their content into `body` and register their model
 * listeners with `listen`, so that one `dispose` undoes everything.
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
  status.append(errorBox, busy);
  const body = element("div", "crpw-body");
  root.append(status, body);
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
