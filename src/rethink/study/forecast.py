"""Forecast each arm's final box AP at each schedule from the curves so far, and when random init catches up.

The model knows this experiment (see schedule.py): every schedule follows the same trajectory at the base LR
until its own first LR drop, and every schedule of 2x or longer then trains the same tail (the last 2/3 of a
1x length, second drop at the last 2/9). So a schedule S's final AP is

    final(S) = f(d1(S)) + jump(tail(S))

- f is the pre-drop curve of the arm (one (init, train_size, other) across its seeds and schedules), fitted to
  every evaluation at or before a run's first drop (an evaluation at the drop iteration sees the model before
  it). Three saturating families, t in units of 1x:
      exp: a - b * exp(-t / tau)          pow: a - b * t^(-c)          hill: a / (1 + (k / t)^d)
  exp and pow are concave from the start (a pretrained arm's curve); hill is S-shaped in log t when d > 1, the
  shape of a random-init curve that starts slowly, rises steeply and then saturates (Hill's equation, the MMF
  family of learning-curve studies). Concave families fitted to the steep middle of an S-shaped curve overshoot
  its plateau; hill fitted to a concave curve takes d <= 1. They fit the observed part about equally well and part
  ways when extrapolated, so none is chosen outright: forecasts mix them by Akaike weights (n log(SSE/n) + 2k;
  clean curves pick their own family, noisy short ones keep several and the interval shows the disagreement).
- jump(tail) is everything the tail adds after d1 (both drops, and any over-fitting on small data), learned from
  the arm's runs that have finished a tail of that length (the forks of shorter schedules, the finished trunk):
  jump_i = final_i - f(d1_i), averaged. An arm that has finished no such run borrows the jump, in AP, from the
  arms that have (same init first) of the nearest training-set size (a small set over-fits in the tail where a
  large one gains; measured in benchmarks/README.md).
- intervals (80%): residual bootstrap. Each replicate draws a family by its weight, refits it to the fitted
  curve plus resampled residuals, recomputes the jumps from that refit (so the jump and the curve stay
  consistent), resamples the jump observations, and adds the noise of one evaluation (averaged over the seeds).
  The bootstrap sees only the noise around the fit the curve so far favours; a prefix can favour the wrong
  plateau (the real curves rise almost linearly, then bend). So each replicate also adds an extrapolation error
  measured on the arm's own curve (`prefix_errors`): fitted to its first 50-80%, how far the fit missed its
  latest evaluation, per unit of log(iterations); drawn with either sign and scaled by how far beyond the latest
  evaluation the forecast reaches, log(d1 / latest). Within the curve so far it adds nothing.
- no forecast, and a note saying why, for an arm with a pre-drop AP that is not a finite number (named by run and
  iteration) or a curve that falls (a slope below zero by two standard errors: every family rises).

Catching up (issue 12's rule, extended along the schedules): random catches up at S when its final AP at S is
within margin_ap of pretrained's best final AP over the schedules up to S. The catch-up schedule is the shortest
S where the forecasts say so; its probability is the share of bootstrap replicates that agree. Observed cells
(every seed done) count as known values.

Everything here returns plain data; the CLI and the report render it.
"""

import json
import math
from dataclasses import dataclass, field, replace

import numpy as np

from rethink import schedule as sched
from rethink.errors import UserError
from rethink.study.curves import AP_MAX, FAMILIES, MIN_POINTS, N_PARAMS, akaike_weights, curve_value, fit_curve
from rethink.study.results import PRIMARY, RANDOM, StudyResults, size_sort_key

INTERVAL = 0.8
N_BOOT = 300


def weight_at_bound(fits: list, weights: list) -> float:
    """The Akaike weight of the fits whose asymptote sits at AP_MAX: the data would take any higher plateau, so
    what those fits forecast is set by the bound, not by the curve (a curve that has not started to bend)."""
    return float(sum(w for f, w in zip(fits, weights) if f.params[0] >= AP_MAX - 1e-6))


