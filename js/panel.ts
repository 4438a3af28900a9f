/**
 * The style sheet of the panels built from ipywidgets and bqplot (crp_widgets/widgets/component.py, Panel): a
 * panel shows this empty widget so that its styles load wherever it is displayed. The styles give the charts the
 * theme's colours (bqplot's dark theme would paint titles and labels orange), show the chart toolbars only on
 * hover, and lay out the progress line of an analysis.
 */
import type { RenderProps } from "@anywidget/types";
import "./lib/theme.css";
import "./panel.css";

function render({ el }: RenderProps<Record<string, never>>): () => void {
  el.classList.add("crpw-panel-styles");
  return () => el.classList.remove("crpw-panel-styles");
}

export default { render };
