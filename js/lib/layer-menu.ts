/**
 * The layer menus of the views: the layers a user explores, grouped (the model's blocks by stage, or its
 * convolution and linear layers by parent module; `crp.layer_groups()` in the kernel), as `<optgroup>`s. A layer
 * set from Python that no group lists (any module of the model) still shows, in a group of its own.
 */
import { element } from "./shell";

/** One group of the menu, as the kernel sends it. */
export interface LayerGroup {
  group: string;
  layers: string[];
}

/** One entry of a `<select>`; entries with a `group` go into an `<optgroup>` of that label. */
export interface Choice {
  value: string;
  label: string;
  group?: string;
}

/** The group of a layer that no group of the menu lists. */
export const OTHER_GROUP = "other layers";

/**
 * The menu's entries: every layer of every group, in the groups' order, then `current` (the layer shown) in
 * `OTHER_GROUP` when no group lists it. `label` names an entry (default: the layer's name).
 */
export function layerChoices(
  groups: LayerGroup[],
  current: string,
  label: (layer: string) => string = (layer) => layer,
): Choice[] {
  const choices = groups.flatMap(({ group, layers }) =>
    layers.map((layer) => ({ value: layer, label: label(layer), group })),
  );
  if (current && !choices.some((choice) => choice.value === current)) {
    choices.push({ value: current, label: label(current), group: OTHER_GROUP });
  }
  return choices;
}

/** Consecutive entries of one group, as `[group or undefined, entries]` runs in the entries' order. */
export function groupRuns(choices: Choice[]): [string | undefined, Choice[]][] {
  const runs: [string | undefined, Choice[]][] = [];
  for (const choice of choices) {
    const last = runs.at(-1);
    if (last !== undefined && last[0] === choice.group) last[1].push(choice);
    else runs.push([choice.group, [choice]]);
  }
  return runs;
}

/** Fill `select` with `choices` (`<optgroup>`s for grouped entries) and select `value`. */
export function fillSelect(select: HTMLSelectElement, choices: Choice[], value: string): void {
  const option = ({ value, label }: Choice): HTMLOptionElement => {
    const node = element("option", "", label);
    node.value = value;
    return node;
  };
  select.replaceChildren(
    ...groupRuns(choices).flatMap(([group, entries]) => {
      if (group === undefined) return entries.map(option);
      const optgroup = element("optgroup", "crpw-layer-group");
      optgroup.label = group;
      optgroup.append(...entries.map(option));
      return [optgroup];
    }),
  );
  select.value = value;
}
