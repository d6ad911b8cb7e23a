"""The findings as data: the paper's four findings, the speed-up, what pre-training is worth in labelled images,
the answers to the four questions, and `summarize`, which turns a loaded study (study/results.py) into the dict
written as report/summary.json. The cells and the paired grid they compare on are cells.py's, compute is
compute.py's. Numbers only: the sentences are words.py's, the pictures figures.py's.
"""

import json
import math

from rethink.report.cells import Grid, best_ap, build_cells, comparisons, paired, run_iters_to_90
from rethink.report.compute import compute_comparison, pretraining_cost
from rethink.report.stats import (
    CONFIDENCE, DOES_NOT_HOLD, HOLDS, MAX_SEEDS_PROJECTED, NOT_ENOUGH, SPEEDUP_LEVELS, SPEEDUP_MARGIN, ahead_status,
    images_needed, is_number, mean_std, ratio_interval, seeds_to_settle, speedup_at_levels, within_status,
)
from rethink.study.plan import other_key
from rethink.study.results import PRIMARY, RANDOM, RunRecord, StudyResults, read_json_or_fail, size_sort_key


# ---------------------------------------------------------------------------------------------
# The paper's four findings, each on one Grid (a pretrained source against random init)
# ---------------------------------------------------------------------------------------------


def _not_enough(reason: str, **numbers) -> dict:
    return {"status": NOT_ENOUGH, "reason": reason, **numbers}


def _by_seed(runs) -> dict:
    return {r.seed: r for r in runs}


def _final_ap(run):
    return (run.final.get("final") or {}).get(PRIMARY)


def _pretrained_best_schedule(grid: Grid, size) -> str:
    """The schedule with the pretrained arm's highest mean final AP at `size` (the shorter one on a tie)."""
    schedules = grid.schedules(size)
    means = [mean_std([_final_ap(r) for r in grid.runs(grid.source, s, size)])["mean"] for s in schedules]
    return max(zip(schedules, means), key=lambda sm: (sm[1] if sm[1] is not None else -math.inf))[0]


def _versus(grid: Grid, size, pre_schedule, rand_schedule, value_fn=_final_ap) -> dict:
    """Pretrained at one schedule minus random at another, paired by the seeds both cells have."""
    pre = _by_seed(grid.by_cell.get((grid.source, pre_schedule, size), {}).values())
    rand = _by_seed(grid.by_cell.get((RANDOM, rand_schedule, size), {}).values())
    seeds = sorted(set(pre) & set(rand))
    diff = paired([value_fn(pre[s]) for s in seeds], [value_fn(rand[s]) for s in seeds])
    diff["seeds"] = seeds
    return diff


def _eval_ap(run: RunRecord) -> dict:
    return {row["iter"]: row[PRIMARY] for row in run.evals if is_number(row.get(PRIMARY))}


