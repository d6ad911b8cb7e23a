"""`rethink study --adaptive`: run the trunks in segments, forecast after each, stop what is already settled.

A study's cost is its trunks (the longest schedule of each arm; shorter schedules fork from them). The adaptive
study runs every trunk to a share of its iterations (SEGMENTS), forecasts every cell from the curves so far
(study/forecast.py), and decides per training-set size (and `other` group) in two steps.

1. `settle` proposes the sizes whose catch-up verdict the forecast settles:
   - random within: random init's 80% forecast interval at the longest schedule lies wholly at or above
     pretrained's best schedule's interval minus the margin, for every pretrained source;
   - random behind: random's interval lies wholly below pretrained's best's interval minus the margin.
   An arm with no plateau in sight (fits whose asymptote sits at its bound carry more than 1 - INTERVAL of its
   Akaike weight: forecast.plateau_in_sight) has a forecast set by the bound, not by its curve. Its cells then
   count as anywhere from the arm's latest level to AP_MAX. On the one-seed demo this kept the 100-image size from
   settling "within" at 50% on a random curve still rising steeply (its forecast [27.4, 41.8], measured 20.9).

2. `decide` keeps a proposal only if no verdict of the report can tell the stop. The report reads a settled run
   as if measured, so the check reads the study as the report would once the size is settled, with the report's
   own findings (`judge`, passed in by pipeline.py: study/ does not import the report), and compares every
   finding's status, for every pretrained source and `other` group, under substitutions that span the forecast's
   uncertainty (SUBSTITUTIONS): the size's unfinished runs at the forecast, at both ends of their intervals, with
   random at one end and pretrained at the other (both ways), and at the forecast with the seeds' spread halved
   and doubled. The unfinished runs of the sizes that go on will be measured later, at values not known now: the
   statuses must agree for each of their first five substitutions (AROUND). Runs settled earlier keep the values
   their settled.json gives. Catch-up being settled does not make the other findings settled: on the three-seed
   demo the 100-image size's catch-up settled at 80%, and small_data_hurts_random, read on the settled values,
   went from not_enough_evidence to holds (issue 29).
   A finding that reads what a forecast does not give holds the size it reads: localization reads the largest
   size's AP50 and AP75 at its schedule (a measured final), converges_faster the curves of the largest size's
   longest schedule up to their first LR drop. The judge names those runs; one that would stop short of what is
   read holds its size. So the largest size of each `other` group runs to its end; the savings are on the smaller
   sizes. Which runs are read is known before the forecast (`unforecastable`: the unfinished runs read at their
   best AP so far), and a segment where every open size is held that way makes no forecast. Not seen: a settled
   run's best AP along its curve (small_data_hurts_random reads it) is the larger of its best so far and its
   substituted final, so a peak after the stop higher than the final is missed.

A settled run's final AP is its seed's own: the arm's forecast (the median of the interval) plus the seed's
offset, its AP at the latest evaluation every seed of the arm has minus the seeds' mean there. One forecast for
every seed would remove the seed-to-seed spread that the findings' paired t intervals are built from.

The trunks of a settled size stop where they are (their checkpoint stays, so the same study without --adaptive
would finish them); each gets `settled.json` with its forecast, its seed's offset and the final AP the report
uses in place of a measured one (study/results.py `_settled_final`), and the decision goes to `adaptive.json` and
study.json. Forks run whole as soon as their fork point exists: they are short, and their finals teach the
forecast the LR-drop jumps. A size whose trunks are done is not decided.

Measured (benchmarks/README.md, "Adaptive study", 2026-12-06): replayed on the report's fixture, two planted
three-seed studies and three real ones (the one-seed demo, the three-seed demo, a held-out study), every verdict is
the full study's; 0.67 of the iterations on the fixture and on the planted study whose seeds spread little, all of
them on the others. The catch-up-only rule before it trained 0.33 of the fixture's iterations but lost its
localization verdict, and turned the three-seed demo's small_data_hurts_random from not_enough_evidence to holds.

The same command resumes: decisions already written are kept, finished segments are not run again (each run
resumes from its checkpoint), and with deterministic runs a killed and restarted adaptive study ends as an
uninterrupted one.
"""

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from rethink import schedule as sched
from rethink.engine import checkpoint as ckpt
from rethink.errors import UserError
from rethink.fileio import atomic_write_json, read_json
from rethink.study import store
from rethink.study.curves import AP_MAX
from rethink.study.forecast import forecast_study
from rethink.study.plan import other_key
from rethink.study.results import PRIMARY, RANDOM, StudyResults, _settled_final, load_results
from rethink.study.run import run_local

