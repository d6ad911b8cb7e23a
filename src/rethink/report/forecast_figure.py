"""The forecast figure: per training-set size, each arm's final box AP against schedule length (on a linear axis:
the forecast reaches twice the longest schedule tried, so half of each panel is forecast), measured points
filled, the forecast a dashed line in a shaded band (its interval), the catch-up marked with a star.

Only the schedules that matter are labelled on the x axis (summary["forecast"]["key_schedules"]: the ones tried,
the catch-up, the horizon); the other schedules forecast get unlabelled ticks. Labels that would still touch one
that matters more are left blank, so none overprints another whatever the spacing of the schedules.
"""

import json

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, NullFormatter

from rethink.report.figure_style import (
    AP_LABEL, init_color, init_label, inits_in_order, legend_columns, panel_grid, panel_title,
)
from rethink.study.plan import other_key
from rethink.study.results import RANDOM, size_sort_key

BAND_ALPHA = 0.18
LABEL_GAP_PX = 6.0  # the least room between two x tick labels


def _arm_points(cells: list) -> tuple:
    """(measured [(iters, AP)], forecast [(iters, AP, low, high)]) of one arm in one panel; the forecast starts at
    the last measured point before it, so that its line and band leave from there."""
    cells = sorted(cells, key=lambda c: c["iters"])
    measured = [(c["iters"], c["observed_final_ap"]) for c in cells if c["observed_final_ap"] is not None]
    ahead = [(c["iters"], c["predicted_final_ap"], c["interval"][0], c["interval"][1]) for c in cells
             if c["observed_final_ap"] is None and c["predicted_final_ap"] is not None]
    if ahead:
        before = [m for m in measured if m[0] < ahead[0][0]]
        if before:
            ahead.insert(0, (before[-1][0], before[-1][1], before[-1][1], before[-1][1]))
    return measured, ahead


def _draw_arm(ax, cells: list, color: str) -> None:
    measured, ahead = _arm_points(cells)
    if measured:
        ax.plot([m[0] for m in measured], [m[1] for m in measured], color=color, marker="o", ms=4.5, lw=1.5,
                zorder=3)
    if ahead:
        xs = [a[0] for a in ahead]
        ax.fill_between(xs, [a[2] for a in ahead], [a[3] for a in ahead], color=color, alpha=BAND_ALPHA, lw=0,
                        zorder=1)
        ax.plot(xs, [a[1] for a in ahead], color=color, ls="--", lw=1.3, zorder=2)


def _ap_at(cells: list, iters: int):
    cell = next((c for c in cells if c["iters"] == iters), None)
    if cell is None:
        return None
    return cell["observed_final_ap"] if cell["observed_final_ap"] is not None else cell["predicted_final_ap"]


def _mark_catch_up(ax, panel_cells: list, catch_ups: list, sources: list) -> None:
    """A star on random init's final AP where it is forecast (or measured) to catch up, and a dotted line down."""
    random_cells = [c for c in panel_cells if c["init"] == RANDOM]
    for entry in catch_ups:
        ap = _ap_at(random_cells, entry["iters"])
        if ap is None:
            continue
        color = "0.15" if len(sources) == 1 else init_color(entry["init"], sources)
        ax.axvline(entry["iters"], color="0.55", ls=":", lw=0.9, zorder=0)
        ax.plot([entry["iters"]], [ap], marker="*", ms=13, mfc="white", mec=color, mew=1.3, ls="", zorder=5)


def _set_ticks(ax, panel_cells: list, keys: list) -> list:
    """Label the key schedules, tick the others; return the labelled positions, the most important first."""
    labelled = {k["iters"]: k["schedule"] for k in keys}
    others = sorted({c["iters"] for c in panel_cells} - set(labelled))
    ax.xaxis.set_major_locator(FixedLocator(sorted(labelled)))
    ax.set_xticklabels([labelled[t] for t in sorted(labelled)])
    ax.xaxis.set_minor_locator(FixedLocator(others))
    ax.xaxis.set_minor_formatter(NullFormatter())
    tried = sorted(k["iters"] for k in keys if k["tried"])
    order = [k["iters"] for k in keys if k["catch_up"]] + [k["iters"] for k in keys if k["horizon"]]
    order += tried[-1:] + tried[:1] + tried
    return list(dict.fromkeys(order))


def thin_tick_labels(ax, priority: list, renderer) -> None:
    """Blank each x tick label that would touch a label of a tick earlier in `priority` (tick positions)."""
    ticks = list(ax.get_xticks())
    texts = [t.get_text() for t in ax.get_xticklabels()]
    boxes = {tick: label.get_window_extent(renderer) for tick, label in zip(ticks, ax.get_xticklabels())}
    kept = []
    for tick in priority:
        box = boxes[tick]
        if all(box.x1 + LABEL_GAP_PX <= other.x0 or other.x1 + LABEL_GAP_PX <= box.x0 for other in kept):
            kept.append(box)
        else:
            texts[ticks.index(tick)] = ""
    ax.set_xticklabels(texts)


def _legend(fig, study, inits: list, sources: list, interval: float) -> None:
    handles = [Line2D([], [], color=init_color(i, sources), marker="o", lw=1.5) for i in inits]
    labels = [init_label(i, study) for i in inits]
    handles += [Line2D([], [], color="0.3", marker="o", ms=4.5, lw=1.5),
                (Patch(color="0.3", alpha=BAND_ALPHA + 0.1, lw=0), Line2D([], [], color="0.3", ls="--", lw=1.3)),
                Line2D([], [], marker="*", ms=11, mfc="white", mec="0.15", mew=1.2, ls="")]
    labels += ["measured", f"forecast and its {interval:.0%} interval", "random init catches up"]
    fig.legend(handles=handles, labels=labels, loc="outside upper center", ncols=legend_columns(fig, handles),
               frameon=False)


def draw_forecast(study, forecast: dict):
    """The figure of summary["forecast"] (report/forecasts.py): one panel per training-set size."""
    panels = {}
    for cell in forecast["cells"]:
        panels.setdefault((other_key(cell["other"]), cell["train_size"]), []).append(cell)
    images = {(r.other_key, r.train_size): r.train_images for r in study.runs}
    keys = sorted(panels, key=lambda k: (k[0], size_sort_key(k[1], images.get(k))))
    inits, sources = inits_in_order(study), study.sources
    fig, axes = panel_grid(keys, 3.2, 2.7)
    priorities = []
    for ax, key in zip(axes, keys):
        for init in inits:
            mine = [c for c in panels[key] if c["init"] == init]
            if mine:
                _draw_arm(ax, mine, init_color(init, sources))
        catch_ups = [e for e in forecast["catch_up"]
                     if (other_key(e["other"]), e["train_size"]) == key and e["schedule"] is not None]
        _mark_catch_up(ax, panels[key], catch_ups, sources)
        key_schedules = [k for k in forecast.get("key_schedules", [])
                         if (other_key(k["other"]), k["train_size"]) == key]
        priorities.append(_set_ticks(ax, panels[key], key_schedules))
        ax.set_xlabel(f"schedule (1x = {forecast['iters_1x']:,} iterations)")
        ax.set_ylabel(f"final {AP_LABEL}")
        ax.set_title(panel_title(key[1], images.get(key), json.loads(key[0])))
    _legend(fig, study, inits, sources, forecast["interval"])
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()
    for ax, priority in zip(axes, priorities):
        thin_tick_labels(ax, priority, renderer)
    return fig