def finding_converges_faster(grid: Grid, margin: float) -> dict:
    """Pretrained reaches each accuracy with fewer iterations than random init, at the largest training set.

    The status is on the speed-up (`speedup_at_levels`): per seed, on the longest schedule's curves up to its first
    LR drop (the part all schedules of 2x and longer share), the median over AP levels of the iterations random init
    needs over those pretrained needs; over seeds their geometric mean with a t interval on the log ratios, tested
    with the "ahead" rule against SPEEDUP_MARGIN (1.25x). A lower bound below the margin cannot rule a speed-up out,
    so it gives not_enough_evidence rather than does_not_hold.
    Beside it, not deciding: the shortest schedule's final AP (the paper's own evidence, a model one could ship), the
    mean lead over the early curve, and each arm's iterations to 90% of its own best.
    """
    src = grid.source
    if not grid.common:
        return _not_enough(f"no done runs of both {src} and random with a common seed")
    size = grid.sizes()[-1]
    schedules = grid.schedules(size)
    short, long = schedules[0], schedules[-1]
    long_cell = grid.cell(src, long, size)
    first_drop = long_cell["drops"][0] if long_cell["drops"] else long_cell["iters"]
    seeds = grid.common[(long, size)]
    pre_runs, rand_runs = grid.runs(src, long, size), grid.runs(RANDOM, long, size)
    curves = [_eval_ap(r) for r in pre_runs + rand_runs]
    shared = sorted(set.intersection(*(set(c) for c in curves)))
    early = [i for i in shared if i > 0 and (first_drop is None or i <= first_drop)]
    pre_curves, rand_curves = curves[:len(seeds)], curves[len(seeds):]
    early_curve = [{"iter": i, "ap_pretrained": mean_std([c[i] for c in pre_curves])["mean"],
                    "ap_random": mean_std([c[i] for c in rand_curves])["mean"]} for i in early]

    short_diff = _versus(grid, size, short, short) if len(schedules) > 1 else None
    points_pre = {s: [c[i] for i in early] for s, c in zip(seeds, pre_curves)}
    points_rand = {s: [c[i] for i in early] for s, c in zip(seeds, rand_curves)}
    if short_diff is not None or not early:
        # the final AP of the shortest schedule (or of the only one, when the curve has no early point)
        pre_short = _by_seed(grid.runs(src, short, size))
        rand_short = _by_seed(grid.runs(RANDOM, short, size))
        for s in seeds:
            if s in pre_short and s in rand_short:
                points_pre[s].append(_final_ap(pre_short[s]))
                points_rand[s].append(_final_ap(rand_short[s]))
    kept = [s for s in seeds if points_pre[s] and None not in points_pre[s] + points_rand[s]]
    lead = paired([mean_std(points_pre[s])["mean"] for s in kept], [mean_std(points_rand[s])["mean"] for s in kept])

    speedup = _speedup(seeds, pre_curves, rand_curves, first_drop)
    if speedup is None:
        return _not_enough(f"no AP above 0 on {src}'s {long} curve before its first LR drop",
                           train_size=size, lead=lead, shortest_final=short_diff)
    status = ahead_status(speedup["log"], math.log(SPEEDUP_MARGIN))
    if status == DOES_NOT_HOLD and speedup["lower_bound"]:
        status = NOT_ENOUGH  # random init never reached some levels: its speed-up is only known from below

    return {
        "status": status, "n": speedup["n"], "train_size": size, "train_images": grid.train_images(size),
        "speedup": speedup, "speedup_margin": SPEEDUP_MARGIN,
        "lead": lead, "early_until_iter": first_drop, "early_points": len(early) + (short_diff is not None),
        "early_curve": early_curve, "curve_schedule": long, "schedule_shortest": short,
        "shortest_final": short_diff, "margin_ap": margin, **_iters_to_90(pre_runs, rand_runs),
    }


def _speedup(seeds: list, pre_curves: list, rand_curves: list, until_iter) -> dict | None:
    """speedup_at_levels per seed on the curves up to `until_iter`, and their geometric mean with its interval."""
    def cut(curve):
        return [(i, ap) for i, ap in curve.items() if i > 0 and (until_iter is None or i <= until_iter)]

    per_seed = []
    for seed, pre, rand in zip(seeds, pre_curves, rand_curves):
        result = speedup_at_levels(cut(pre), cut(rand))
        if result is not None:
            per_seed.append({"seed": seed, **result})
    if not per_seed:
        return None
    summary = ratio_interval([p["median"] for p in per_seed])
    levels = []
    for k, fraction in enumerate(SPEEDUP_LEVELS):
        rows = [p["levels"][k] for p in per_seed]
        bound = any(r["lower_bound"] for r in rows)
        levels.append({"fraction": fraction, "ap": mean_std([r["ap"] for r in rows])["mean"],
                       "iters_pretrained": mean_std([r["iters_pretrained"] for r in rows])["mean"],
                       "iters_random": None if bound else mean_std([r["iters_random"] for r in rows])["mean"],
                       "ratio": ratio_interval([r["ratio"] for r in rows])["mean"], "lower_bound": bound})
    return {**summary, "lower_bound": any(p["lower_bound"] for p in per_seed), "per_seed": per_seed,
            "levels": levels, "ap_low": levels[0]["ap"], "ap_high": levels[-1]["ap"]}


def _iters_to_90(pre_runs: list, rand_runs: list) -> dict:
    """Each arm's iterations to 90% of its own best AP on the longest schedule (means over seeds)."""
    it_pre = mean_std([run_iters_to_90(r) for r in pre_runs])["mean"]
    it_rand = mean_std([run_iters_to_90(r) for r in rand_runs])["mean"]
    return {"iters_to_90_pretrained": it_pre, "iters_to_90_random": it_rand,
            "iters_to_90_ratio": it_rand / it_pre if it_pre and it_rand is not None else None}


