"""Pure statistics on plain numbers: means over seeds, paired differences and their t intervals, ratios with
intervals on their logarithms, the statuses of the paper's rules against a margin, time to accuracy, and the images
a curve needs to reach an AP. Nothing here reads a file or builds a sentence; each function is unit-tested on
constructed values.

Rules (d = pretrained minus random, paired by seed; m = the margin):
- "ahead": with n >= 2, holds when the whole 95% t interval of d lies above m, does_not_hold when the whole
  interval is <= m, not_enough_evidence when it straddles m. With n = 1 only the margin decides: holds when d > m.
- "within": with n >= 2, holds when the whole 95% interval is <= m (an equivalence-style test: the data rule out a
  gap larger than the margin), does_not_hold when the whole interval is > m, not_enough_evidence when it straddles
  m. With n = 1 only the margin decides: holds when d <= m.
A not_enough_evidence status also comes with how many seeds would settle it if its mean and spread held
(`seeds_to_settle`, up to MAX_SEEDS_PROJECTED): a plan for the next runs, never part of the status.
"""

import math

from scipy import stats as scipy_stats

CONFIDENCE = 0.95
FRACTION_OF_BEST = 0.9

HOLDS = "holds"
DOES_NOT_HOLD = "does_not_hold"
NOT_ENOUGH = "not_enough_evidence"
MAX_SEEDS_PROJECTED = 20  # seeds_to_settle looks no further: past that a study needs another design, not more seeds
# converges_faster's margin, a ratio of iterations: 1.25 is the smallest step between neighbouring schedules of the
# paper's grid (5x over 4x), so a smaller speed-up would not change which schedule a user trains.
SPEEDUP_MARGIN = 1.25
# The AP levels of the speed-up, as fractions of pretrained's best AP before its first LR drop: the top 10% is left
# out because near a plateau an evaluation's noise, not the speed of learning, decides which point crosses first.
SPEEDUP_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)




# ---------------------------------------------------------------------------------------------
# Pure functions on plain numbers
# ---------------------------------------------------------------------------------------------


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def mean_std(values) -> dict:
    """Mean and sample standard deviation (divisor n-1) of the finite values.

    Non-finite values (NaN AP of an empty size bucket, None) are left out and not counted in n.
    std is None below two values: one seed says nothing about spread.
    """
    vals = [float(v) for v in values if is_number(v)]
    n = len(vals)
    if n == 0:
        return {"mean": None, "std": None, "n": 0}
    mean = math.fsum(vals) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1)) if n >= 2 else None
    return {"mean": mean, "std": std, "n": n}


def paired_difference(a, b, confidence: float = CONFIDENCE) -> dict:
    """Paired differences a[i] - b[i] with a two-sided t confidence interval on their mean.

    a and b are aligned by seed. A pair with a non-finite value on either side is dropped.
    With n < 2 the interval is undefined: ci_low, ci_high and significant are None, which the
    report words as "no claim of significance can be made". significant is True when the
    interval excludes 0.
    """
    if len(a) != len(b):
        raise ValueError(f"paired_difference needs equally long lists, got {len(a)} and {len(b)}")
    diffs = [float(x) - float(y) for x, y in zip(a, b) if is_number(x) and is_number(y)]
    summary = mean_std(diffs)
    n, mean, std = summary["n"], summary["mean"], summary["std"]
    result = {"mean": mean, "std": std, "n": n, "ci_low": None, "ci_high": None,
              "significant": None, "confidence": confidence}
    if n >= 2:
        half_width = scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
        result["ci_low"] = mean - half_width
        result["ci_high"] = mean + half_width
        result["significant"] = bool(result["ci_low"] > 0 or result["ci_high"] < 0)
    return result


def iters_to_fraction(iters, values, fraction: float = FRACTION_OF_BEST):
    """First iteration at which the curve reaches `fraction` of its own best value.

    None when the curve has no finite value or its best is not positive (a run that learned nothing
    has no meaningful "90% of best").
    """
    points = sorted((int(i), float(v)) for i, v in zip(iters, values) if is_number(v))
    if not points:
        return None
    best = max(v for _, v in points)
    if best <= 0:
        return None
    threshold = fraction * best
    for i, v in points:
        if v >= threshold:
            return i
    return None  # unreachable: the best point itself passes


def iters_to_reach(iters, values, target: float):
    """First evaluated iteration at which the curve reaches `target` (None when it never does)."""
    for i, v in sorted((int(i), float(v)) for i, v in zip(iters, values) if is_number(v)):
        if v >= target:
            return i
    return None


def iters_to_level(points, level: float):
    """The iteration at which a curve first reaches `level`, interpolated linearly between its evaluations.

    `points` are (iteration, AP) pairs; the curve starts at (0, 0), as a detector with new heads has no AP yet.
    None when the curve never reaches the level.
    """
    prev_t, prev_v = 0.0, 0.0
    for t, v in sorted((float(t), float(v)) for t, v in points if is_number(v)):
        if v >= level:
            if prev_v >= level or v == prev_v:
                return t
            return prev_t + (level - prev_v) / (v - prev_v) * (t - prev_t)
        prev_t, prev_v = t, v
    return None


