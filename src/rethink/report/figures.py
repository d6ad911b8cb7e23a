"""The report's figures, drawn with matplotlib's object API (no pyplot: no global figure state, no GUI backend).

Every figure is written as PNG and SVG under report/figures/, with the colors, line styles and panels that
figure_style.py gives them all; counts are in engineering notation.
"""

import json
import math
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import EngFormatter, FixedLocator, NullLocator

from rethink.report import captions, words
from rethink.report.figure_style import (
    AP_LABEL, DPI, DROP_COLOR, RANDOM_COLOR, STYLE, init_color, init_label, inits_in_order,
    legend_columns, panel_grid, panel_title, save_figure, schedule_styles,
)
from rethink.report.findings import all_verdicts
from rethink.report.forecast_figure import draw_forecast
from rethink.study.plan import other_key
from rethink.study.results import PRIMARY, RANDOM, size_sort_key


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def mean_curve(runs, key: str, rows: str = "evals", start: int | None = None):
    """Mean, min and max over runs at each logged iteration (runs that have not reached it are left out)."""
    by_iter = {}
    for run in runs:
        for row in getattr(run, rows):
            value = row.get(key)
            if _finite(value) and (start is None or row["iter"] >= start):
                by_iter.setdefault(row["iter"], []).append(float(value))
    iters = sorted(by_iter)
    means = [sum(by_iter[i]) / len(by_iter[i]) for i in iters]
    lows = [min(by_iter[i]) for i in iters]
    highs = [max(by_iter[i]) for i in iters]
    counts = [len(by_iter[i]) for i in iters]
    return iters, means, lows, highs, counts


def moving_average(values: list, window: int) -> list:
    """Trailing moving average; the first points average over what exists so far."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _log_x_ticks(ax, ticks: dict, **label_style):
    """A log-scale x axis with a labelled tick at each key of `ticks` (its label the value) and no minor ticks."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sorted(ticks)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([ticks[t] for t in sorted(ticks)], **label_style)


def _drawn(fig: Figure, out_dir: Path, name: str, caption: str) -> tuple:
    """Write the figure; return (its entry in the report, None: no reason it is not drawn)."""
    png, svg = save_figure(fig, out_dir, name)
    return {"name": name, "title": captions.FIGURE_TITLES[name], "caption": caption,
            "png": png, "svg": svg, "width_in": float(fig.get_figwidth())}, None


# ---------------------------------------------------------------------------------------------
# 1. AP vs iterations (the seed figure)
# ---------------------------------------------------------------------------------------------


def _branch_start(cell: list, drawn_names: set):
    """A forked run repeats its trunk's curve up to the fork: draw only its own branch, from the last evaluation
    at or before the fork so that it joins the trunk's line. None: the cell's whole curve is its own."""
    forks = {r.fork_iter for r in cell}
    if len(forks) == 1 and None not in forks and all(r.trunk in drawn_names for r in cell):
        fork = forks.pop()
        return max((row["iter"] for r in cell for row in r.evals if row["iter"] <= fork), default=fork)
    return None


def _iterations_panel(ax, runs: list, factors: dict, styles: dict, inits: list, sources: list, drawn_names: set):
    """One panel's curves, longest schedule first, each schedule's LR drops before its curves; True where a
    min-max band over seeds was drawn."""
    any_band = False
    drops_seen = set()
    for schedule in sorted({r.schedule for r in runs}, key=lambda s: -factors[s]):
        for d in next(r for r in runs if r.schedule == schedule).drops:
            if d not in drops_seen:
                ax.axvline(d, color=DROP_COLOR, ls=":", lw=0.9, zorder=1)
                drops_seen.add(d)
        for init in inits:
            cell = [r for r in runs if r.init == init and r.schedule == schedule]
            if not cell:
                continue
            iters, means, lows, highs, counts = mean_curve(cell, PRIMARY, start=_branch_start(cell, drawn_names))
            if not iters:
                continue
            color = init_color(init, sources)
            ax.plot(iters, means, color=color, ls=styles[schedule], lw=1.5, zorder=3)
            if max(counts) > 1:
                ax.fill_between(iters, lows, highs, color=color, alpha=0.18, lw=0, zorder=2)
                any_band = True
    return any_band