def finding_catches_up(grid: Grid, margin: float) -> dict:
    """Random init's final AP at the longest schedule within the margin (rule "within") of the pretrained
    arm's best final AP over the schedules at the largest training set.

    Pretrained's best is the schedule with its highest mean final AP (chosen on means, then paired by seed:
    a per-seed maximum would favour it with noise). Also: the gap to that best at each schedule and the first
    schedule within the margin; whether pretrained degrades with longer schedules (its best ahead of its
    longest by more than the margin); the fraction of the shortest schedule's gap closed at the longest.
    """
    src = grid.source
    if not grid.common:
        return _not_enough(f"no done runs of both {src} and random with a common seed")
    size = grid.sizes()[-1]
    schedules = grid.schedules(size)
    short, long = schedules[0], schedules[-1]
    best = _pretrained_best_schedule(grid, size)
    gaps = []
    for schedule in schedules:
        diff = _versus(grid, size, best, schedule)
        gaps.append({"schedule": schedule, "iters": grid.cell(RANDOM, schedule, size)["iters"], "gap": diff,
                     "within_margin": within_status(diff, margin)})
    gap = gaps[-1]["gap"]
    status = gaps[-1]["within_margin"]
    first = next((g["schedule"] for g in gaps if g["within_margin"] == HOLDS), None)
    if status != HOLDS and first is not None:
        first = None  # within the margin earlier but not at the longest schedule: not caught up
    g_short, g_long = gaps[0]["gap"]["mean"], gap["mean"]
    closed = None
    if len(schedules) > 1 and g_short is not None and g_long is not None and g_short > 0:
        closed = (g_short - g_long) / g_short
    pre = _by_seed(grid.by_cell[(src, best, size)].values())
    pre_long = _by_seed(grid.by_cell[(src, long, size)].values())
    seeds = sorted(set(pre) & set(pre_long))
    degrade = paired([_final_ap(pre[s]) for s in seeds], [_final_ap(pre_long[s]) for s in seeds])
    return {
        "status": status, "n": gap["n"], "train_size": size, "train_images": grid.train_images(size),
        "schedule_shortest": short, "schedule_longest": long, "schedule_best_pretrained": best,
        "ap_pretrained_best": gap["a_mean"], "ap_random": gap["b_mean"], "gap": gap,
        "gaps_by_schedule": gaps, "first_schedule_within_margin": first,
        "gap_shortest": g_short, "gap_longest": g_long, "gap_closed_fraction": closed,
        "closes_most_of_gap": status == DOES_NOT_HOLD and closed is not None and closed >= 0.5,
        "random_ahead": status == HOLDS and ahead_status(_negated(gap), margin) == HOLDS,
        "pretrained_degrades": ahead_status(degrade, margin) if best != long else DOES_NOT_HOLD,
        "pretrained_degradation": degrade if best != long else None,
        "margin_ap": margin,
    }


def _negated(diff: dict) -> dict:
    """The same paired difference seen from the other arm."""
    out = dict(diff)
    out["mean"] = -diff["mean"] if diff["mean"] is not None else None
    if diff["ci_low"] is not None:
        out["ci_low"], out["ci_high"] = -diff["ci_high"], -diff["ci_low"]
    return out


def _best_over_schedules(grid: Grid, init: str, size, seeds) -> list:
    """Per seed, the arm's best AP along any of its curves at `size` (each run's best evaluation)."""
    out = []
    for seed in seeds:
        values = [best_ap(grid.by_cell[(init, s, size)][seed]) for s in grid.schedules(size)]
        values = [v for v in values if is_number(v)]
        out.append(max(values) if values else None)
    return out


def _best_schedule(grid: Grid, init: str, size) -> str:
    means = {s: mean_std([best_ap(r) for r in grid.runs(init, s, size)])["mean"] for s in grid.schedules(size)}
    return max(means, key=lambda s: means[s] if means[s] is not None else -math.inf)