SEGMENTS = (0.3, 0.4, 0.5, 0.6, 0.8)  # shares of each trunk's iterations after which the study forecasts
DECISIONS = "adaptive.json"
SETTLED = "settled.json"

# judge(study) -> {"statuses": {finding name: status}, "needs": [{"finding", "run", "until_iter"}]}: every verdict
# the report draws from `study`, and the runs its findings read beyond a final box AP, to which iteration (None:
# a measured final). pipeline.report_judge is the product's.
Judge = Callable[[StudyResults], dict]


@dataclass(frozen=True)
class Substitution:
    """One reading of unfinished runs: each arm's cells at the "low" or "high" end of their forecast interval, or
    at the forecast ("mid"), and each seed's offset from the arm's mean scaled by `spread`."""

    name: str
    random: str
    pretrained: str
    spread: float = 1.0


# the runs of the sizes that go on: what they will measure is anywhere in their intervals
AROUND = (
    Substitution("at the forecast", "mid", "mid"),
    Substitution("all low", "low", "low"),
    Substitution("all high", "high", "high"),
    Substitution("random low, pretrained high", "low", "high"),
    Substitution("random high, pretrained low", "high", "low"),
)
# the runs a decision stops: also their seeds' spread, measured at the stop on one evaluation per seed and so
# known only roughly for the end of training
SUBSTITUTIONS = AROUND + (
    Substitution("the seeds' spread halved", "mid", "mid", 0.5),
    Substitution("the seeds' spread doubled", "mid", "mid", 2.0),
)


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


def decide(study: StudyResults, forecast: dict, margin: float, judge: Judge) -> tuple[list, list]:
    """settle()'s proposals that change no verdict of the report (module docstring), in settle()'s order.

    `study` is the study as it stands (runs settled earlier read as settled); `forecast` is forecast_study's of it.
    Returns (decisions, held): decisions are settle()'s dicts with "finals": {run name: the forecast part of its
    settled.json} for each unfinished run of the size; held are {"train_size", "other", "verdict", "reason"}.
    A decision taken here is read at its settled values when the next proposal is checked.
    """
    _mark_planned(forecast, study)
    unfinished = [r for r in study.runs if r.state not in ("done", "failed")]
    infos, bounds = _forecast_finals(study, forecast, unfinished)
    fixed: dict = {}  # run name -> settled values of the sizes decided in this call
    decisions, held = [], []
    for proposal in settle(forecast, margin):
        group = _group_of_decision(proposal)
        stopped = [r for r in unfinished if _group_of_run(r) == group]
        if not stopped or any(r.name in fixed for r in stopped):
            continue
        going_on = [r for r in unfinished if _group_of_run(r) != group and r.name not in fixed]
        reason = _why_not(study, stopped, going_on, infos, bounds, fixed, judge)
        if reason is not None:
            held.append({"train_size": proposal["train_size"], "other": proposal["other"],
                         "verdict": proposal["verdict"], "reason": reason})
            continue
        finals = {r.name: infos[r.name] for r in stopped}
        fixed.update(finals)
        decisions.append({**proposal, "substitutions": len(SUBSTITUTIONS) * (len(AROUND) if going_on else 1),
                          "finals": finals})
    return decisions, held


def unforecastable(study: StudyResults, judge: Judge) -> dict:
    """Per size with unfinished runs, why no forecast can settle it now (None where one could): a finding reads one
    of its runs beyond a final box AP (the judge's needs) on the study with every unfinished run read at its best AP
    so far. Which runs a finding reads barely depends on their values (localization's schedule can), so a forecast,
    the slow part of a segment, is made only when some size could settle; a size this reading holds by mistake waits
    one segment more, which costs iterations, never a verdict. On most studies the largest size is held to its end."""
    unfinished = [r for r in study.runs if r.state not in ("done", "failed")]
    so_far = {}
    for r in unfinished:
        measured = [row[PRIMARY] for row in r.evals if isinstance(row.get(PRIMARY), (int, float))
                    and math.isfinite(row[PRIMARY])]
        ap = max(measured, default=0.0)
        so_far[r.name] = {"predicted_final_ap": ap, "interval": None, "seed_offset": 0.0, "seed_final_ap": ap}
    needs = judge(with_settled(study, so_far))["needs"]
    groups = {_group_of_run(r) for r in unfinished}
    return {g: _unread(needs, {r.name: r for r in unfinished if _group_of_run(r) == g}) for g in sorted(groups)}


