/**
 * Keyboard use of controls inside notebook outputs.
 *
 * In command mode JupyterLab binds plain arrow keys, Home/End, Page keys, Enter and Space on any focused element
 * of the notebook (`.jp-Notebook.jp-mod-commandMode:not(.jp-mod-readWrite) :focus`) and prevents their default
 * action, so a focused range input or button would never see them. The bindings run when the event bubbles to
 * the document, so stopping these keys at the widget's root leaves them to the control. Keys pressed with a
 * modifier (Shift+Enter, Ctrl+S, ...) still reach JupyterLab.
 */

const CONTROL_KEYS = new Set([
  "ArrowLeft",
  "ArrowRight",
  "ArrowUp",
  "ArrowDown",
  "Home",
  "End",
  "PageUp",
  "PageDown",
  "Enter",
  " ",
]);

/** True for a key event that a focused control should handle rather than the notebook. */
export function isControlKey(
  event: Pick<KeyboardEvent, "key" | "shiftKey" | "ctrlKey" | "altKey" | "metaKey">,
): boolean {
  return !(event.shiftKey || event.ctrlKey || event.altKey || event.metaKey) && CONTROL_KEYS.has(event.key);
}

/** Keep control keys inside `root`; returns the function that undoes it. */
export function keepControlKeys(root: HTMLElement): () => void {
  const onKeyDown = (event: KeyboardEvent): void => {
    if (isControlKey(event)) event.stopPropagation();
  };
  root.addEventListener("keydown", onKeyDown);
  return () => root.removeEventListener("keydown", onKeyDown);
}