def figure_ap_vs_iterations(study, out_dir: Path):
    drawn = [r for r in study.runs if r.state in ("done", "running") and r.evals]
    if not drawn:
        return None, captions.NOT_DRAWN["no_evaluation"]
    drawn_names = {r.name for r in drawn}
    panels = {}
    for run in drawn:
        panels.setdefault((run.other_key, size_sort_key(run.train_size, run.train_images), run.train_size,
                           run.train_images), []).append(run)
    keys = sorted(panels, key=lambda k: k[:2])
    factors = {r.schedule: r.schedule_factor for r in drawn}
    styles = schedule_styles(factors)
    inits = inits_in_order(study)
    sources = study.sources
    any_band = False

    fig, axes = panel_grid(keys, 3.6, 2.9)
    for ax, key in zip(axes, keys):
        if _iterations_panel(ax, panels[key], factors, styles, inits, sources, drawn_names):
            any_band = True
        ax.set_title(panel_title(key[2], key[3], json.loads(key[0])))
        ax.set_xlabel("iterations")
        ax.set_ylabel(AP_LABEL)
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.set_xlim(left=0)

    handles = [Line2D([], [], color=init_color(i, sources), lw=2, label=init_label(i, study)) for i in inits]
    handles += [Line2D([], [], color="0.25", ls=styles[s], lw=1.5, label=f"{s} schedule")
                for s in sorted(factors, key=lambda s: factors[s])]
    handles.append(Line2D([], [], color=DROP_COLOR, ls=":", lw=1, label="LR drop"))
    if any_band:
        handles.append(Patch(color="0.5", alpha=0.25, lw=0, label="min-max over seeds"))
    # two rows filled column by column: the inits share the first column, the schedules follow
    columns = min(math.ceil(len(handles) / 2), legend_columns(fig, handles))
    fig.legend(handles=handles, loc="outside upper center", ncols=columns, frameon=False)
    return _drawn(fig, out_dir, "ap_vs_iterations", captions.caption_ap_vs_iterations())


# ---------------------------------------------------------------------------------------------
# 2. Final AP vs schedule length (Table 1 as a chart)
# ---------------------------------------------------------------------------------------------


def figure_ap_vs_schedule(study, cells, out_dir: Path):
    panels = {}
    for cell in cells:
        panels.setdefault((other_key(cell["other"]),
                           size_sort_key(cell["train_size"], cell["train_images"]),
                           cell["train_size"], cell["train_images"]), []).append(cell)
    if not any(len({c["schedule"] for c in group}) >= 2 for group in panels.values()):
        return None, captions.NOT_DRAWN["one_schedule"]
    keys = sorted(panels, key=lambda k: k[:2])
    inits = inits_in_order(study)
    sources = study.sources
    fig, axes = panel_grid(keys, 3.2, 2.7)
    for ax, key in zip(axes, keys):
        group = panels[key]
        ticks = {}
        offsets = {init: (i - (len(inits) - 1) / 2) * 0.04 for i, init in enumerate(inits)}
        for init in inits:
            mine = sorted((c for c in group if c["init"] == init), key=lambda c: c["schedule_factor"])
            mine = [c for c in mine if c["metrics"].get(PRIMARY, {}).get("mean") is not None]
            if not mine:
                continue
            # a small horizontal offset per init keeps overlapping error bars apart (log x: multiplicative)
            xs = [c["schedule_factor"] * (1 + offsets[init]) for c in mine]
            ys = [c["metrics"][PRIMARY]["mean"] for c in mine]
            errs = [c["metrics"][PRIMARY]["std"] or 0.0 for c in mine]
            ax.errorbar(xs, ys, yerr=errs, color=init_color(init, sources), marker="o", ms=4, lw=1.5,
                        capsize=3, label=init_label(init, study))
            ticks.update({c["schedule_factor"]: c["schedule"] for c in mine})
        _log_x_ticks(ax, ticks)
        ax.set_xlabel("schedule length (log scale)")
        ax.set_ylabel(f"final {AP_LABEL}")
        ax.set_title(panel_title(key[2], key[3], json.loads(key[0])))
    handles = [Line2D([], [], color=init_color(i, sources), marker="o", lw=1.5, label=init_label(i, study)) for i in inits]
    fig.legend(handles=handles, loc="outside upper center", ncols=legend_columns(fig, handles), frameon=False)
    return _drawn(fig, out_dir, "ap_vs_schedule", captions.caption_ap_vs_schedule())