def _why_not(study, stopped: list, going_on: list, infos: dict, bounds: dict, fixed: dict, judge: Judge):
    """Why stopping `stopped` could change a verdict of the report (None when it cannot): a finding reads what
    their forecast does not give, or a status differs between two substitutions of them (the rest held at one)."""
    missing = [r.name for r in stopped + going_on if r.name not in infos]
    if missing:
        return "no forecast for " + ", ".join(missing[:3]) + (" and more" if len(missing) > 3 else "")
    names = {r.name: r for r in stopped}
    for around in AROUND if going_on else AROUND[:1]:
        rest = {**fixed, **{r.name: _substituted(infos[r.name], bounds[r.name], r.init, around) for r in going_on}}
        first = None
        for sub in SUBSTITUTIONS:
            values = {r.name: _substituted(infos[r.name], bounds[r.name], r.init, sub) for r in stopped}
            verdicts = judge(with_settled(study, {**rest, **values}))
            unread = _unread(verdicts["needs"], names)
            if unread:
                return unread
            if first is None:
                first = (sub, verdicts["statuses"])
                continue
            statuses = verdicts["statuses"]
            changed = sorted(k for k in set(first[1]) | set(statuses) if first[1].get(k) != statuses.get(k))
            if changed:
                k = changed[0]
                return (f"{k}: {first[1].get(k)} {first[0].name}, {statuses.get(k)} with {sub.name}"
                        + (f" (the sizes that go on {around.name})" if going_on else ""))
    return None


def _unread(needs: list, stopped: dict) -> str | None:
    """What the findings read of the runs that would stop (name -> run) and a forecast does not give, in words."""
    unread = {}
    for need in needs:
        run = stopped.get(need["run"])
        if run is None or _reaches(run, need["until_iter"]) or need["finding"] in unread:
            continue
        what = ("measured final (AP50, AP75)" if need["until_iter"] is None else
                f"curve to iteration {need['until_iter']:,} (it stops at {run.last_iter or 0:,})")
        unread[need["finding"]] = f"{need['finding']} reads {run.name}'s {what}"
    return "; ".join(unread.values()) + ", which a forecast does not give" if unread else None


def _reaches(run, until_iter) -> bool:
    """Whether a run that stops here has what a finding reads: its curve up to `until_iter` (None: its end)."""
    return until_iter is not None and run.last_iter is not None and run.last_iter >= until_iter


def _substituted(info: dict, bound: list, init: str, sub: Substitution) -> dict:
    """A run's settled values under `sub`: its cell's forecast, or an end of its interval, plus its seed's offset."""
    at = sub.random if init == RANDOM else sub.pretrained
    arm = {"low": bound[0], "mid": info["predicted_final_ap"], "high": bound[1]}[at]
    return {**info, "seed_final_ap": _clip(arm + sub.spread * info["seed_offset"])}


def _clip(ap: float) -> float:
    return min(AP_MAX, max(0.0, ap))


def with_settled(study: StudyResults, settled: dict) -> StudyResults:
    """The study as the report reads it once the runs named in `settled` (name -> settled.json's values) are
    settled: done, with `_settled_final` in final's place, as study/results.py reads them from their files."""
    runs = [replace(r, state="done", settled=settled[r.name], final=_settled_final(settled[r.name], r.evals))
            if r.name in settled else r for r in study.runs]
    return replace(study, runs=runs)


def _forecast_finals(study: StudyResults, forecast: dict, runs: list) -> tuple[dict, dict]:
    """Per run with a forecast: (settled.json's forecast part: the arm's forecast and interval, the seed's offset
    and its final AP; the interval the substitutions span, widened where the arm has no plateau in sight)."""
    cells = {(c["init"], str(c["train_size"]), other_key(c.get("other") or {}), c["schedule"]): c
             for c in forecast["cells"]}
    arms = {_arm_key(a): a for a in forecast.get("arms", [])}
    offsets: dict = {}
    infos, bounds = {}, {}
    for r in runs:
        cell = cells.get((r.init, str(r.train_size), r.other_key, sched.format_schedule(r.schedule_factor)))
        bound = _interval(cell, arms)
        if bound is None or cell.get("predicted_final_ap") is None:
            continue
        if (r.init, _group_of_run(r)) not in offsets:
            offsets[(r.init, _group_of_run(r))] = seed_offsets(study, r.init, _group_of_run(r))
        offset = offsets[(r.init, _group_of_run(r))].get(r.seed, 0.0)
        infos[r.name] = {"predicted_final_ap": cell["predicted_final_ap"], "interval": cell["interval"],
                         "seed_offset": offset, "seed_final_ap": _clip(cell["predicted_final_ap"] + offset)}
        bounds[r.name] = bound
    return infos, bounds