def finding_small_data(grid: Grid, margin: float) -> dict:
    """Pretrained ahead (rule "ahead") at the smallest training set, each arm at its best: per seed, the
    best AP along any of the arm's curves over all schedules run at that size.

    Also per size: both arms' best and where they peaked; smallest_size_within_margin, the smallest size
    from which random stays within the margin (rule "within") at every larger size tried (how much data
    random init needs); largest_size_behind, the largest size below that where random is behind.
    """
    src = grid.source
    if not grid.common:
        return _not_enough(f"no done runs of both {src} and random with a common seed")
    sizes = grid.sizes()
    per_size = []
    for size in sizes:
        seeds = sorted(set.intersection(*(set(grid.common[(s, size)]) for s in grid.schedules(size))))
        diff = paired(_best_over_schedules(grid, src, size, seeds), _best_over_schedules(grid, RANDOM, size, seeds))
        diff["seeds"] = seeds
        best_pre, best_rand = _best_schedule(grid, src, size), _best_schedule(grid, RANDOM, size)
        per_size.append({
            "train_size": size, "train_images": grid.train_images(size), "schedules": grid.schedules(size),
            "gap": diff, "within_margin": within_status(diff, margin), "random_behind": ahead_status(diff, margin),
            "best_schedule_pretrained": best_pre, "best_schedule_random": best_rand,
            "best_iter_pretrained": grid.cell(src, best_pre, size)["best_iter"]["mean"],
            "best_iter_random": grid.cell(RANDOM, best_rand, size)["best_iter"]["mean"],
        })
    if len(sizes) < 2:
        return _not_enough("only one training-set size has both arms done", train_size=sizes[0], by_size=per_size)
    smallest, largest = per_size[0], per_size[-1]
    within_from = next((p for i, p in enumerate(per_size)
                        if all(q["within_margin"] == HOLDS for q in per_size[i:])), None)
    upper = per_size.index(within_from) if within_from else len(per_size)
    behind = [p for p in per_size[:upper] if p["random_behind"] == HOLDS]
    largest_behind = behind[-1] if behind else None
    return {
        "status": smallest["random_behind"], "n": smallest["gap"]["n"],
        "train_size": smallest["train_size"], "train_images": smallest["train_images"],
        "gap": smallest["gap"], "by_size": per_size, "margin_ap": margin,
        "largest_within_margin": largest["within_margin"],
        "smallest_size_within_margin": within_from["train_size"] if within_from else None,
        "smallest_images_within_margin": within_from["train_images"] if within_from else None,
        "largest_size_behind": largest_behind["train_size"] if largest_behind else None,
        "largest_images_behind": largest_behind["train_images"] if largest_behind else None,
    }


def worth_in_images(grid: Grid) -> dict | None:
    """What pre-training is worth in labelled images at each training-set size n (Newell & Deng 2020's n_hat,
    Hernandez et al. 2021's effective data): per seed, the images random init would need to match pretrained's best
    AP at n, read off random's best-AP-by-size curve (`images_needed`); the multiplier n_hat / n over seeds as a
    geometric mean with a t interval on its logarithm. None with fewer than two sizes.
    """
    sizes = grid.sizes()
    if len(sizes) < 2:
        return None
    seeds = sorted(set.intersection(*(set(grid.common[(s, size)]) for size in sizes for s in grid.schedules(size))))
    images = [grid.train_images(size) for size in sizes]
    if not seeds or None in images:
        return None
    random_best = {size: _best_over_schedules(grid, RANDOM, size, seeds) for size in sizes}
    pre_best = {size: _best_over_schedules(grid, grid.source, size, seeds) for size in sizes}
    by_size = []
    for size, n in zip(sizes, images):
        per_seed = []
        for k, seed in enumerate(seeds):
            curve = [random_best[sz][k] for sz in sizes]
            if pre_best[size][k] is None or None in curve:
                continue
            n_hat, bound = images_needed(images, curve, pre_best[size][k])
            per_seed.append({"seed": seed, "images_needed": n_hat, "multiplier": n_hat / n, "bound": bound})
        if not per_seed:
            continue
        bounds = {p["bound"] for p in per_seed} - {None}
        multiplier = ratio_interval([p["multiplier"] for p in per_seed])
        by_size.append({
            "train_size": size, "train_images": n, "images_needed": n * multiplier["mean"],
            "multiplier": multiplier, "bound": bounds.pop() if len(bounds) == 1 else ("mixed" if bounds else None),
            "ap_pretrained_best": mean_std(pre_best[size])["mean"], "ap_random_best": mean_std(random_best[size])["mean"],
            "per_seed": per_seed,
        })
    return {"source": grid.source, "sizes": images, "by_size": by_size, "n": len(seeds)}