# ---------------------------------------------------------------------------------------------
# 3. Best AP vs training-set size (the data-size experiment)
# ---------------------------------------------------------------------------------------------


def _size_tick(size, images) -> str:
    text = words.fmt_count(images)
    return f"{text}\n(full)" if size == "full" else text


def _best_per_size(group: list, init: str) -> list:
    """Per size, the arm at its best: the schedule whose curve peaks highest (mean over seeds), as the paper
    gives each arm its best schedule on small data; smallest size first."""
    by_size = {}
    for c in group:
        if c["init"] == init and c["best"].get(PRIMARY, {}).get("mean") is not None:
            kept = by_size.get(c["train_size"])
            if kept is None or c["best"][PRIMARY]["mean"] > kept["best"][PRIMARY]["mean"]:
                by_size[c["train_size"]] = c
    return sorted(by_size.values(), key=lambda c: c["train_images"])


def _size_marks(ax, verdict: dict | None) -> set:
    """What pre-training is worth in images (arrows) and where random init breaks down; returns the marks drawn."""
    marked = set()
    # worth in images: from pretrained's best at n across to the size random init needs for the same AP
    for row in ((verdict or {}).get("worth_in_images") or {}).get("by_size", []):
        if row["bound"] is None and row["ap_pretrained_best"] is not None:
            y = row["ap_pretrained_best"]
            ax.annotate("", xy=(row["images_needed"], y), xytext=(row["train_images"], y),
                        arrowprops={"arrowstyle": "->", "color": "0.35", "lw": 0.9, "ls": ":"})
            marked.add("worth")
    # breakdown: between the largest size where random is behind and the smallest where it is within
    small = verdict["findings"]["small_data_hurts_random"] if verdict else {}
    behind, within = small.get("largest_images_behind"), small.get("smallest_images_within_margin")
    if behind and within:
        ax.axvspan(behind, within, color="0.85", alpha=0.6, lw=0, zorder=0)
        ax.text(math.sqrt(behind * within), 0.04, "breakdown", transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=8, color="0.3")
        marked.add("region")
    elif behind:
        ax.axvline(behind, color="0.5", ls="--", lw=1, zorder=0)
        ax.text(behind, 0.97, " random behind\n up to here", transform=ax.get_xaxis_transform(),
                ha="left", va="top", fontsize=8, color="0.3")
        marked.add("line")
    return marked


def figure_ap_vs_size(study, cells, summary, out_dir: Path):
    panels = {}
    for cell in cells:
        if cell["train_images"] is not None:  # a log-scale x needs the number of images
            panels.setdefault(other_key(cell["other"]), []).append(cell)
    if not any(len({c["train_size"] for c in group}) >= 2 for group in panels.values()):
        return None, captions.NOT_DRAWN["one_size"]
    keys = sorted(panels)
    inits = inits_in_order(study)
    sources = study.sources
    # one panel is the common case: give it the width of a two-column paper figure
    fig, axes = panel_grid([(k,) for k in keys], 4.6, 3.2, max_cols=2)
    marked = set()  # which breakdown marks were drawn, for the legend
    for ax, group_key in zip(axes, keys):
        ticks = {}
        for init in inits:
            points = _best_per_size(panels[group_key], init)
            if not points:
                continue
            xs = [c["train_images"] for c in points]
            ys = [c["best"][PRIMARY]["mean"] for c in points]
            errs = [c["best"][PRIMARY]["std"] or 0.0 for c in points]
            ax.errorbar(xs, ys, yerr=errs, color=init_color(init, sources), marker="o", ms=4, lw=1.5, capsize=3)
            ticks.update({c["train_images"]: _size_tick(c["train_size"], c["train_images"]) for c in points})
        _log_x_ticks(ax, ticks)
        ax.set_xlabel("training images (log scale)")
        ax.set_ylabel(f"best {AP_LABEL}")
        label = words.other_label(json.loads(group_key))
        if label:
            ax.set_title(label)
        verdict = next((v for v in all_verdicts(summary) if other_key(v["other"]) == group_key), None)
        marked |= _size_marks(ax, verdict)
    handles = [Line2D([], [], color=init_color(i, sources), marker="o", lw=1.5, label=init_label(i, study)) for i in inits]
    if "region" in marked:
        handles.append(Patch(color="0.85", label="breakdown region"))
    if "line" in marked:
        handles.append(Line2D([], [], color="0.5", ls="--", lw=1, label="random behind up to here"))
    if "worth" in marked:
        handles.append(Line2D([], [], color="0.35", ls=":", lw=0.9, label="images random init needs"))
    fig.legend(handles=handles, loc="outside upper center", ncols=legend_columns(fig, handles), frameon=False)
    caption = captions.caption_ap_vs_size(study.sources[0] if study.sources else None, study.margin_ap)
    return _drawn(fig, out_dir, "ap_vs_train_size", caption)