def speedup_at_levels(pre_points, rand_points, levels=SPEEDUP_LEVELS) -> dict:
    """How many times as many iterations random init needs as pretrained to reach each AP level of one seed.

    The levels are fractions of pretrained's best AP on `pre_points` (both curves cut at the same iteration, the
    first LR drop). A level random init never reaches within its points gives a lower bound: its last evaluated
    iteration over pretrained's. The median over the levels is the seed's speed-up; it is a lower bound when a
    bound sits at or below it (raising a bound could raise the median), otherwise exact.
    None when pretrained's curve has no positive AP.
    """
    pre = [(t, v) for t, v in pre_points if is_number(v)]
    rand = [(t, v) for t, v in rand_points if is_number(v)]
    if not pre or not rand or max(v for _, v in pre) <= 0:
        return None
    best, rand_end = max(v for _, v in pre), max(t for t, _ in rand)
    rows = []
    for fraction in levels:
        level = fraction * best
        t_pre, t_rand = iters_to_level(pre, level), iters_to_level(rand, level)
        reached = t_rand is not None
        rows.append({"fraction": fraction, "ap": level, "iters_pretrained": t_pre,
                     "iters_random": t_rand if reached else None,
                     "ratio": (t_rand if reached else rand_end) / t_pre, "lower_bound": not reached})
    ordered = sorted(rows, key=lambda r: r["ratio"])
    median = ordered[len(ordered) // 2]["ratio"] if len(ordered) % 2 else \
        (ordered[len(ordered) // 2 - 1]["ratio"] + ordered[len(ordered) // 2]["ratio"]) / 2
    return {"median": median, "lower_bound": any(r["lower_bound"] and r["ratio"] <= median for r in rows),
            "levels": rows}


def images_needed(images: list, best_aps: list, target: float) -> tuple:
    """How many training images random init needs to reach `target` AP: (n_hat, bound).

    `images` are the training-set sizes tried (increasing) and `best_aps` random init's best AP at each. More data
    never hurts a model at its best, so the curve is made monotone (running maximum) and interpolated linearly in
    log size. bound is None where n_hat lies inside the sizes tried, "at_least" past the largest (n_hat is then the
    largest size) and "at_most" below the smallest (n_hat is then the smallest size).
    """
    running, curve = -math.inf, []
    for n, ap in zip(images, best_aps):
        running = max(running, ap)
        curve.append((n, running))
    if target > curve[-1][1]:
        return curve[-1][0], "at_least"
    if target <= curve[0][1]:
        return curve[0][0], ("at_most" if target < curve[0][1] else None)
    for (n0, a0), (n1, a1) in zip(curve, curve[1:]):
        if a1 >= target:
            share = (target - a0) / (a1 - a0)
            return math.exp(math.log(n0) + share * (math.log(n1) - math.log(n0))), None
    return curve[-1][0], "at_least"  # unreachable: target <= the last running maximum


def ratio_interval(ratios: list, confidence: float = CONFIDENCE) -> dict:
    """The geometric mean of per-seed ratios with a t interval computed on their logarithms (a ratio's spread is
    multiplicative). Same keys as paired_difference, on the ratio scale; `log` holds the interval on the log scale,
    which the status rules test against the log of a ratio margin."""
    log = paired_difference([math.log(r) for r in ratios if is_number(r) and r > 0],
                            [0.0] * sum(1 for r in ratios if is_number(r) and r > 0), confidence)
    scale = (lambda x: None if x is None else math.exp(x))
    return {"mean": scale(log["mean"]), "ci_low": scale(log["ci_low"]), "ci_high": scale(log["ci_high"]),
            "n": log["n"], "confidence": confidence, "log": log}


def ahead_status(diff: dict, margin: float) -> str:
    """Is the first arm ahead by more than `margin`? (rule in the module docstring)."""
    if diff is None or diff["n"] == 0:
        return NOT_ENOUGH
    if diff["n"] == 1:
        return HOLDS if diff["mean"] > margin else DOES_NOT_HOLD
    if diff["ci_low"] > margin:
        return HOLDS
    if diff["ci_high"] <= margin:
        return DOES_NOT_HOLD
    return NOT_ENOUGH


def within_status(diff: dict, margin: float) -> str:
    """Is the first arm ahead by at most `margin`? The mirror image of `ahead_status`."""
    return {HOLDS: DOES_NOT_HOLD, DOES_NOT_HOLD: HOLDS, NOT_ENOUGH: NOT_ENOUGH}[ahead_status(diff, margin)]


def seeds_to_settle(diff: dict, margin: float, max_seeds: int = MAX_SEEDS_PROJECTED, confidence: float = CONFIDENCE):
    """The smallest number of seeds at which the paired interval would lie wholly on the mean's side of the
    margin, if the mean and the spread between seeds stayed as measured: a plan for the next runs, not a result.

    The side follows the mean: above the margin (the interval's low end must pass it) or at or below it (the
    high end). None when it cannot be said (fewer than two seeds, no spread, the mean exactly at the margin) or
    when it would take more than `max_seeds`. A diff whose interval already clears the margin gives its own n.
    """
    if diff is None or diff["n"] < 2 or not diff["std"] or diff["mean"] == margin:
        return None
    distance = abs(diff["mean"] - margin)
    for n in range(diff["n"], max_seeds + 1):
        half_width = scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * diff["std"] / math.sqrt(n)
        # strict above the margin, as ahead_status; at the margin counts as within, as within_status
        if half_width < distance or (diff["mean"] < margin and half_width == distance):
            return n
    return None