def finding_localization(grid: Grid, margin: float) -> dict:
    """Pre-training does not give better localization: at the largest training set and the schedule where
    random init is closest on box AP (normally the longest), random's AP75 is at least pretrained's AP75
    minus the margin (rule "within" on the paired AP75 gap); pretrained ahead on AP75 by more than the
    margin does not hold. The AP50 gap is given alongside, to say whether the AP75 gap is smaller or larger.
    """
    src = grid.source
    if not grid.common:
        return _not_enough(f"no done runs of both {src} and random with a common seed")
    size = grid.sizes()[-1]
    gaps = {s: grid.pair(s, size, _final_ap)["mean"] for s in grid.schedules(size)}
    schedule = min(gaps, key=lambda s: (gaps[s] if gaps[s] is not None else math.inf))
    pre, rand = grid.runs(src, schedule, size), grid.runs(RANDOM, schedule, size)
    pairs = [((a.final.get("final") or {}), (b.final.get("final") or {})) for a, b in zip(pre, rand)]
    pairs = [(fa, fb) for fa, fb in pairs
             if all(is_number(f.get(k)) for f in (fa, fb) for k in ("bbox/AP50", "bbox/AP75"))]
    if not pairs:
        return _not_enough(f"no bbox/AP50 and bbox/AP75 at {schedule}", schedule=schedule, train_size=size)
    gap75 = paired([fa["bbox/AP75"] for fa, _ in pairs], [fb["bbox/AP75"] for _, fb in pairs])
    gap50 = paired([fa["bbox/AP50"] for fa, _ in pairs], [fb["bbox/AP50"] for _, fb in pairs])
    return {
        "status": within_status(gap75, margin), "n": gap75["n"], "schedule": schedule, "train_size": size,
        "train_images": grid.train_images(size), "gap_ap75": gap75, "gap_ap50": gap50,
        "ap75_gap_minus_ap50_gap": gap75["mean"] - gap50["mean"], "margin_ap": margin,
    }


FINDING_KEYS = ("converges_faster", "catches_up", "small_data_hurts_random", "localization")


def deciding(key: str, finding: dict, margin: float) -> tuple:
    """(the paired difference a finding's status is decided on, the margin it is tested against): AP differences
    against the study's margin, converges_faster's log speed-up against the log of its ratio margin."""
    if key == "converges_faster":
        return (finding.get("speedup") or {}).get("log"), math.log(SPEEDUP_MARGIN)
    return finding.get({"catches_up": "gap", "small_data_hurts_random": "gap", "localization": "gap_ap75"}[key]), margin


def findings_for(grid: Grid, margin: float) -> dict:
    findings = {
        "converges_faster": finding_converges_faster(grid, margin),
        "catches_up": finding_catches_up(grid, margin),
        "small_data_hurts_random": finding_small_data(grid, margin),
        "localization": finding_localization(grid, margin),
    }
    for key, finding in findings.items():
        diff, against = deciding(key, finding, margin)
        finding["seeds_to_settle"] = None
        if finding["status"] == NOT_ENOUGH and diff is not None and diff["n"] >= 2:
            finding["seeds_to_settle"] = seeds_to_settle(diff, against)
            finding["seeds_projected_max"] = MAX_SEEDS_PROJECTED
    return findings


def _no_source_findings(reason: str) -> dict:
    return {key: _not_enough(reason) for key in FINDING_KEYS}


# ---------------------------------------------------------------------------------------------
# The four questions of the report's first section, and the summary
# ---------------------------------------------------------------------------------------------

def questions(source: str | None, findings: dict, compute: dict | None, by_source: dict, costs: dict,
              margin: float) -> dict:
    """The seed's four questions (and which source is best), answered as data from the findings."""
    catch, fast, small = findings["catches_up"], findings["converges_faster"], findings["small_data_hurts_random"]
    answer = {HOLDS: "no", DOES_NOT_HOLD: "yes", NOT_ENOUGH: "unclear"}
    first = catch.get("first_schedule_within_margin")
    out = {
        "source": source,
        "necessary": {"answer": answer[catch["status"]], "finding": "catches_up"},
        "helpful": {"answer": {HOLDS: "yes", DOES_NOT_HOLD: "no", NOT_ENOUGH: "unclear"}[fast["status"]],
                    "finding": "converges_faster", "compute": compute},
        "more_data": {"answer": {HOLDS: "yes", DOES_NOT_HOLD: "no", NOT_ENOUGH: "unclear"}[small["status"]],
                      "finding": "small_data_hurts_random",
                      "images_random_needs": small.get("smallest_images_within_margin"),
                      "largest_images_behind": small.get("largest_images_behind")},
        "how_long": {"finding": "catches_up", "schedule": first,
                     "iters": next((g["iters"] for g in catch.get("gaps_by_schedule", []) if g["schedule"] == first), None),
                     "longest_tried": catch.get("schedule_longest"),
                     "answer": ("unclear" if catch["status"] == NOT_ENOUGH else
                                "within_tried" if first else "longer_than_tried")},
    }
    if len(by_source) > 1:
        out["best_source"] = rank_sources(by_source, costs, margin)
    return out


