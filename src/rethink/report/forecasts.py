"""The numbers of the report's forecast section: `rethink forecast` on the curves so far, the schedules that
matter at each training-set size (the ones tried, the catch-up, the horizon), and how the forecast did on the
study's own earlier cuts. Computed once when the report is built and kept in summary.json["forecast"]; the
words and the figure read them from there.
"""

from rethink import schedule as sched
from rethink.errors import UserError
from rethink.study.backtest import own_backtest
from rethink.study.forecast import forecast_study
from rethink.study.plan import other_key


def _factor(schedule: str) -> float:
    return round(sched.parse_schedule(schedule), 6)


def key_schedules(study, result: dict) -> list:
    """Per group (train_size, other), the schedules a reader needs, in the forecast's order of groups:
    [{"train_size", "other", "schedule", "iters", "tried", "catch_up": [sources caught up with here],
    "horizon"}]. Tried: the study runs it (done or not); horizon: the longest schedule forecast."""
    tried = {}
    for run in study.runs:
        tried.setdefault((run.train_size, run.other_key), set()).add(round(run.schedule_factor, 6))
    catch = {}
    for entry in result["catch_up"]:
        if entry["schedule"] is not None:
            key = (entry["train_size"], other_key(entry["other"]), _factor(entry["schedule"]))
            catch.setdefault(key, []).append(entry["init"])
    groups = {}
    for cell in result["cells"]:
        groups.setdefault((cell["train_size"], other_key(cell["other"])), {})[_factor(cell["schedule"])] = cell
    out = []
    for (size, other), cells in groups.items():
        horizon = max(cells)
        for factor in sorted(cells):
            caught = catch.get((size, other, factor), [])
            if factor in tried.get((size, other), set()) or caught or factor == horizon:
                cell = cells[factor]
                out.append({"train_size": size, "other": cell["other"], "schedule": cell["schedule"],
                            "iters": cell["iters"], "tried": factor in tried.get((size, other), set()),
                            "catch_up": caught, "horizon": factor == horizon})
    return out


def study_forecast(study) -> dict:
    """The forecast section's data: the forecast, its key schedules and its own backtest, or why there is none."""
    try:
        result = forecast_study(study)
    except UserError as exc:
        return {"not_available": str(exc)}
    out = {k: result[k] for k in ("interval", "margin_ap", "iters_1x", "cells", "catch_up", "arms")}
    out["key_schedules"] = key_schedules(study, result)
    out["own_backtest"] = own_backtest(study)
    return out
