"""Timing a click in the page: from the click to the heatmap grid it updates (performance marks of js/heatmaps.ts)."""

# Resolves to the milliseconds from ``start`` to the first grid mark whose detail ``matches``.
WAIT_FOR_GRID = """
const waitForGrid = async (start, matches) => {
  const deadline = start + 60000;
  while (performance.now() < deadline) {
    const mark = performance.getEntriesByName("crpw:grid").find((m) => m.startTime > start && matches(m.detail));
    if (mark) return mark.startTime - start;
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  throw new Error("the heatmap grid did not update within 60 s");
};
"""


def in_page(page, body, *arguments):
    """Run the async function ``body`` in the page; its arguments are ``arguments_[0]``, ``arguments_[1]``, ..."""
    return page.evaluate(f"async (arguments_) => {{ {body} }}", list(arguments))


def percentile(values, q):
    """The ``q`` quantile of ``values`` (nearest rank; for 8 values p95 is their maximum)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
