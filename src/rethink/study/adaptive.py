"""`rethink study --adaptive`: run the trunks in segments, forecast after each, stop what is already settled.

A study's cost is its trunks (the longest schedule of each arm; shorter schedules fork from them). The adaptive
study runs every trunk to a share of its iterations (SEGMENTS), forecasts every cell from the curves so far
(study/forecast.py), and decides per training-set size (and `other` group):

- settled, random within: random init's 80% forecast interval at the longest schedule lies wholly at or above
  pretrained's best schedule's interval minus the margin, for every pretrained source;
- settled, random behind: random's interval lies wholly below pretrained's best's interval minus the margin;
- otherwise the trunks of that size go on to the next segment, and at the last to the end.

An arm with no plateau in sight (fits whose asymptote sits at its bound carry more than 1 - INTERVAL of its
Akaike weight: forecast.plateau_in_sight) has a forecast set by the bound, not by its curve. Its cells then count
as anywhere from the arm's latest level to AP_MAX, so a size settles on such an arm only when the verdict holds
whatever its plateau. On the one-seed demo this kept the 100-image size from settling "within" at 50% on a random
curve still rising steeply (its forecast [27.4, 41.8], measured 20.9; benchmarks/README.md, "Adaptive study").

The trunks of a settled size stop where they are (their checkpoint stays, so the same study without --adaptive
would finish them); each gets `settled.json` with the forecast its report uses in place of a measured final AP,
and the decision goes to `adaptive.json` and study.json. Forks run whole as soon as their fork point exists: they
are short, and their finals teach the forecast the LR-drop jumps. A size whose trunks are done is not decided.

The same command resumes: decisions already written are kept, finished segments are not run again (each run
resumes from its checkpoint), and with deterministic runs a killed and restarted adaptive study ends as an
uninterrupted one.
"""

import math
from pathlib import Path

from rethink import schedule as sched
from rethink.engine import checkpoint as ckpt
from rethink.errors import UserError
from rethink.fileio import atomic_write_json, read_json
from rethink.study import store
from rethink.study.forecast import AP_MAX, forecast_study
from rethink.study.plan import other_key
from rethink.study.results import load_results
from rethink.study.run import run_local

SEGMENTS = (0.3, 0.4, 0.5, 0.6, 0.8)  # shares of each trunk's iterations after which the study forecasts
DECISIONS = "adaptive.json"
SETTLED = "settled.json"


def segment_stop(iters: int, share: float, eval_period: int) -> int:
    """The iteration a trunk stops at for `share`: the first evaluation at or after share * iters (the forecast
    needs an evaluation there), the end if there is none before it."""
    target = math.ceil(share * iters)
    if eval_period <= 0:
        return iters
    return min(iters, math.ceil(target / eval_period) * eval_period)


def settle(forecast: dict, margin: float) -> list[dict]:
    """The sizes whose catch-up verdict the forecast already settles (module docstring), as decisions.

    Returns [{"train_size", "other", "verdict": "within" | "behind", "schedule_longest", "random": [lo, hi],
    "pretrained_best": {source: {"schedule", "interval": [lo, hi]}}}], one per settled (train_size, other).
    Cells without a forecast (too few evaluations) settle nothing.
    """
    groups: dict[tuple, dict] = {}
    for cell in forecast["cells"]:
        key = (str(cell["train_size"]), repr(sorted((cell.get("other") or {}).items())))
        g = groups.setdefault(key, {"train_size": cell["train_size"], "other": cell.get("other") or {},
                                    "cells": []})
        g["cells"].append(cell)
    arms = {_arm_key(a): a for a in forecast.get("arms", [])}
    decisions = []
    for g in groups.values():
        planned = [c for c in g["cells"] if c.get("planned")]
        if not planned:
            continue
        longest = max(planned, key=lambda c: c["iters"])
        random_cell = next((c for c in planned if c["init"] == "random" and c["iters"] == longest["iters"]), None)
        sources = sorted({c["init"] for c in planned} - {"random"})
        random_iv = _interval(random_cell, arms)
        if random_iv is None or not sources:
            continue
        verdicts, best = set(), {}
        for source in sources:
            cells = [(c, _interval(c, arms)) for c in planned if c["init"] == source]
            if any(iv is None for _, iv in cells):
                verdicts.add(None)
                continue
            cell, iv = max(cells, key=lambda ci: _point(ci[0]))
            best[source] = {"schedule": cell["schedule"], "interval": iv}
            if random_iv[0] >= iv[1] - margin:
                verdicts.add("within")
            elif random_iv[1] < iv[0] - margin:
                verdicts.add("behind")
            else:
                verdicts.add(None)
        if len(verdicts) == 1 and None not in verdicts:
            decisions.append({"train_size": g["train_size"], "other": g["other"], "verdict": verdicts.pop(),
                              "schedule_longest": longest["schedule"], "random": random_iv,
                              "pretrained_best": best})
    return decisions


def _arm_key(d: dict) -> tuple:
    """(init, train_size, other) of a forecast cell or arm."""
    return (d["init"], str(d["train_size"]), repr(sorted((d.get("other") or {}).items())))


def _interval(cell, arms: dict) -> list | None:
    """[lo, hi] of a cell: its observed final AP when every seed is done (a known value), else its forecast, or
    [latest level, AP_MAX] when its arm has no plateau in sight (module docstring)."""
    if cell is None:
        return None
    if cell.get("observed_final_ap") is not None:
        return [cell["observed_final_ap"], cell["observed_final_ap"]]
    if not cell.get("interval"):
        return None
    arm = arms.get(_arm_key(cell))
    if arm is not None and not arm["plateau_in_sight"] and arm["level_at_last_iter"] is not None:
        return [min(arm["level_at_last_iter"], cell["interval"][0]), AP_MAX]
    return list(cell["interval"])