def plateau_in_sight(weight_at_bound_: float) -> bool:
    """Whether an arm's forecast rests on its curve: fits at the bound carry no more than the share of the
    forecast that its interval leaves out (1 - INTERVAL)."""
    return weight_at_bound_ <= 1 - INTERVAL


NO_PLATEAU_NOTE = (f"no plateau in sight: fits with the asymptote at the {AP_MAX:g} AP bound carry over "
                   f"{1 - INTERVAL:.0%} of the weight, so the forecast is set by the bound, not by the curve")


UNCHECKED_NOTE = ("interval from the bootstrap alone: too few evaluations to check how the curve's own first part "
                  "extrapolates")


# ---------------------------------------------------------------------------------------------
# Arms: the curves of one (init, train_size, other) over its seeds and schedules
# ---------------------------------------------------------------------------------------------


@dataclass
class Arm:
    init: str
    train_size: object
    train_images: int | None
    other: dict
    seeds: list
    x: np.ndarray  # pre-drop evaluations of every seed, in units of 1x
    y: np.ndarray
    last_iter: int  # the latest evaluated iteration on the pre-drop curve
    jumps: dict  # tail -> [(d1 in 1x units, mean final AP over seeds)] of finished runs
    observed: dict  # schedule factor -> mean final AP, where every planned seed is done
    broken: str | None = None  # the first pre-drop evaluation whose AP is not a finite number
    fits: list = field(default_factory=list)
    weights: list = field(default_factory=list)
    note: str | None = None

    @property
    def other_key(self) -> str:
        return json.dumps(self.other, sort_keys=True)

    @property
    def group(self) -> tuple:
        return (self.train_size, self.other_key)


def _tail(factor: float, iters_1x: int) -> tuple:
    """What a schedule trains after its first drop: (iterations to the second drop, to the end)."""
    first, second = sched.drop_iters(factor, iters_1x)
    return (second - first, sched.total_iters(factor, iters_1x) - first)


def study_iters_1x(study: StudyResults) -> int:
    values = {int(round(r.iters / r.schedule_factor)) for r in study.runs if r.iters and r.schedule_factor}
    if not values:
        raise UserError(f"{study.path / 'study.json'}: no run records its iterations ('iters'); "
                        "cannot place the LR drops")
    return min(values)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def collect_arms(study: StudyResults, iters_1x: int) -> list:
    groups = {}
    for run in study.runs:
        groups.setdefault((run.init, run.train_size, run.other_key), []).append(run)
    arms = []
    for (init, train_size, _), runs in groups.items():
        points, broken = _pre_drop_points(runs, iters_1x)
        jumps, observed = {}, {}
        by_schedule = {}
        for run in runs:
            by_schedule.setdefault(run.schedule_factor, []).append(run)
        for factor, members in by_schedule.items():
            done = [r for r in members if r.state == "done" and r.settled is None and _finite((r.final.get("final") or {}).get(PRIMARY))]
            if not done:
                continue
            final = float(np.mean([r.final["final"][PRIMARY] for r in done]))
            d1 = sched.drop_iters(factor, iters_1x)[0] / iters_1x
            jumps.setdefault(_tail(factor, iters_1x), []).append((d1, final, len(done)))
            if len(done) == len(members):
                observed[factor] = final
        keys = sorted(points)
        arms.append(Arm(
            init=init, train_size=train_size,
            train_images=next((r.train_images for r in runs if r.train_images is not None), None),
            other=dict(runs[0].other), seeds=sorted({r.seed for r in runs}),
            x=np.array([k[1] / iters_1x for k in keys]), y=np.array([points[k] for k in keys]),
            last_iter=max((k[1] for k in keys), default=0), jumps=jumps, observed=observed, broken=broken))
    return arms


def _pre_drop_points(runs: list, iters_1x: int) -> tuple:
    """({(seed, iter): AP} of the evaluations at or before each run's first drop (forks repeat their trunk's lines
    up to the fork point), the first evaluation whose AP is not a finite number as "run iteration N", or None)."""
    points, broken = {}, None
    for run in runs:
        if run.state == "failed":
            continue
        first_drop = sched.drop_iters(run.schedule_factor, iters_1x)[0]
        for row in run.evals:
            if row["iter"] > first_drop or PRIMARY not in row:
                continue
            if _finite(row[PRIMARY]):
                points[(run.seed, row["iter"])] = float(row[PRIMARY])
            elif broken is None:
                broken = f"{run.name} iteration {row['iter']}: {PRIMARY} is {row[PRIMARY]!r}"
    return points, broken