def figure_speedup(study, summary: dict, out_dir: Path):
    """Iterations each arm needs to reach each AP level before the first LR drop (converges_faster's speed-up)."""
    rows = [(v["source"], v["findings"]["converges_faster"]) for v in all_verdicts(summary)
            if not v["other"] and v["findings"]["converges_faster"].get("speedup")]
    if not rows:
        return None, captions.NOT_DRAWN["no_speedup"]
    sources = study.sources
    fig, axes = panel_grid([("", s) for s, _ in rows], 4.6, 3.2, max_cols=2)
    for ax, (source, f) in zip(axes, rows):
        levels = f["speedup"]["levels"]
        aps = [lv["ap"] for lv in levels]
        ax.plot(aps, [lv["iters_pretrained"] for lv in levels], color=init_color(source, sources), marker="o",
                ms=3.5, lw=1.5, label=init_label(source, study))
        reached = [lv for lv in levels if not lv["lower_bound"]]
        ax.plot([lv["ap"] for lv in reached], [lv["iters_random"] for lv in reached], color=RANDOM_COLOR,
                marker="o", ms=3.5, lw=1.5, label=init_label(RANDOM, study))
        bounds = [lv for lv in levels if lv["lower_bound"]]
        if bounds:
            ax.plot([lv["ap"] for lv in bounds], [lv["ratio"] * lv["iters_pretrained"] for lv in bounds], ls="none",
                    marker="^", ms=5, mfc="none", color=RANDOM_COLOR, label="random: not reached (at least)")
        ax.axhline(f["early_until_iter"], color=DROP_COLOR, ls=":", lw=1, label="first LR drop")
        ax.set_xlabel(f"AP level ({AP_LABEL})")
        ax.set_ylabel("iterations to reach it")
        ax.yaxis.set_major_formatter(EngFormatter(sep=""))
        ax.set_title(captions.title_speedup(f["speedup"]["mean"], words.size_label(f["train_size"], f["train_images"]),
                                         f["curve_schedule"]))
        ax.legend(loc="best", frameon=False)
    return _drawn(fig, out_dir, "speedup", captions.caption_speedup())


# ---------------------------------------------------------------------------------------------
# 4. Images, instances and pixels seen
# ---------------------------------------------------------------------------------------------


COST_KEYS = {"images_seen": "images", "instances_seen": "instances", "pixels_seen": "pixels"}


def _pretraining_seen(costs: dict, init: str, key: str):
    """What the init's pre-training saw (images_seen, instances_seen or pixels_seen), as summary.json's
    pretraining_cost counts it (rethink's own record, or the published weights' metadata and the study's
    init_cost); None if unknown or random init."""
    return (costs.get(init) or {}).get(COST_KEYS[key]) if init != RANDOM else None