def rank_sources(by_source: dict, costs: dict, margin: float) -> dict:
    """Which pretrained source is best. At the largest training set: each source's best final AP over its
    schedules, its paired gap to random init at the longest schedule (mean, 95% interval) and what its
    pre-training cost; per training-set size, the sources in order of their best AP (at equal labelled data)."""
    ranked, sizes = [], {}
    for source, f in by_source.items():
        c = f["catches_up"]
        if "gap" in c:
            last = c["gaps_by_schedule"][-1]["gap"]
            cost = costs.get(source) or {}
            ranked.append({"source": source, "ap_best": c["ap_pretrained_best"], "schedule": c["schedule_best_pretrained"],
                           "gap_to_random_at_longest": last, "ahead_of_random_at_longest": ahead_status(last, margin),
                           "pretraining_images": cost.get("images"), "pretraining_pixels": cost.get("pixels")})
        for p in f["small_data_hurts_random"].get("by_size") or []:
            entry = sizes.setdefault(p["train_size"], {"train_size": p["train_size"], "train_images": p["train_images"],
                                                       "sources": []})
            entry["sources"].append({"source": source, "ap_best": p["gap"]["a_mean"], "gap_to_random": p["gap"]})

    def best_first(r):
        return -(r["ap_best"] if r["ap_best"] is not None else -math.inf)

    ranked.sort(key=best_first)
    for entry in sizes.values():
        entry["sources"].sort(key=best_first)
    by_size = sorted(sizes.values(), key=lambda e: size_sort_key(e["train_size"], e["train_images"]))
    return {"ranking": ranked, "best": ranked[0]["source"] if ranked else None,
            "any_ahead_at_longest": any(r["ahead_of_random_at_longest"] == HOLDS for r in ranked),
            "by_size": by_size if len(by_size) > 1 else []}