def seed_offsets(study: StudyResults, init: str, group: tuple) -> dict:
    """seed -> its AP minus the mean over the arm's seeds, at the latest evaluation all of them have on their
    longest run (the trunk): how far each seed sits from the arm's curve that the forecast extends."""
    curves = {}
    for r in study.runs:
        if r.init == init and _group_of_run(r) == group and r.state != "failed":
            if r.seed not in curves or (r.iters or 0) > (curves[r.seed][0].iters or 0):
                curves[r.seed] = (r, {row["iter"]: row[PRIMARY] for row in r.evals
                                      if isinstance(row.get(PRIMARY), (int, float)) and math.isfinite(row[PRIMARY])})
    common = set.intersection(*(set(c) for _, c in curves.values())) if curves else set()
    if not common:
        return {seed: 0.0 for seed in curves}
    at = max(common)
    mean = math.fsum(c[at] for _, c in curves.values()) / len(curves)
    return {seed: c[at] - mean for seed, (_, c) in curves.items()}


def _group_of(spec) -> tuple:
    return (str(spec.train_size), other_key(spec.other))


def _group_of_run(run) -> tuple:
    return (str(run.train_size), run.other_key)


def run_adaptive(plan, study_dir: Path, jobs: int, judge: Judge, progress: bool = True) -> dict:
    """Run `plan` adaptively in `study_dir` (module docstring); returns {name: error} as run_local does.
    judge: every verdict the report draws from a study (pipeline.report_judge)."""
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
        study = load_results(study_dir)
        blocked = unforecastable(study, judge)
        if all(blocked.values()):
            if progress:
                print(f"[adaptive] {share:.0%}: no size can settle yet, no forecast (" + "; ".join(
                    f"train_size {g[0]}: {why}" for g, why in blocked.items()) + ")", flush=True)
            continue
        try:
            forecast = forecast_study(study)
        except UserError as e:  # too few evaluations yet: go on to the next segment
            if progress:
                print(f"[adaptive] {share:.0%}: no forecast yet ({e})", flush=True)
            continue
        decisions, held = decide(study, forecast, plan.margin_ap, judge)
        for decision in decisions:
            finals = decision.pop("finals")
            decision.update(share=share, stopped={name: stops.get(name) for name in finals})
            state["decisions"].append(decision)
            settled.add(_group_of_decision(decision))
            _write_settled(plan, study_dir, decision, finals)
            if progress:
                print(f"[adaptive] {share:.0%}: train_size {decision['train_size']} settled, random "
                      f"{decision['verdict']} the margin, no verdict changed under {decision['substitutions']} "
                      "substitutions of the forecasts; its trunks stop", flush=True)
        for h in held if progress else ():
            print(f"[adaptive] {share:.0%}: train_size {h['train_size']} goes on (random {h['verdict']} the "
                  f"margin, but {h['reason']})", flush=True)
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


def _mark_planned(forecast: dict, study: StudyResults) -> None:
    """Flag the forecast's cells that are schedules of the study (the forecast adds longer ones)."""
    planned = {(r.init, str(r.train_size), r.other_key, sched.format_schedule(r.schedule_factor))
               for r in study.runs}
    for cell in forecast["cells"]:
        cell["planned"] = (cell["init"], str(cell["train_size"]), other_key(cell.get("other") or {}),
                           cell["schedule"]) in planned


def _write_settled(plan, study_dir: Path, decision: dict, finals: dict) -> None:
    """settled.json in each stopped trunk and skipped fork: its forecast, its seed's final AP, which the report
    uses, and why."""
    for name, info in finals.items():
        spec = _spec(plan, name)
        run_dir = store.run_dir(study_dir, name)
        run_dir.mkdir(parents=True, exist_ok=True)  # a skipped fork may never have started
        last = ckpt.latest(run_dir)
        atomic_write_json(run_dir / SETTLED, {
            "status": "settled", "stopped_at_iter": last[0] if last else None, "share": decision["share"],
            "skipped": spec.trunk is not None, "verdict": decision["verdict"], **info,
            "reason": (f"train_size {decision['train_size']}: random's forecast {_fmt(decision['random'])} at "
                       f"{decision['schedule_longest']} is {decision['verdict']} the {plan.margin_ap:g} AP margin of "
                       "pretrained's best (" + ", ".join(f"{s} {b['schedule']} {_fmt(b['interval'])}"
                                                       for s, b in decision["pretrained_best"].items())
                       + f"), and no verdict changes under {decision['substitutions']} substitutions of the "
                       f"forecasts; this seed: {info['predicted_final_ap']:.1f} {info['seed_offset']:+.1f} AP"),
        })


def _fmt(interval) -> str:
    return f"[{interval[0]:.1f}, {interval[1]:.1f}]"