def _compute_panel(ax, study, costs: dict, group: list, schedules: list, inits: list, key: str):
    """One quantity's bars: per schedule, per init, fine-tuning (solid) with pre-training stacked on it (hatched),
    each bar's total above it."""
    width = 0.8 / max(1, len(inits))
    top = 0.0
    bars = []
    for si, schedule in enumerate(schedules):
        for ii, init in enumerate(inits):
            cell = next((c for c in group if c["init"] == init and c["schedule"] == schedule), None)
            if cell is None or cell[key]["mean"] is None:
                continue
            x = si + (ii - (len(inits) - 1) / 2) * width
            color = init_color(init, study.sources)
            fine = cell[key]["mean"]
            ax.bar(x, fine, width * 0.92, color=color, zorder=2)
            pre = _pretraining_seen(costs, init, key)
            if pre is not None:
                ax.bar(x, pre, width * 0.92, bottom=fine, color=color, alpha=0.35, hatch="///",
                       edgecolor=color, lw=0, zorder=2)
            total = fine + (pre or 0.0)
            top = max(top, total)
            bars.append((x, total, words.fmt_count(total)))
    # side by side, three or more labels per group collide: stand them upright
    rotation = 90 if len(inits) > 2 else 0
    for x, total, note in bars:
        ax.text(x, total + 0.015 * top, note, ha="center", va="bottom", fontsize=7, color="0.2",
                rotation=rotation)
    ax.set_ylim(0, top * (1.35 if rotation else 1.2) if top > 0 else 1)


def _compute_legend_label(init: str, study, costs: dict) -> str:
    if init == RANDOM:
        return init_label(init, study)
    if _pretraining_seen(costs, init, "images_seen") is None:
        return f"{init_label(init, study)} (fine-tuning; pre-training not recorded)"
    return f"{init_label(init, study)} (fine-tuning)"


