"""Words for the report's forecast section: when random init is forecast to catch up, how far the forecast can be
trusted on this study's own curves, and the table of the schedules that matter.

Like words.py, everything here reads summary["forecast"] (report/forecasts.py computes it) and returns strings.
"""

from rethink.report.words import fmt_ap, fmt_int, other_label, size_label
from rethink.study.plan import other_key
from rethink.study.results import RANDOM


def _images_of(summary: dict, train_size, other: dict):
    """The number of images of a training set, from its cells or, while none is done, from its runs."""
    for entry in summary.get("cells", []) + summary.get("runs", []):
        if entry["train_size"] == train_size and entry["other"] == other and entry.get("train_images") is not None:
            return entry["train_images"]
    return None


def _where(summary: dict, train_size, other: dict) -> str:
    where = size_label(train_size, _images_of(summary, train_size, other))
    return where + (f" ({other_label(other)})" if other else "")


def _catch_up_sentence(summary: dict, c: dict) -> str:
    where = f"{_where(summary, c['train_size'], c['other'])}, against {c['init']}"
    if c.get("note") and c["schedule"] is None and c.get("probability") is None:
        return f"{where}: {c['note']}."
    if c["schedule"] is None:
        return (f"{where}: random init is not forecast to catch up by {c['horizon']}, the longest schedule forecast "
                f"(probability {c['probability']:.0%} that it does).")
    return (f"{where}: random init is forecast to catch up at {c['schedule']} ({fmt_int(c['iters'])} iterations; "
            f"probability {c['probability']:.0%}).")


def forecast_sentences(summary: dict) -> list:
    """The section's paragraphs: what is forecast, one sentence per training-set size on when random init catches
    up, how far to trust it, and the arms whose curve cannot bound its plateau yet."""
    forecast = summary.get("forecast") or {}
    if "not_available" in forecast:
        return [f"No forecast: {forecast['not_available']}."]
    pct = int(round(forecast["interval"] * 100))
    out = [f"From the curves so far, `rethink forecast` predicts each arm's final box AP at the schedules tried and "
           f"longer ones, with {pct}% intervals; catching up means random init within the "
           f"{forecast['margin_ap']:.1f} AP margin of the pretrained arm's best. The figure below draws every "
           "schedule forecast; the table lists the ones that matter at each size (those tried, the catch-up and "
           f"the horizon, the longest forecast), measured values plain and forecasts with their {pct}% interval in "
           "brackets; summary.json holds every schedule (forecast.cells)."]
    out += [_catch_up_sentence(summary, c) for c in forecast["catch_up"]]
    trust = backtest_sentence(forecast)
    if trust:
        out.append(trust)
    for arm in forecast.get("arms", []):
        if arm.get("fits") and arm.get("plateau_in_sight") is False:
            where = _where(summary, arm["train_size"], arm["other"])
            out.append(f"{arm['init']} on {where}: no plateau in sight yet (fits with the asymptote at the 100 AP "
                       f"bound carry over {100 - pct}% of its weight), so its forecasts are set by that bound, not "
                       "by the curve; train further before relying on them.")
    return out


# ---------------------------------------------------------------------------------------------
# How far to trust it: the backtest of the study's own curves
# ---------------------------------------------------------------------------------------------


def _cut_clause(cut: dict, pct: int, full: bool, first: bool) -> str:
    where = f"cut at {cut['fraction']:.0%}" + (" of each training-set size's longest schedule" if first else "")
    if cut["refused_why"]:
        return f"{where}, no forecast could be made ({cut['refused_why']})"
    if not cut["cells"]:
        return f"{where}, no cell has finished since"
    if not cut["forecast"]:
        return f"{where}, none of the {cut['cells']} cells finished since got a forecast"
    missed = cut["cells"] - cut["forecast"]
    extra = f" ({missed} more finished cell{'s' if missed != 1 else ''} got no forecast)" if missed else ""
    mean, top, width = (fmt_ap(cut[k]) for k in ("mean_abs_error", "max_abs_error", "mean_width"))
    if full:
        return (f"{where}, the forecast was off by {mean} AP on average (max {top}) and its {pct}% intervals, "
                f"{width} AP wide on average, held {cut['covered']} of {cut['forecast']} finished cells{extra}")
    return f"{where}: off by {mean} AP (max {top}), {cut['covered']} of {cut['forecast']} held, {width} AP wide{extra}"


def backtest_sentence(forecast: dict) -> str | None:
    """One sentence: the forecast's error, interval coverage and width when the study's own curves are cut
    earlier (latest cut first), or why that cannot be measured yet. None for a summary without the backtest."""
    backtest = forecast.get("own_backtest")
    if backtest is None:
        return None
    pct = int(round(backtest["interval"] * 100))
    first = backtest["fractions"][0]
    if not backtest["cuts"]:
        listed = ", ".join(f"{f:.0%}" for f in backtest["fractions"])
        return (f"How far to trust it is not measured yet: the forecast is checked on this study's own curves cut "
                f"at {listed} of each training-set size's longest schedule, and no size has passed {first:.0%}.")
    cuts = sorted(backtest["cuts"], key=lambda c: -c["fraction"])
    scored = [c for c in cuts if c["forecast"]]
    clauses = [_cut_clause(c, pct, full=bool(scored) and c is scored[0], first=c is cuts[0]) for c in cuts]
    if not scored:
        return "How far to trust it is not measured yet on this study's own curves: " + "; ".join(clauses) + "."
    return "How far to trust it, on this study's own curves: " + "; ".join(clauses) + "."


# ---------------------------------------------------------------------------------------------
# The table of the schedules that matter
# ---------------------------------------------------------------------------------------------


def _ap_text(cell: dict | None) -> str:
    if cell is None:
        return "-"
    if cell["observed_final_ap"] is not None:
        return fmt_ap(cell["observed_final_ap"])
    if cell["predicted_final_ap"] is None:
        return "-"
    lo, hi = cell["interval"]
    return f"{fmt_ap(cell['predicted_final_ap'])} [{fmt_ap(lo)}, {fmt_ap(hi)}]"


def _listed_as(key: dict, several_sources: bool) -> str:
    parts = ["tried"] if key["tried"] else []
    for source in key["catch_up"]:
        parts.append(f"catch-up vs {source}" if several_sources else "catch-up")
    if key["horizon"]:
        parts.append("horizon")
    return ", ".join(parts)


def forecast_rows(summary: dict) -> tuple:
    """(headers, rows, left-aligned columns) of the schedules that matter at each training-set size: each arm's
    final box AP there, measured or forecast."""
    forecast = summary.get("forecast") or {}
    inits = [RANDOM] + [s for s in summary.get("sources", []) if s != RANDOM]
    labels = summary.get("source_labels") or {}
    headers = (["training set", "schedule", "iterations"]
               + ["random init" if i == RANDOM else labels.get(i, i) for i in inits] + ["listed as"])
    cells = {(c["init"], c["train_size"], other_key(c["other"]), c["schedule"]): c
             for c in forecast.get("cells", [])}
    rows = []
    for key in forecast.get("key_schedules", []):
        group = (key["train_size"], other_key(key["other"]), key["schedule"])
        rows.append([_where(summary, key["train_size"], key["other"]), key["schedule"], fmt_int(key["iters"])]
                    + [_ap_text(cells.get((init,) + group)) for init in inits]
                    + [_listed_as(key, len(inits) > 2)])
    return headers, rows, {0, 1, len(headers) - 1}