def _falls(x, y) -> bool:
    """Whether the pre-drop curve falls: a least-squares slope below zero by more than twice its standard error.
    Every family rises, so a forecast of a falling curve would be the families' flat compromise, not the curve."""
    if len(x) < MIN_POINTS or np.ptp(x) == 0:
        return False
    slope, intercept = np.polyfit(x, y, 1)
    residuals = y - (slope * x + intercept)
    se = math.sqrt(float(np.sum(residuals ** 2)) / (len(x) - 2) / float(np.sum((x - x.mean()) ** 2)))
    return bool(slope < -2 * se)


def fit_arm(arm: Arm) -> None:
    """The arm's fits and Akaike weights, or none and a note saying why there is no forecast."""
    arm.fits, arm.weights = [], []
    if arm.broken is not None:
        arm.note = f"{arm.broken}, not a finite number; no forecast for this arm until that evaluation is redone"
        return
    if _falls(arm.x, arm.y):
        arm.note = ("its AP falls before the first LR drop; the curve families all rise, so there is no forecast "
                    "for this arm")
        return
    fits = [f for f in (fit_curve(arm.x, arm.y, fam) for fam in FAMILIES) if f is not None]
    if len(arm.x) < MIN_POINTS:
        arm.note = f"{len(arm.x)} evaluations before the first LR drop; at least {MIN_POINTS} are needed to fit"
    elif not fits:
        arm.note = "no curve family fits its evaluations"
    arm.fits = fits
    arm.weights = akaike_weights(fits) if fits else []


PREFIX_SHARES = (0.5, 0.6, 0.7, 0.8)


def _mixture(fits: list, weights: list, x) -> float:
    return float(sum(w * curve_value(f.family, f.params, x) for f, w in zip(fits, weights)))


def prefix_errors(arm: Arm) -> list:
    """How far the arm's own curve misleads a fit of its first part, per unit of log horizon.

    For each share q of the latest evaluated iteration, the families are fitted to the evaluations up to q of it
    and their Akaike mixture forecasts the latest evaluation (its mean over seeds): error / log(1 / q). The real
    forecast reaches log(d1 / latest) beyond what was evaluated; these errors, scaled to that horizon, are the
    part of its uncertainty the residual bootstrap cannot see (a prefix that favours the wrong plateau).
    """
    if len(arm.x) == 0:
        return []
    last = float(arm.x.max())
    target = float(np.mean(arm.y[arm.x == last]))
    # the families the forecast itself mixes (a family with under 1% of the weight changes nothing it says)
    families = [f.family for f, w in zip(arm.fits, arm.weights) if w >= 0.01]
    errors = []
    for q in PREFIX_SHARES:
        keep = arm.x <= q * last + 1e-9
        fits = [f for f in (fit_curve(arm.x[keep], arm.y[keep], fam) for fam in families) if f is not None]
        if not fits:
            continue
        errors.append((_mixture(fits, akaike_weights(fits), last) - target) / math.log(1.0 / q))
    return errors


def _images(a: Arm) -> float:
    return float(a.train_images or 0) or 1.0


def _borrowed_jumps(arms: list, arm: Arm, tails, same_init: bool) -> list:
    """Other arms' jumps at these tails in AP (final minus their fitted AP at the drop), from the arms whose
    training set is nearest in size (log images): what the LR drops add depends on the set's size (a small set
    over-fits in the tail, a large one gains), so the nearest size is the best stand-in. In AP, not as a fraction
    of the AP at the drop: a short schedule drops early, where the same few AP are a large fraction, and a
    fraction learned there overshoots a long schedule's (benchmarks/README.md, "Forecast calibration")."""
    candidates = [o for o in arms if o is not arm and o.fits and not (same_init and o.init != arm.init)
                  and any(t in o.jumps for t in tails)]
    if candidates:
        nearest = min(abs(math.log(_images(o) / _images(arm))) for o in candidates)
        candidates = [o for o in candidates if abs(math.log(_images(o) / _images(arm))) <= nearest + 1e-9]
    jumps = []
    for other in candidates:
        fit = other.fits[int(np.argmax(other.weights))]
        for tail in tails:
            for d1, final, _ in other.jumps.get(tail, []):
                jumps.append(final - float(curve_value(fit.family, fit.params, d1)))
    return jumps