def figure_compute(study, cells, costs: dict, out_dir: Path):
    if not cells:
        return None, captions.NOT_DRAWN["no_run_done"]
    first_other = sorted({other_key(c["other"]) for c in cells})[0]
    group = [c for c in cells if other_key(c["other"]) == first_other]
    largest = max(group, key=lambda c: size_sort_key(c["train_size"], c["train_images"]))
    size, images = largest["train_size"], largest["train_images"]
    group = [c for c in group if c["train_size"] == size]
    factors = {c["schedule"]: c["schedule_factor"] for c in group}
    schedules = sorted(factors, key=factors.get)
    inits = [i for i in inits_in_order(study) if any(c["init"] == i for c in group)]
    quantities = [("images_seen", "images seen"), ("instances_seen", "instances seen"), ("pixels_seen", "pixels seen")]

    fig = Figure(figsize=(10.5, 3.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, (key, label) in zip(axes, quantities):
        _compute_panel(ax, study, costs, group, schedules, inits, key)
        ax.set_xticks(range(len(schedules)))
        ax.set_xticklabels(schedules)
        ax.set_xlabel("fine-tuning / training schedule")
        ax.set_ylabel(label)
        ax.yaxis.set_major_formatter(EngFormatter(sep=""))
        ax.grid(axis="x", visible=False)
        ax.set_title(label[0].upper() + label[1:])

    handles = [Patch(color=init_color(i, study.sources), label=_compute_legend_label(i, study, costs)) for i in inits]
    if any(_pretraining_seen(costs, i, "images_seen") is not None for i in inits):
        handles.append(Patch(facecolor="0.8", edgecolor="0.4", hatch="///", label="pre-training"))
    fig.legend(handles=handles, loc="outside upper center", ncols=legend_columns(fig, handles), frameon=False)
    return _drawn(fig, out_dir, "compute", captions.caption_compute(words.size_label(size, images)))


# ---------------------------------------------------------------------------------------------
# 5. Training loss vs validation AP on the smallest training set (overfitting)
# ---------------------------------------------------------------------------------------------


def figure_overfitting(study, out_dir: Path):
    runs = [r for r in study.runs if r.state in ("done", "running") and r.evals and r.trains]
    if not runs:
        return None, captions.NOT_DRAWN["no_train_and_eval"]
    groups = {}
    for run in runs:
        groups.setdefault(run.other_key, []).append(run)
    keys = sorted(groups)
    inits = inits_in_order(study)
    sources = study.sources
    ncols = len(keys)
    fig = Figure(figsize=(6.4 if ncols == 1 else 4.2 * ncols + 0.3, 4.6), dpi=DPI, layout="constrained")
    grid = fig.subplots(2, ncols, squeeze=False, sharex="col")
    for col, group_key in enumerate(keys):
        members = groups[group_key]
        smallest = min(size_sort_key(r.train_size, r.train_images) for r in members)
        members = [r for r in members if size_sort_key(r.train_size, r.train_images) == smallest]
        loss_ax, ap_ax = grid[0][col], grid[1][col]
        drops = set()
        for init in inits:
            mine = [r for r in members if r.init == init]
            if not mine:
                continue
            longest = max(r.schedule_factor for r in mine)
            mine = [r for r in mine if r.schedule_factor == longest]
            drops.update(d for r in mine for d in r.drops)
            color = init_color(init, sources)
            iters, loss, *_ = mean_curve(mine, "loss", rows="trains")
            # the logged loss is per-iteration noisy: average over ~2% of the curve to show the trend
            smooth = moving_average(loss, max(1, len(loss) // 50))
            loss_ax.plot(iters, smooth, color=color, lw=1.5, label=f"{init_label(init, study)}, {mine[0].schedule}")
            iters, ap, lows, highs, counts = mean_curve(mine, PRIMARY)
            ap_ax.plot(iters, ap, color=color, lw=1.5)
            if max(counts) > 1:
                ap_ax.fill_between(iters, lows, highs, color=color, alpha=0.18, lw=0)
            best = max(range(len(ap)), key=lambda i: ap[i])
            ap_ax.plot([iters[best]], [ap[best]], marker="*", ms=10, color=color, mec="white", mew=0.6, zorder=4)
        for ax in (loss_ax, ap_ax):
            for d in sorted(drops):
                ax.axvline(d, color=DROP_COLOR, ls=":", lw=0.9, zorder=1)
        title = words.size_label(members[0].train_size, members[0].train_images)
        label = words.other_label(json.loads(group_key))
        loss_ax.set_title(f"Smallest training set: {title}" + (f"\n{label}" if label else ""))
        loss_ax.set_ylabel("training loss (smoothed)")
        ap_ax.set_ylabel(f"validation {AP_LABEL}")
        ap_ax.set_xlabel("iterations")
        ap_ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        loss_ax.legend(frameon=False)
    handles = [Line2D([], [], marker="*", ls="", color="0.3", ms=9, label="best AP"),
               Line2D([], [], color=DROP_COLOR, ls=":", label="LR drop")]
    fig.legend(handles=handles, loc="outside upper center", ncols=2, frameon=False)
    return _drawn(fig, out_dir, "overfitting", captions.caption_overfitting())


def write_figures(study, summary: dict, out_dir) -> tuple:
    """Draw every figure the study's data allows into out_dir.

    Returns (figures, skipped): figures is a list of {name, title, caption, png, svg} in report order;
    skipped lists {name, reason} for figures the data does not support yet. Figure files from an
    earlier report that are not drawn this time are removed so the folder matches the report.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = summary["cells"]
    made, skipped = [], []
    with matplotlib.rc_context(STYLE):
        for name, draw in (
            ("ap_vs_iterations", lambda: figure_ap_vs_iterations(study, out_dir)),
            ("speedup", lambda: figure_speedup(study, summary, out_dir)),
            ("ap_vs_schedule", lambda: figure_ap_vs_schedule(study, cells, out_dir)),
            ("ap_vs_train_size", lambda: figure_ap_vs_size(study, cells, summary, out_dir)),
            ("compute", lambda: figure_compute(study, cells, summary["pretraining_cost"], out_dir)),
            ("overfitting", lambda: figure_overfitting(study, out_dir)),
            ("forecast", lambda: figure_forecast(study, summary.get("forecast"), out_dir)),
        ):
            figure, reason = draw()
            if figure is None:
                skipped.append({"name": name, "reason": reason})
            else:
                made.append(figure)
    keep = {f["png"].name for f in made} | {f["svg"].name for f in made}
    for path in list(out_dir.glob("*.png")) + list(out_dir.glob("*.svg")):
        if path.name not in keep:
            path.unlink()
    return made, skipped


# ---------------------------------------------------------------------------------------------
# 6. The forecast: final AP per schedule, measured and forecast (forecast_figure.py draws it)
# ---------------------------------------------------------------------------------------------


def figure_forecast(study, forecast: dict, out_dir: Path):
    if not forecast or not forecast.get("cells"):
        return None, (forecast or {}).get("not_available") or "no forecast"
    fig = draw_forecast(study, forecast)
    return _drawn(fig, out_dir, "forecast", captions.caption_forecast(forecast["interval"]))
