"""Shared pieces of the panels' bqplot charts: a figure with room for its labels, a legend beside it, about-tips.

Legends are HTML beside or under a chart, never inside the plot area where they would cover the data; long class
names go on the vertical axis of horizontal bars instead of rotated labels that overlap. Colours of text follow the
theme through ``js/panel.css``.
"""

import html

import bqplot
import ipywidgets

__all__ = ["COLOURS", "about", "figure", "legend", "with_legend"]

COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]  # fmt: skip


def figure(marks, axes, title, css, width=440, height=300, margin=None):
    """A bqplot figure of ``width`` x ``height`` pixels with the CSS class ``css`` and no legend of its own.

    Parameters
    ----------
    marks, axes : list
        The figure's marks and axes.
    title : str
        Its title.
    css : str
        A class name for tests and styles.
    width, height : int
        Its size in pixels.
    margin : dict, optional
        ``fig_margin`` (default: room for axis labels on the left and at the bottom).
    """
    chart = bqplot.Figure(
        marks=marks, axes=axes, title=title,
        fig_margin=margin or {"top": 36, "bottom": 45, "left": 72, "right": 12},
        layout=ipywidgets.Layout(width=f"{width}px", height=f"{height}px"),
    )  # fmt: skip
    chart.add_class(css)
    return chart


def legend(labels, colours, css="crpw-chart-legend"):
    """An HTML legend: a colour swatch and a name per series (shown beside a chart, never over its data)."""
    items = "".join(
        f'<div class="crpw-chart-legend-item"><span class="crpw-chart-swatch" style="background:{colour}"></span>'
        f"{html.escape(str(label))}</div>"
        for label, colour in zip(labels, colours)
    )
    return f'<div class="{css}">{items}</div>'


def with_legend(chart, key):
    """``chart`` with the HTML widget ``key`` (its legend) on its right."""
    return ipywidgets.HBox([chart, key], layout=ipywidgets.Layout(align_items="center"))


def about(text, words, bold=True):
    """``text`` (in bold for a heading), then an "about" mark whose tooltip holds ``words`` (method, paper, section)."""
    shown = f"<b>{html.escape(text)}</b>" if bold else html.escape(text)
    return (
        f"{shown} <span class='crpw-about' title='{html.escape(words, quote=True)}' "
        "style='cursor: help; color: var(--jp-ui-font-color2, #757575)'>(about)</span>"
    )


def colour_bar():
    """The colour scale of heatmaps over images (the same element as ``js/lib/colour-bar.ts``), as HTML."""
    return (
        "<div class='crpw-colour-bar' title='Colour scale: blue contradicts, red supports; the stronger the colour, "
        "the larger |R|, up to the largest |R| of each heatmap. Pixels without relevance show the image.'>"
        "<div class='crpw-colour-bar-gradient'></div><div class='crpw-colour-bar-labels'><span>\u2212max |R|</span>"
        "<span>0</span><span>+max |R|</span></div></div>"
    )