def jump_source(arms: list, arm: Arm, tail: tuple) -> tuple:
    """Where the jump of a schedule with this tail comes from: (kind, values, note), kind "own" or "borrowed".

    The arm's own finished runs of this tail first; else other arms' jumps at this tail, in AP (same init first).
    Never from a run of another tail (a schedule under 2x trains a shorter one): how the jump changes with the
    tail's length is not something the study measures, so such cells get no number. (None, None, note) when
    there is nothing to learn from.
    """
    if tail in arm.jumps:
        return "own", arm.jumps[tail], None
    for same_init in (True, False):
        jumps = _borrowed_jumps(arms, arm, [tail], same_init)
        if jumps:
            return "borrowed", jumps, "LR-drop jump borrowed from the arms of the nearest training-set size"
    return None, None, f"no finished run yet trains this schedule's tail ({tail[1]} iterations after the first drop)"


# ---------------------------------------------------------------------------------------------
# Bootstrap samples of an arm's forecasts
# ---------------------------------------------------------------------------------------------


def _arm_samples(arm: Arm, arms: list, factors: list, grid_x, iters_1x: int, n_boot: int, rng) -> dict:
    """Per schedule factor an array of n_boot final-AP samples (None where no jump is known), and grid samples."""
    sources = {f: jump_source(arms, arm, _tail(f, iters_1x)) for f in factors}
    n_seeds = max(1, len(arm.seeds))
    finals = {f: np.full(n_boot, np.nan) for f in factors if sources[f][0] is not None}
    grid = np.full((n_boot, len(grid_x)), np.nan)
    chosen = rng.choice(len(arm.fits), size=n_boot, p=arm.weights)
    n = len(arm.x)
    errors = np.abs(prefix_errors(arm))
    last = float(arm.x.max())

    # One replicate is one possible future of the arm, so what it draws holds for all its schedules: one
    # extrapolation slope (a prefix error of either sign: a short prefix's sign does not tell which way the plateau
    # is missed, module docstring) and one pick among the jump observations (u). Only the evaluation noise is drawn
    # per cell. The forecasts then move together along the schedules, as the catch-up's comparisons need.
    slopes = rng.choice(errors, size=n_boot) * rng.choice((-1.0, 1.0), size=n_boot) if len(errors) else np.zeros(n_boot)
    picks = rng.random(n_boot)

    for b in range(n_boot):
        fit = arm.fits[chosen[b]]

        def extrapolation(x, slope=slopes[b]):
            return float(slope) * math.log(x / last) if x > last else 0.0

        # residuals inflated for the fitted parameters (n / (n - k)), then resampled onto the fitted curve
        res = np.asarray(fit.residuals) * math.sqrt(n / (n - N_PARAMS))
        y_star = curve_value(fit.family, fit.params, arm.x) + rng.choice(res, size=n)
        refit = fit_curve(arm.x, y_star, fit.family, start=fit.params)
        params = refit.params if refit is not None else fit.params

        def f_at(x, params=params, family=fit.family):
            return curve_value(family, params, x)

        def noise(k):
            return float(np.mean(rng.choice(res, size=k)))

        grid[b] = np.clip(f_at(grid_x) + [noise(n_seeds) + extrapolation(x) for x in grid_x], 0.0, AP_MAX)
        for factor in finals:
            kind, obs, _ = sources[factor]
            d1 = sched.drop_iters(factor, iters_1x)[0] / iters_1x
            at_drop = float(f_at(d1))
            if kind == "own":
                # one observed run's jump, not the mean of a resample: the runs' jumps differ by more than their
                # noise where the jump changes with the drop's place, and a new schedule drops at a new place
                d1_obs, final, k = obs[int(picks[b] * len(obs))]
                jump = final - float(f_at(d1_obs)) + noise(k)  # with the observed final's own noise
            else:
                jump = obs[int(picks[b] * len(obs))]
            finals[factor][b] = min(AP_MAX, max(0.0, at_drop + jump + noise(n_seeds) + extrapolation(d1)))
    notes = {}
    for f in factors:
        unchecked = not len(errors) and sched.drop_iters(f, iters_1x)[0] / iters_1x > last
        notes[f] = "; ".join(n for n in (sources[f][2], UNCHECKED_NOTE if unchecked else None) if n) or None
    return {"finals": finals, "grid": grid, "notes": notes}