def _point(cell) -> float:
    if cell.get("observed_final_ap") is not None:
        return cell["observed_final_ap"]
    return cell["predicted_final_ap"] if cell.get("predicted_final_ap") is not None else -math.inf


def _group_of(spec) -> tuple:
    return (str(spec.train_size), other_key(spec.other))


def run_adaptive(plan, study_dir: Path, jobs: int, progress: bool = True) -> dict:
    """Run `plan` adaptively in `study_dir` (module docstring); returns {name: error} as run_local does."""
    study_dir = Path(study_dir)
    state = read_json(study_dir / DECISIONS) if (study_dir / DECISIONS).exists() else {"decisions": []}
    settled = {_group_of_decision(d) for d in state["decisions"]}
    errors: dict[str, str] = {}
    for share in SEGMENTS + (1.0,):
        stops = {}
        for spec in plan.runs:
            if spec.trunk is None and _group_of(spec) not in settled:
                stops[spec.name] = segment_stop(spec.iters, share, spec.config.eval_period)
        active = {s.name for s in plan.runs if _runnable(s, study_dir, stops, settled)}
        errors.update(run_local(plan, study_dir, jobs, progress=progress, only=active,
                                stop_at={n: it for n, it in stops.items() if share < 1.0}))
        if share == 1.0 or errors:
            break
        open_groups = {_group_of(s) for s in plan.runs if s.trunk is None and _group_of(s) not in settled
                       and store.state_of(study_dir, s.name) != "done"}
        if not open_groups:
            break
        try:
            forecast = forecast_study(load_results(study_dir))
        except UserError as e:  # too few evaluations yet: go on to the next segment
            if progress:
                print(f"[adaptive] {share:.0%}: no forecast yet ({e})", flush=True)
            continue
        _mark_planned(forecast, plan)
        for decision in settle(forecast, plan.margin_ap):
            group = _group_of_decision(decision)
            if group not in open_groups:
                continue
            # its trunks stop here; forks that cannot start any more (fork point not reached) are skipped
            stopped = {s.name: stops.get(s.name) for s in plan.runs if _group_of(s) == group
                       and store.state_of(study_dir, s.name) != "done"
                       and (s.trunk is None or not _runnable(s, study_dir, {}, set()))}
            decision.update(share=share, stopped=stopped)
            state["decisions"].append(decision)
            settled.add(group)
            _write_settled(plan, study_dir, decision, forecast)
            if progress:
                print(f"[adaptive] {share:.0%}: train_size {decision['train_size']} settled, random "
                      f"{decision['verdict']} the margin; its trunks stop", flush=True)
        atomic_write_json(study_dir / DECISIONS, state)
    atomic_write_json(study_dir / DECISIONS, state)
    return errors


def _runnable(spec, study_dir: Path, stops: dict, settled: set) -> bool:
    """Whether a run is trained in this segment: an unsettled trunk (to its stop), or a fork whose fork point
    exists or is reached in this segment (it then runs whole)."""
    if spec.trunk is None:
        return _group_of(spec) not in settled
    if store.fork_checkpoint(study_dir, spec).exists():
        return True
    if store.state_of(study_dir, spec.trunk) == "done":
        return True  # its fork point was not kept: run_local trains it whole
    return stops.get(spec.trunk, -1) >= spec.fork_iter


def _spec(plan, name: str):
    return next(s for s in plan.runs if s.name == name)


def _group_of_decision(d: dict) -> tuple:
    return (str(d["train_size"]), other_key(d.get("other") or {}))


def _mark_planned(forecast: dict, plan) -> None:
    """Flag the forecast's cells that are schedules of the plan (the forecast adds longer ones)."""
    planned = {(s.init_label, str(s.train_size), sched.format_schedule(s.factor)) for s in plan.runs}
    for cell in forecast["cells"]:
        cell["planned"] = (cell["init"], str(cell["train_size"]), cell["schedule"]) in planned


def _write_settled(plan, study_dir: Path, decision: dict, forecast: dict) -> None:
    """settled.json in each stopped trunk and skipped fork: the forecast of its final AP, which the report uses,
    and why."""
    cells = {(c["init"], str(c["train_size"]), c["schedule"]): c for c in forecast["cells"]}
    for name in decision["stopped"]:
        spec = _spec(plan, name)
        cell = cells.get((spec.init_label, str(spec.train_size), sched.format_schedule(spec.factor)))
        run_dir = store.run_dir(study_dir, name)
        run_dir.mkdir(parents=True, exist_ok=True)  # a skipped fork may never have started
        last = ckpt.latest(run_dir)
        atomic_write_json(run_dir / SETTLED, {
            "status": "settled", "stopped_at_iter": last[0] if last else None, "share": decision["share"],
            "skipped": spec.trunk is not None,
            "verdict": decision["verdict"], "predicted_final_ap": cell["predicted_final_ap"] if cell else None,
            "interval": cell["interval"] if cell else None,
            "reason": (f"train_size {decision['train_size']}: random's forecast {_fmt(decision['random'])} at "
                       f"{decision['schedule_longest']} is {decision['verdict']} the {plan.margin_ap:g} AP margin of "
                       "pretrained's best (" + ", ".join(f"{s} {b['schedule']} {_fmt(b['interval'])}"
                                                       for s, b in decision["pretrained_best"].items()) + ")"),
        })


def _fmt(interval) -> str:
    return f"[{interval[0]:.1f}, {interval[1]:.1f}]"
