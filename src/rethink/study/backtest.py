"""How far the forecast can be trusted: backtests that cut a study where its runs had been earlier, forecast from
there, and compare with what came out.

A cut is a fraction of each group's (train_size, other) longest planned run: 30%, 40%, 60% or 80% of its
iterations. Forks run beside their trunk, so at a cut of c iterations a run of T <= c iterations is done and a
longer one has its evaluations up to c (`forecast.truncate_study`). A cut is made only where the study has gone
past it, so the same code serves a finished study and one in progress. Every cell that is done now but was not
done at the cut is scored: the forecast's error (forecast - measured) and whether the measured value lies inside
its 80% interval. The catch-up forecast at the cut is compared with the study's own verdict at its longest
schedule (random within the margin of pretrained's best final AP over the schedules).

benchmarks/bench_forecast.py runs these backtests on planted and real studies; the report runs `own_backtest` on
the study it reports. Everything here returns plain data.
"""

import json

import numpy as np

from rethink import schedule as sched
from rethink.errors import UserError
from rethink.study.forecast import INTERVAL, forecast_study, truncate_study
from rethink.study.results import PRIMARY, RANDOM

FRACTIONS = (0.3, 0.4, 0.6, 0.8)
# The report's own backtest forecasts the study once more per cut. It uses 100 bootstrap replicates, not the
# forecast's 300, for time: on the one-seed demo (2026-12-06, two cores) the four cuts took 52 s at 300 and 18 s
# at 100, and the two gave the same errors within 0.5 AP and the same covered counts within one cell at each cut
# but the 30% one (two cells with intervals 34 AP wide: mean error 2.5 vs 3.9 AP).
OWN_N_BOOT = 100


def measured_cells(study) -> dict:
    """(init, train_size, other_key, factor) -> mean final AP over seeds, for cells whose every run is done and
    measured (a run an adaptive study settled holds a forecast, not a measurement)."""
    groups = {}
    for run in study.runs:
        groups.setdefault((run.init, run.train_size, run.other_key, run.schedule_factor), []).append(run)
    out = {}
    for key, runs in groups.items():
        if all(r.state == "done" and r.settled is None for r in runs):
            out[key] = float(np.mean([r.final["final"][PRIMARY] for r in runs]))
    return out


def study_verdicts(study, measured: dict) -> dict:
    """(train_size, other_key, source) -> random within the margin of pretrained's best at the longest schedule."""
    out = {}
    for (init, size, other, factor) in measured:
        if init == RANDOM:
            continue
        factors = sorted(f for (i, s, o, f) in measured if (i, s, o) == (init, size, other))
        longest = factors[-1]
        if (RANDOM, size, other, longest) not in measured:
            continue
        best = max(measured[(init, size, other, f)] for f in factors)
        out[(size, other, init)] = measured[(RANDOM, size, other, longest)] >= best - study.margin_ap
    return out


def longest_planned(study) -> dict:
    """(train_size, other_key) -> iterations of the group's longest planned run."""
    out = {}
    for run in study.runs:
        key = (run.train_size, run.other_key)
        out[key] = max(out.get(key, 0), run.iters or 0)
    return out


def progress(study) -> dict:
    """(train_size, other_key) -> how far the group's runs have come: the latest iteration any of them has
    evaluated, or finished."""
    out = {}
    for run in study.runs:
        key = (run.train_size, run.other_key)
        done = run.iters if run.state == "done" and run.settled is None and run.iters else 0
        latest = max([row["iter"] for row in run.evals] + [done])
        out[key] = max(out.get(key, 0), latest)
    return out


def cut_iters(study, fraction: float) -> dict:
    """(train_size, other_key) -> the cut's iteration, fraction of the group's longest planned run, for the groups
    whose runs have gone past it (empty: the study has not reached this cut anywhere)."""
    now = progress(study)
    cuts = {key: int(fraction * total) for key, total in longest_planned(study).items()}
    return {key: cut for key, cut in cuts.items() if cut < now.get(key, 0)}


def _cell_rows(result: dict, measured: dict, still: dict, top: dict, label: str, fraction: float) -> list:
    """One row per cell measured now but not at the cut: the forecast at the cut against what came out."""
    rows = []
    for c in result["cells"]:
        other = json.dumps(c["other"], sort_keys=True)
        factor = sched.parse_schedule(c["schedule"])
        key = (c["init"], c["train_size"], other, factor)
        if key not in measured or key in still:
            continue  # not measured now, or already known at the cut
        row = {"study": label, "fraction": fraction, "init": c["init"], "train_size": c["train_size"],
               "other": c["other"], "schedule": c["schedule"], "longest": factor == top[(c["train_size"], other)],
               "measured": measured[key], "predicted": c["predicted_final_ap"], "interval": c["interval"],
               "note": c["note"]}
        if c["predicted_final_ap"] is not None:
            row["error"] = c["predicted_final_ap"] - measured[key]
            row["covered"] = c["interval"][0] <= measured[key] <= c["interval"][1]
        rows.append(row)
    return rows