def _quantiles(samples) -> tuple:
    lo, mid, hi = np.quantile(samples, [(1 - INTERVAL) / 2, 0.5, (1 + INTERVAL) / 2])
    return float(mid), float(lo), float(hi)


# ---------------------------------------------------------------------------------------------
# The forecast of a study
# ---------------------------------------------------------------------------------------------


def default_factors(study: StudyResults, group: tuple) -> list:
    """The schedules a group (train_size, other) runs, then 1x steps (0.5x below 2x) up to twice the longest."""
    factors = sorted({r.schedule_factor for r in study.runs if (r.train_size, r.other_key) == group})
    longest = factors[-1]
    step = 1.0 if longest >= 2 else 0.5
    extra = longest + step
    while extra <= 2 * longest + 1e-9:
        factors.append(extra)
        extra += step
    return factors


def parse_schedules(text: str) -> list:
    factors = sorted({sched.parse_schedule(part, key="--schedules") for part in text.split(",") if part.strip()})
    if not factors:
        raise UserError(f"--schedules: '{text}' names no schedule; write e.g. 2x,3x,6x")
    return factors


def _check_curves(study: StudyResults, arms: list) -> None:
    if not any(len(run.evals) for run in study.runs):
        raise UserError(f"{study.path}: no run has an evaluation yet (metrics.jsonl); nothing to forecast")
    if not any(arm.fits for arm in arms):
        refused = next((a for a in arms if a.broken is not None or len(a.x) >= MIN_POINTS), None)
        if refused is not None:
            raise UserError(f"{study.path}: no arm can be forecast; {refused.init}, train_size "
                            f"{refused.train_size}: {refused.note}")
        most = max(arms, key=lambda a: len(a.x))
        raise UserError(f"{study.path}: too few evaluations to fit a curve: the most any arm has before its "
                        f"first LR drop is {len(most.x)} ({most.init}, train_size {most.train_size}); "
                        f"at least {MIN_POINTS} are needed")
    if not any(arm.jumps for arm in arms):
        raise UserError(f"{study.path}: no run has finished yet, so the jump at the LR drop cannot be learned; "
                        "forecast again once the first fork (a shorter schedule) is done")


@dataclass
class _Fitted:
    study: StudyResults
    iters_1x: int
    arms: list
    factors: dict  # group -> schedule factors
    samples: dict  # id(arm) -> _arm_samples result
    grids: dict  # id(arm) -> grid iterations


def _fit_study(study: StudyResults, factors=None, n_boot: int = N_BOOT, seed: int = 0, grid_points: int = 25) -> _Fitted:
    iters_1x = study_iters_1x(study)
    arms = collect_arms(study, iters_1x)
    for arm in arms:
        fit_arm(arm)
    _check_curves(study, arms)
    rng = np.random.default_rng(seed)
    group_factors, samples, grids = {}, {}, {}
    for arm in arms:
        if arm.group not in group_factors:
            group_factors[arm.group] = list(factors) if factors else default_factors(study, arm.group)
    for arm in arms:
        if not arm.fits:
            continue
        fs = group_factors[arm.group]
        end = max(sched.drop_iters(f, iters_1x)[0] for f in fs)
        start = min(arm.last_iter, end)
        grid_iters = [int(round(start + (end - start) * i / (grid_points - 1))) for i in range(grid_points)]
        grids[id(arm)] = grid_iters
        samples[id(arm)] = _arm_samples(arm, arms, fs, np.array(grid_iters) / iters_1x, iters_1x, n_boot, rng)
    return _Fitted(study=study, iters_1x=iters_1x, arms=arms, factors=group_factors, samples=samples, grids=grids)


