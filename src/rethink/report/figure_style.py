"""What every figure of the report shares: one color per init (random init always blue), one line style per
schedule (the longest solid), AP on COCO's 0-100 scale, matplotlib's settings, the grid of panels and the writer
of each figure as PNG (150 dpi, embedded in index.html) and SVG (for papers).
"""

import io
import math
from pathlib import Path

from matplotlib.figure import Figure

from rethink.fileio import atomic_write_bytes
from rethink.report import words
from rethink.study.results import RANDOM


DPI = 150
RANDOM_COLOR = "#1f77b4"
SOURCE_COLORS = ["#e6550d", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
# longest schedule first: it carries the shared trajectory, so it gets the solid line
SCHEDULE_STYLES = ["-", "--", "-.", ":", (0, (5, 1, 1, 1)), (0, (1, 1)), (0, (8, 2))]
DROP_COLOR = "0.6"

STYLE = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "0.9",
    "grid.linewidth": 0.6,
    "svg.hashsalt": "rethink-report",  # stable ids: the same study gives the same SVG bytes
}

AP_LABEL = "box AP (%)"


def init_color(init: str, sources: list) -> str:
    if init == RANDOM:
        return RANDOM_COLOR
    return SOURCE_COLORS[sources.index(init) % len(SOURCE_COLORS)] if init in sources else "0.3"


def init_label(init: str, study) -> str:
    if init == RANDOM:
        return "random init"
    label = study.label(init)
    return label if label != init else f"pretrained: {init}"


def schedule_styles(factors_by_schedule: dict) -> dict:
    ordered = sorted(factors_by_schedule, key=lambda s: -factors_by_schedule[s])
    return {s: SCHEDULE_STYLES[i % len(SCHEDULE_STYLES)] for i, s in enumerate(ordered)}


def inits_in_order(study) -> list:
    inits = [RANDOM] if any(r.init == RANDOM for r in study.runs) else []
    return inits + study.sources


def panel_grid(keys: list, width: float, height: float, max_cols: int = 3, extra_height: float = 0.9):
    """A figure with one axes per key, in key order; keys start with the other-axis key.

    With one other-axis value the panels wrap at max_cols; with several, each value gets its own row
    so that the same training-set size sits in the same column.
    """
    groups = []
    for key in keys:
        if not groups or groups[-1][0] != key[0]:
            groups.append((key[0], []))
        groups[-1][1].append(key)
    if len(groups) == 1:
        ncols = min(max_cols, len(keys))
        nrows = math.ceil(len(keys) / ncols)
        positions = [(i // ncols, i % ncols) for i in range(len(keys))]
    else:
        ncols = max(len(members) for _, members in groups)
        nrows = len(groups)
        positions = [(row, col) for row, (_, members) in enumerate(groups) for col in range(len(members))]
    # at least the width of a two-column paper figure, so the legend above fits one or two panels
    fig_width = max(width * ncols + 0.3, 6.4)
    fig = Figure(figsize=(fig_width, height * nrows + extra_height), dpi=DPI, layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False)
    used = set(positions)
    for row in range(nrows):
        for col in range(ncols):
            if (row, col) not in used:
                grid[row][col].set_visible(False)
    return fig, [grid[row][col] for row, col in positions]


def save_figure(fig: Figure, out_dir: Path, name: str) -> tuple:
    png, svg = out_dir / f"{name}.png", out_dir / f"{name}.svg"
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(png, buffer.getvalue())
    buffer = io.BytesIO()
    # the layout solved for the PNG holds for the SVG too (positions are figure fractions): skip solving it again
    fig.set_layout_engine("none")
    # no creation date in the SVG: re-rendering an unchanged study gives identical files
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    atomic_write_bytes(svg, buffer.getvalue())
    return png, svg


def panel_title(size, images, other: dict) -> str:
    title = words.size_label(size, images)
    label = words.other_label(other)
    return f"{title}\n{label}" if label else title


LEGEND_INCHES = 3.5  # the width one legend entry with a study's longer source names takes


def legend_columns(fig, handles: list) -> int:
    """A figure legend's columns: as many entries side by side as the figure's width holds, then further rows."""
    return max(1, min(len(handles), int(fig.get_figwidth() // LEGEND_INCHES)))