def _catch_up_rows(result: dict, verdicts: dict, top: dict, label: str, fraction: float) -> list:
    """One row per size with a verdict now: whether the catch-up forecast at the cut said the same."""
    rows = []
    for entry in result["catch_up"]:
        other = json.dumps(entry["other"], sort_keys=True)
        truth = verdicts.get((entry["train_size"], other, entry["init"]))
        if truth is None or entry["probability"] is None:
            continue
        longest = top[(entry["train_size"], other)]
        said = entry["schedule"] is not None and sched.parse_schedule(entry["schedule"]) <= longest
        rows.append({"study": label, "fraction": fraction, "catch_up": True, "train_size": entry["train_size"],
                     "agrees": said == truth, "forecast": entry["schedule"], "measured_holds": truth})
    return rows


def backtest(study, label: str, n_boot: int) -> list:
    """Rows of every cut the study has gone past: a scored cell, a catch-up check, or the forecast's refusal
    ({"study", "fraction", "error": why})."""
    measured = measured_cells(study)
    verdicts = study_verdicts(study, measured)
    top = {}
    for run in study.runs:
        key = (run.train_size, run.other_key)
        top[key] = max(top.get(key, 0.0), run.schedule_factor)
    rows = []
    for fraction in FRACTIONS:
        cut = cut_iters(study, fraction)
        if not cut:
            continue
        truncated = truncate_study(study, cut)
        still = measured_cells(truncated)
        if not set(measured) - set(still):
            continue  # nothing has finished since the cut: nothing to score
        try:
            result = forecast_study(truncated, n_boot=n_boot)
        except UserError as exc:
            rows.append({"study": label, "fraction": fraction, "error": str(exc)})
            continue
        rows += _cell_rows(result, measured, still, top, label, fraction)
        rows += _catch_up_rows(result, verdicts, top, label, fraction)
    return rows


def summarize(rows: list, source: str, fraction: float, longest_only: bool) -> dict:
    cells = [r for r in rows if r.get("source") == source and r["fraction"] == fraction and "catch_up" not in r
             and "init" in r and (r["longest"] or not longest_only)]
    scored = [r for r in cells if "error" in r]
    errors = [abs(r["error"]) for r in scored]
    verdicts = [r for r in rows if r.get("source") == source and r["fraction"] == fraction and r.get("catch_up")]
    failed = [r for r in rows if r.get("source") == source and r["fraction"] == fraction and "init" not in r
              and not r.get("catch_up")]
    return {"source": source, "fraction": fraction, "cells": len(cells), "forecast": len(scored),
            "mean_abs_error": float(np.mean(errors)) if errors else None,
            "p90_abs_error": float(np.quantile(errors, 0.9)) if errors else None,
            "max_abs_error": max(errors) if errors else None,
            "coverage": float(np.mean([r["covered"] for r in scored])) if scored else None,
            "covered": int(sum(r["covered"] for r in scored)),
            "mean_width": float(np.mean([r["interval"][1] - r["interval"][0] for r in scored])) if scored else None,
            "catch_up_agrees": f"{sum(r['agrees'] for r in verdicts)}/{len(verdicts)}",
            "refused": len(failed)}


def own_backtest(study, n_boot: int = OWN_N_BOOT) -> dict:
    """The backtest of the study's own curves, for its report: one entry per cut the study has gone past.

    Returns {"interval", "fractions", "n_boot", "cuts": [{"fraction", "cut_iters":
    [{"train_size", "other", "iters"}], "cells", "forecast", "mean_abs_error", "max_abs_error", "coverage",
    "covered", "mean_width", "refused_why", "scored": [{"init", "train_size", "other", "schedule", "measured",
    "predicted", "interval", "error", "covered"}]}]}. "cells" counts the cells done since the cut, "forecast"
    those the forecast gave a number; "refused_why" says why the forecast refused the cut, else None.
    """
    rows = [{**r, "source": "own"} for r in backtest(study, "own", n_boot)]
    cuts = []
    for fraction in FRACTIONS:
        cut = cut_iters(study, fraction)
        if not cut:
            continue
        entry = summarize(rows, "own", fraction, longest_only=False)
        refusal = next((r["error"] for r in rows if r["fraction"] == fraction and "init" not in r
                        and not r.get("catch_up")), None)
        entry.update(
            cut_iters=[{"train_size": size, "other": json.loads(other), "iters": iters}
                       for (size, other), iters in cut.items()],
            refused_why=None if refusal is None else refusal.removeprefix(f"{study.path}: "),
            scored=[{k: r.get(k) for k in ("init", "train_size", "other", "schedule", "measured", "predicted",
                                           "interval", "error", "covered")}
                    for r in rows if r["fraction"] == fraction and "init" in r])
        for key in ("source", "p90_abs_error", "catch_up_agrees", "refused"):
            entry.pop(key)
        cuts.append(entry)
    return {"interval": INTERVAL, "fractions": list(FRACTIONS), "n_boot": n_boot, "cuts": cuts}