def _arm_order(study: StudyResults):
    order = {RANDOM: 0}
    for source in study.sources:
        order.setdefault(source, len(order))
    return order


def _cell_values(fitted: _Fitted, arm: Arm, factor: float, n_boot: int):
    """(samples or None, observed or None) for one cell; observed cells are known values in the catch-up."""
    observed = arm.observed.get(factor)
    s = fitted.samples.get(id(arm))
    predicted = s["finals"].get(factor) if s else None
    if observed is not None:
        return np.full(n_boot, observed), observed
    return predicted, None


def _catch_up(fitted: _Fitted, margin: float, n_boot: int) -> list:
    out = []
    by_key = {(a.init, a.group): a for a in fitted.arms}
    groups = sorted({a.group for a in fitted.arms},
                    key=lambda g: (g[1], size_sort_key(g[0], next(a.train_images for a in fitted.arms
                                                                   if a.group == g))))
    for group in groups:
        random_arm = by_key.get((RANDOM, group))
        for source in fitted.study.sources:
            source_arm = by_key.get((source, group))
            if random_arm is None or source_arm is None:
                continue
            entry = {"train_size": group[0], "init": source, "other": json.loads(group[1]),
                     "schedule": None, "iters": None, "probability": None, "horizon": None, "note": None}
            best_samples, best_point = None, None
            last_within = None
            for factor in fitted.factors[group]:
                pre, _ = _cell_values(fitted, source_arm, factor, n_boot)
                ran, _ = _cell_values(fitted, random_arm, factor, n_boot)
                if pre is not None:
                    point = float(np.median(pre))
                    best_samples = pre if best_samples is None else np.maximum(best_samples, pre)
                    best_point = point if best_point is None else max(best_point, point)
                if ran is None or best_samples is None:
                    continue
                entry["horizon"] = sched.format_schedule(factor)
                last_within = float(np.mean(ran >= best_samples - margin))
                if float(np.median(ran)) >= best_point - margin:
                    entry.update(schedule=sched.format_schedule(factor),
                                 iters=sched.total_iters(factor, fitted.iters_1x), probability=last_within)
                    break
            if entry["schedule"] is None:
                entry["probability"] = last_within
                if last_within is None:
                    entry["note"] = random_arm.note or source_arm.note or "no forecast for this size"
            out.append(entry)
    return out


