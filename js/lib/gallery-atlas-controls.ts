/**
 * Form controls bound to traits, for the reference gallery and the concept atlas: each control shows its trait's
 * value (also when the kernel changes it) and writes the user's choice back. Numbers are committed on `change`,
 * so typing or dragging a slider does not send a request per keystroke.
 */
import type { AnyModel } from "@anywidget/types";
import { type Choice, fillSelect } from "./layer-menu";
import { element, type Shell } from "./shell";

export type { Choice };

type Traits = Record<string, unknown>;

export interface NumberOptions {
  min: number;
  max?: number;
  step: number;
  /** Show the value next to a range slider, formatted. */
  format?: (value: number) => string;
}

let counter = 0;

/** A document-unique id for labels and radio groups. */
export function uniqueId(prefix: string): string {
  counter += 1;
  return `crpw-${prefix}-${counter}`;
}

function labelled(text: string, control: HTMLElement, ...extra: HTMLElement[]): HTMLLabelElement {
  const label = element("label", "crpw-field");
  label.append(element("span", "crpw-field-name", text), control, ...extra);
  return label;
}

function save(model: AnyModel<Traits>, trait: string, value: unknown): void {
  model.set(trait, value);
  model.save_changes();
}

/** A `<select>` bound to a string trait; `choices` (grouped ones in `<optgroup>`s) may be replaced with `setChoices`. */
export function boundSelect(
  shell: Shell,
  model: AnyModel<Traits>,
  trait: string,
  text: string,
  choices: Choice[],
): { field: HTMLLabelElement; select: HTMLSelectElement; setChoices: (choices: Choice[]) => void } {
  const select = element("select", "crpw-select");
  const setChoices = (next: Choice[]): void => fillSelect(select, next, String(model.get(trait) ?? ""));
  setChoices(choices);
  select.addEventListener("change", () => save(model, trait, select.value));
  shell.listen([trait], () => (select.value = String(model.get(trait) ?? "")));
  return { field: labelled(text, select), select, setChoices };
}

/** A number input (or a range slider with a readout when `format` is given) bound to a numeric trait. */
export function boundNumber(
  shell: Shell,
  model: AnyModel<Traits>,
  trait: string,
  text: string,
  options: NumberOptions,
  integer: boolean,
): { field: HTMLLabelElement; input: HTMLInputElement } {
  const input = element("input", options.format ? "crpw-range" : "crpw-number");
  input.type = options.format ? "range" : "number";
  input.min = String(options.min);
  if (options.max !== undefined) input.max = String(options.max);
  input.step = String(options.step);
  const readout = element("output", "crpw-value");
  const show = (): void => {
    const value = Number(model.get(trait));
    input.value = String(value);
    if (options.format) {
      readout.value = options.format(value);
      input.setAttribute("aria-valuetext", readout.value);
    }
  };
  input.addEventListener("input", () => {
    if (options.format) readout.value = options.format(Number(input.value));
  });
  input.addEventListener("change", () => {
    const value = integer ? Math.round(Number(input.value)) : Number(input.value);
    if (input.value === "" || !Number.isFinite(value)) return show();
    save(model, trait, value);
  });
  shell.listen([trait], show, true);
  const field = options.format ? labelled(text, input, readout) : labelled(text, input);
  return { field, input };
}

/** A checkbox bound to a boolean trait. */
export function boundCheckbox(shell: Shell, model: AnyModel<Traits>, trait: string, text: string): HTMLLabelElement {
  const input = element("input", "crpw-checkbox");
  input.type = "checkbox";
  input.addEventListener("change", () => save(model, trait, input.checked));
  shell.listen([trait], () => (input.checked = Boolean(model.get(trait))), true);
  const label = element("label", "crpw-field crpw-check");
  label.append(input, element("span", "crpw-field-name", text));
  return label;
}

/** Radio buttons bound to a string trait (a segmented control). */
export function boundRadios(
  shell: Shell,
  model: AnyModel<Traits>,
  trait: string,
  text: string,
  choices: Choice[],
): HTMLFieldSetElement {
  const group = element("fieldset", "crpw-radios");
  group.append(element("legend", "crpw-field-name", text));
  const name = uniqueId(trait);
  const inputs = choices.map(({ value, label }) => {
    const input = element("input", "");
    input.type = "radio";
    input.name = name;
    input.value = value;
    input.addEventListener("change", () => input.checked && save(model, trait, value));
    const option = element("label", "crpw-radio");
    option.append(input, element("span", "", label));
    group.append(option);
    return input;
  });
  shell.listen(
    [trait],
    () => {
      for (const input of inputs) input.checked = input.value === model.get(trait);
    },
    true,
  );
  return group;
}

/** A relevance or activation value in three significant digits; very small or large ones in exponent form. */
export function formatValue(value: number): string {
  const size = Math.abs(value);
  return size !== 0 && (size < 1e-2 || size >= 1e4) ? value.toExponential(2) : value.toPrecision(3);
}
