/**
 * The model object a view gets in an exported page (crp_widgets/widgets/export.py): it serves `get`, `set`, `on`,
 * `off`, `save_changes` and `send` like anywidget's model, from the state the page holds, and hands what the view
 * asks for (saved traits, custom messages) to the page's stand-in for the kernel. As with a kernel, the answer
 * arrives after the current event (a microtask later), through `update`.
 */
import type { AnyModel } from "@anywidget/types";

/** anywidget's event handlers take any arguments (a custom message passes the content and buffers). */
type Handler = (...args: any[]) => void;
type Traits = Record<string, unknown>;

/** What the page's stand-in for the kernel receives from a view. */
export interface Receiver {
  /** The view saved these traits (their new values are on the model). */
  save(names: string[]): void;
  /** The view sent a custom message (`model.send`). */
  message(content: Record<string, unknown>): void;
}

export class PageModel implements AnyModel<Traits> {
  private readonly values: Traits;
  private readonly handlers = new Map<string, Set<Handler>>();
  private readonly dirty = new Set<string>();
  readonly widget_manager = {
    get_model: (): Promise<never> => Promise.reject(new Error("an exported page has no widget manager")),
  };

  constructor(
    initial: Traits,
    private readonly receiver: Receiver,
  ) {
    this.values = { ...initial };
  }

  get<K extends keyof Traits>(key: K): Traits[K] {
    return this.values[key];
  }

  /** A change made by the view: shown at once (`change:<key>`), sent with the next `save_changes`. */
  set<K extends keyof Traits>(key: K, value: Traits[K]): void {
    this.values[key] = value;
    this.dirty.add(String(key));
    this.emit(`change:${String(key)}`);
    this.emit("change");
  }

  save_changes(): void {
    const names = [...this.dirty];
    this.dirty.clear();
    if (names.length > 0) queueMicrotask(() => this.receiver.save(names));
  }

  send(content: unknown): void {
    queueMicrotask(() => this.receiver.message((content ?? {}) as Record<string, unknown>));
  }

  on(eventName: string, callback: Handler): void {
    let set = this.handlers.get(eventName);
    if (set === undefined) {
      set = new Set();
      this.handlers.set(eventName, set);
    }
    set.add(callback);
  }

  off(eventName?: string | null, callback?: Handler | null): void {
    if (eventName == null) {
      if (callback == null) this.handlers.clear();
      else for (const set of this.handlers.values()) set.delete(callback);
      return;
    }
    if (callback == null) this.handlers.delete(eventName);
    else this.handlers.get(eventName)?.delete(callback);
  }

  /**
   * The page's answer: set the traits whose value changed (compared by identity) and fire one `change:<trait>`
   * per changed trait, then `change`; returns the changed names. `force` fires for those traits even when their
   * value is the same (a refused change that the view showed already, e.g. a `<select>` moved by the user).
   */
  update(traits: Traits, force: string[] = []): string[] {
    const changed = Object.keys(traits).filter((key) => this.values[key] !== traits[key] || force.includes(key));
    for (const key of changed) this.values[key] = traits[key];
    for (const key of changed) this.emit(`change:${key}`);
    if (changed.length > 0) this.emit("change");
    return changed;
  }

  private emit(eventName: string): void {
    for (const handler of [...(this.handlers.get(eventName) ?? [])]) handler();
  }
}