def forecast_study(study: StudyResults, factors=None, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Forecasts of every cell and the catch-up schedule per training-set size (module docstring).

    factors: schedule factors to forecast (default: each size's schedules and longer ones up to twice the
    longest). Returns {"study", "margin_ap", "interval", "iters_1x", "cells": [...], "catch_up": [...],
    "arms": [...]}; raises UserError when nothing can be fitted.
    """
    fitted = _fit_study(study, factors, n_boot, seed)
    order = _arm_order(study)
    cells = []
    for arm in sorted(fitted.arms, key=lambda a: (a.other_key, size_sort_key(a.train_size, a.train_images),
                                                   order.get(a.init, len(order)))):
        s = fitted.samples.get(id(arm))
        for factor in fitted.factors[arm.group]:
            cell = {"init": arm.init, "train_size": arm.train_size, "other": arm.other,
                    "schedule": sched.format_schedule(factor), "iters": sched.total_iters(factor, fitted.iters_1x),
                    "predicted_final_ap": None, "interval": None,
                    "observed_final_ap": arm.observed.get(factor), "note": arm.note}
            samples = s["finals"].get(factor) if s else None
            if samples is not None:
                mid, lo, hi = _quantiles(samples)
                unbounded = not plateau_in_sight(weight_at_bound(arm.fits, arm.weights))
                note = "; ".join(n for n in (s["notes"][factor], NO_PLATEAU_NOTE if unbounded else None) if n)
                cell.update(predicted_final_ap=mid, interval=[lo, hi], note=note or None)
            elif s is not None:
                cell["note"] = s["notes"][factor]
            cells.append(cell)
    arms_out = []
    for arm in fitted.arms:
        jumps = {}
        best = arm.fits[int(np.argmax(arm.weights))] if arm.fits else None
        for tail, obs in arm.jumps.items():
            if best is not None:
                values = [final - float(curve_value(best.family, best.params, d1)) for d1, final, _ in obs]
                jumps[f"{tail[1]}"] = float(np.mean(values))
        arms_out.append({
            "init": arm.init, "train_size": arm.train_size, "other": arm.other, "points": int(len(arm.x)),
            "last_iter": arm.last_iter, "note": arm.note,
            "level_at_last_iter": float(np.mean(arm.y[arm.x == arm.x.max()])) if len(arm.x) else None,
            "weight_at_bound": weight_at_bound(arm.fits, arm.weights),
            "plateau_in_sight": plateau_in_sight(weight_at_bound(arm.fits, arm.weights)),
            "fits": [{"family": f.family, "params": list(f.params), "weight": w, "rms": math.sqrt(f.sse / f.n)}
                     for f, w in zip(arm.fits, arm.weights)],
            "jump_by_tail_iters": jumps,
        })
    return {"study": study.name, "margin_ap": study.margin_ap, "interval": INTERVAL, "iters_1x": fitted.iters_1x,
            "cells": cells, "catch_up": _catch_up(fitted, study.margin_ap, n_boot), "arms": arms_out}


def forecast_curves(study: StudyResults, factors=None, n_boot: int = N_BOOT, seed: int = 0, grid_points: int = 25) -> list:
    """Per arm, the forecast beyond what was run, for a figure to draw dashed.

    Returns [{"init", "train_size", "other", "last_iter",
              "curve": [{"iters", "ap", "lo", "hi"}, ...],    # the pre-drop curve from the last evaluation to
                                                              # the latest first drop of the forecast schedules
              "finals": [{"schedule", "iters", "ap", "lo", "hi"}, ...]}]   # schedules not yet observed
    Arms that cannot be fitted are left out. lo/hi bound the 80% interval.
    """
    fitted = _fit_study(study, factors, n_boot, seed, grid_points)
    out = []
    for arm in fitted.arms:
        s = fitted.samples.get(id(arm))
        if s is None:
            continue
        curve = []
        for j, it in enumerate(fitted.grids[id(arm)]):
            mid, lo, hi = _quantiles(s["grid"][:, j])
            curve.append({"iters": it, "ap": mid, "lo": lo, "hi": hi})
        finals = []
        for factor, samples in sorted(s["finals"].items()):
            if factor in arm.observed:
                continue
            mid, lo, hi = _quantiles(samples)
            finals.append({"schedule": sched.format_schedule(factor),
                           "iters": sched.total_iters(factor, fitted.iters_1x), "ap": mid, "lo": lo, "hi": hi})
        out.append({"init": arm.init, "train_size": arm.train_size, "other": arm.other,
                    "last_iter": arm.last_iter, "curve": curve, "finals": finals})
    return out


def truncate_study(study: StudyResults, cut_iters: dict) -> StudyResults:
    """The study as it stood when each group's runs had reached `cut_iters[(train_size, other_key)]`.

    Forks run beside their trunk at the same speed, so at a trunk's iteration c a run of T <= c iterations is done
    and a longer one has its evaluations up to c. Used by the backtests and the tests.
    """
    runs = []
    for run in study.runs:
        cut = cut_iters.get((run.train_size, run.other_key))
        if cut is None:
            runs.append(run)
            continue
        finished = run.state == "done" and run.iters is not None and run.iters <= cut
        runs.append(replace(run, evals=[r for r in run.evals if r["iter"] <= cut],
                            trains=[r for r in run.trains if r["iter"] <= cut],
                            state="done" if finished else ("running" if run.state != "failed" else "failed"),
                            final=run.final if finished else None))
    return replace(study, runs=runs)