def _clean(obj):
    """JSON-safe copy: NaN/inf become null (strict JSON has no NaN), tuples become lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def summarize(study: StudyResults) -> dict:
    """Everything the report shows, as plain JSON-able data (written as report/summary.json)."""
    cells = build_cells(study.runs)
    other_keys = sorted({c["other_key"] for c in cells}) or [other_key({})]
    sources = study.sources

    costs = {s: pretraining_cost(study.pretrain.get(s), study.init_cost.get(s), study.weights_meta.get(s))
             for s in sources}
    verdicts = []
    for group_key in other_keys:
        for source in sources:
            grid = Grid(study.runs, source, group_key, cells)
            findings = findings_for(grid, study.margin_ap)
            verdicts.append({"source": source, "other": json.loads(group_key), "findings": findings,
                             "compute": compute_comparison(grid, findings["catches_up"], costs[source]),
                             "worth_in_images": worth_in_images(grid)})
    if sources:
        top, compute, worth = verdicts[0]["findings"], verdicts[0]["compute"], verdicts[0]["worth_in_images"]
    else:
        top, compute, worth = _no_source_findings("the study has no pretrained init to compare with random"), None, None
    by_source = {v["source"]: v["findings"] for v in reversed(verdicts)}  # first other group wins
    by_source = {s: by_source[s] for s in sources}

    seeds = sorted({r.seed for r in study.runs})
    done_seeds = [c["n_seeds"] for c in cells]

    summary = {
        "name": study.name,
        "margin_ap": study.margin_ap,
        "confidence": CONFIDENCE,
        "n_seeds": len(seeds),
        "seeds": seeds,
        "n_seeds_per_cell": {"min": min(done_seeds), "max": max(done_seeds)} if done_seeds else None,
        "sources": sources,
        "source_labels": {s: study.label(s) for s in sources},
        "n_runs": len(study.runs),
        "cells": [{k: v for k, v in c.items() if k != "other_key"} for c in cells],
        "comparisons": comparisons(study, cells),
        "questions": questions(sources[0] if sources else None, top, compute, by_source, costs, study.margin_ap),
        # the headline comparison (the first source against random, in the first other-axis group) ...
        "headline": {"source": verdicts[0]["source"], "other": verdicts[0]["other"]} if verdicts else None,
        "findings": top,
        "compute": compute,
        "worth_in_images": worth,
        # ... and every other (source, other) comparison: each finding is stored once (all_verdicts joins them)
        "other_verdicts": verdicts[1:],
        "pretraining_cost": costs,
        "pretrain": {s: study.pretrain.get(s) for s in sources},
        "pretrain_notes": {s: study.pretrain_notes[s] for s in sources if s in study.pretrain_notes},
        **run_states(study.runs),
        "adaptive": adaptive_record(study),
    }
    return _clean(summary)


def all_verdicts(summary: dict) -> list:
    """Every comparison of a source with random init, the headline first: [{source, other, findings, compute,
    worth_in_images}]."""
    if summary.get("headline") is None:
        return []
    headline = {**summary["headline"], "findings": summary["findings"], "compute": summary["compute"],
                "worth_in_images": summary["worth_in_images"]}
    return [headline, *summary["other_verdicts"]]


def adaptive_record(study: StudyResults) -> dict | None:
    """For a study run with --adaptive: its decisions (adaptive.json), and the iterations it trained against the
    iterations its plan holds (each run's own: a fork's start at its trunk's checkpoint is not its work)."""
    path = study.path / "adaptive.json"
    if not path.exists():
        return None
    decisions = read_json_or_fail(path).get("decisions", [])
    planned = trained = 0
    for r in study.runs:
        start = r.fork_iter if r.trunk else 0
        planned += (r.iters or 0) - (start or 0)
        if r.settled is not None:
            reached = r.settled.get("stopped_at_iter")
        elif r.state == "done":
            reached = r.iters
        else:
            reached = r.last_iter
        trained += max(0, (reached or 0) - (start or 0)) if reached else 0
    return {"decisions": decisions, "iters_planned": planned, "iters_trained": trained,
            "settled_runs": [{"name": r.name, "reason": r.settled.get("reason"),
                              "stopped_at_iter": r.settled.get("stopped_at_iter"),
                              # the value the tables and verdicts use: this seed's (the arm's forecast plus the
                              # seed's offset, study/adaptive.py) where settled.json has it
                              "predicted_final_ap": _final_ap(r),
                              "seed_offset": r.settled.get("seed_offset"),
                              "interval": r.settled.get("interval"), "skipped": bool(r.settled.get("skipped"))}
                             for r in study.runs if r.settled is not None]}


def run_states(runs: list) -> dict:
    """counts (runs per state), missing (not done), failed (with their reason), and one row per run."""
    def shown(run):  # a run an adaptive study settled counts as done for the findings, and says what it is
        return "settled" if run.settled is not None else run.state

    counts = {s: 0 for s in ("done", "running", "pending", "failed")}
    for run in runs:
        counts[shown(run)] = counts.get(shown(run), 0) + 1
    return {
        "counts": counts,
        "missing": [{"name": r.name, "state": r.state, "reason": r.reason, "last_iter": r.last_iter,
                     "iters": r.iters} for r in runs if r.state != "done"],
        "failed": [{"name": r.name, "iter": (r.failed or {}).get("iter", r.last_iter),
                    "reason": (r.failed or {}).get("reason", r.reason), "losses": (r.failed or {}).get("losses")}
                   for r in runs if r.state == "failed"],
        "runs": [{"name": r.name, "init": r.init, "schedule": r.schedule, "train_size": r.train_size,
                  "train_images": r.train_images, "seed": r.seed, "other": r.other, "state": shown(r),
                  "reason": r.reason, "last_iter": r.last_iter, "iters": r.iters, "trunk": r.trunk,
                  "fork_iter": r.fork_iter, "settled": r.settled is not None,
                  "final_ap": ((r.final or {}).get("final") or {}).get(PRIMARY) if r.state == "done" else None}
                 for r in runs],
    }
