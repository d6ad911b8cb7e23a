"""Words for the report: number formats, the sentence of each finding and the answers to the four questions
(the figures' titles and captions are captions.py's, the forecast section's forecast_words.py's).

Everything here reads the plain data that `report.stats` computes (summary.json) and returns strings; no
number is computed here that the summary does not hold, so the sentences say what the numbers say.
"""

import json

from rethink.report.stats import DOES_NOT_HOLD, HOLDS, NOT_ENOUGH

NO_SIGNIFICANCE = "One seed per cell: no claim of significance can be made."
STATUS_WORDS = {HOLDS: "holds", DOES_NOT_HOLD: "does not hold", NOT_ENOUGH: "not enough evidence"}




def fmt_ap(x) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def fmt_signed(x) -> str:
    return "n/a" if x is None else f"{x:+.1f}"


def fmt_count(x) -> str:
    """1234 -> '1.2k', 128_000_000 -> '128M': the magnitudes of the compute comparison."""
    if x is None:
        return "n/a"
    x = float(x)
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            value = x / scale
            return f"{value:.3g}{suffix}"
    return f"{x:.0f}"


def fmt_int(x) -> str:
    return "n/a" if x is None else f"{int(round(x)):,}"


def fmt_ci(diff: dict) -> str:
    """'95% CI [+2.9, +4.1], n=3', or 'n=1' where no interval exists."""
    if diff is None or diff["n"] == 0:
        return "no paired seeds"
    if diff["ci_low"] is None:
        return f"n={diff['n']}"
    pct = int(round(diff["confidence"] * 100))
    return f"{pct}% CI [{diff['ci_low']:+.1f}, {diff['ci_high']:+.1f}], n={diff['n']}"


def other_label(other: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in sorted(other.items()))


def fmt_ratio(x) -> str:
    if x is None:
        return "n/a"
    return f"{x:.0f}x" if x >= 10 else f"{x:.1f}x" if x >= 0.1 else f"{x:.2g}x"


def size_label(train_size, train_images) -> str:
    """'2,000 images', or 'all 8,000 images' for the full training set."""
    if train_size == "full" or not isinstance(train_size, int):
        return f"all {fmt_int(train_images)} images" if train_images is not None else "the full training set"
    return f"{fmt_int(train_images if train_images is not None else train_size)} images"




# ---------------------------------------------------------------------------------------------
# The findings
# ---------------------------------------------------------------------------------------------


def _note(finding: dict) -> str:
    return f" {NO_SIGNIFICANCE}" if finding.get("n") == 1 else ""


def _vs(diff: dict) -> str:
    return f"{fmt_signed(diff['mean'])} AP, {fmt_ci(diff)}"


def _against_margin(status: str, margin: float) -> str:
    return {HOLDS: f"more than the {margin:.1f} AP margin", DOES_NOT_HOLD: f"within the {margin:.1f} AP margin",
            NOT_ENOUGH: f"an interval that straddles the {margin:.1f} AP margin"}[status]


def fmt_ratio_ci(r: dict) -> str:
    """'95% CI [2.1x, 3.8x], n=3', or 'n=1' where no interval exists."""
    if r["ci_low"] is None:
        return f"n={r['n']}"
    pct = int(round(r["confidence"] * 100))
    return f"{pct}% CI [{fmt_ratio(r['ci_low'])}, {fmt_ratio(r['ci_high'])}], n={r['n']}"


def fmt_margin_ratio(x) -> str:
    return f"{x:g}x"


def speedup_phrase(f: dict, source: str) -> str:
    """'source reaches each AP level from 4.5 to 40.5 AP (...) 2.9x sooner than random init (median over the
    levels; 95% CI ...)', with 'at least' where random init never reached some levels."""
    sp = f["speedup"]
    bound = "at least " if sp["lower_bound"] else ""
    return (f"{source} reaches each AP level from {fmt_ap(sp['ap_low'])} to {fmt_ap(sp['ap_high'])} AP (10-90% of its "
            f"best before the {f['curve_schedule']} schedule's first LR drop at iteration "
            f"{fmt_int(f['early_until_iter'])}) {bound}{fmt_ratio(sp['mean'])} sooner than random init (median over "
            f"the levels; {fmt_ratio_ci(sp)})")


def converges_faster_text(f: dict, source: str) -> str:
    margin = fmt_margin_ratio(f["speedup_margin"])
    against = {HOLDS: f"more than the {margin} margin", DOES_NOT_HOLD: f"within the {margin} margin",
               NOT_ENOUGH: f"an interval that straddles the {margin} margin"}[f["status"]]
    lead = {HOLDS: f"Pre-training ({source}) speeds up convergence: ",
            DOES_NOT_HOLD: f"Pre-training ({source}) does not speed up convergence here: ",
            NOT_ENOUGH: f"Pre-training ({source}) may speed up convergence: "}[f["status"]]
    text = lead + speedup_phrase(f, source) + f", {against}."
    if f["speedup"]["lower_bound"]:
        text += " Random init never reached some of the levels before the drop, so the speed-up is known only from below."
    short = f["shortest_final"]
    if short:
        text += (f" At the end of the shortest schedule ({f['schedule_shortest']}): {fmt_ap(short['a_mean'])} "
                 f"against {fmt_ap(short['b_mean'])} AP ({_vs(short)}).")
    lead_diff = f["lead"]
    text += (f" Over the early curve ({f['early_points']} matched points up to iteration "
             f"{fmt_int(f['early_until_iter'])}) {source} leads by {_vs(lead_diff)} on average.")
    if f["iters_to_90_ratio"] is not None:
        text += (f" Each reaches 90% of its own best AP after {fmt_int(f['iters_to_90_pretrained'])} ({source}) and "
                 f"{fmt_int(f['iters_to_90_random'])} (random) iterations.")
    return text + _note(f)


def catches_up_text(f: dict, source: str) -> str:
    m, gap = f["margin_ap"], f["gap"]
    where = f"{f['schedule_longest']} on {size_label(f['train_size'], f['train_images'])}"
    numbers = (f"{fmt_ap(f['ap_random'])} AP against the best of {source}, {fmt_ap(f['ap_pretrained_best'])} AP at "
               f"{f['schedule_best_pretrained']} (gap {_vs(gap)})")
    if f["status"] == HOLDS:
        text = f"Random init catches up: at the longest schedule ({where}) it reaches {numbers}, within the {m:.1f} AP margin"
        text += (f"; it is first within the margin at {f['first_schedule_within_margin']}."
                 if f["first_schedule_within_margin"] != f["schedule_shortest"] or len(f["gaps_by_schedule"]) == 1
                 else f"; it is within the margin already at the shortest schedule ({f['schedule_shortest']}).")
        if f["random_ahead"]:
            text += " Random init is ahead by more than the margin."
    elif f["status"] == DOES_NOT_HOLD:
        lead = "Random init closes most of the gap but does not catch up" if f["closes_most_of_gap"] else \
            "Random init does not catch up within the schedules tried"
        text = f"{lead}: at the longest schedule ({where}) it reaches {numbers}, more than the {m:.1f} AP margin behind"
        if f["gap_closed_fraction"] is not None and f["gap_closed_fraction"] > 0:
            text += (f"; it closed {f['gap_closed_fraction']:.0%} of its {fmt_ap(f['gap_shortest'])} AP gap to that "
                     f"best at the shortest schedule ({f['schedule_shortest']}).")
        else:
            text += "."
    else:
        text = (f"Not enough evidence that random init catches up: at the longest schedule ({where}) it reaches "
                f"{numbers}, an interval that straddles the {m:.1f} AP margin.")
    degrade = f["pretrained_degradation"]
    if degrade is not None and f["pretrained_degrades"] == HOLDS:
        text += (f" {source} degrades with longer training: its final AP at {f['schedule_best_pretrained']} is "
                 f"{_vs(degrade)} above its final AP at {f['schedule_longest']}.")
    elif degrade is not None and degrade["mean"] is not None and degrade["mean"] > 0:
        text += (f" {source} peaks before the longest schedule ({f['schedule_best_pretrained']}, {_vs(degrade)} "
                 f"above {f['schedule_longest']}), not by more than the margin.")
    return text + _note(f)


def _breakdown_text(f: dict) -> str:
    by_size, within = f["by_size"], f["smallest_images_within_margin"]
    largest = by_size[-1]
    label = size_label(largest["train_size"], largest["train_images"])
    if within is None and f["largest_within_margin"] == DOES_NOT_HOLD:
        return f" Random init is still more than the margin behind at the largest size tried ({label})."
    if within is None:
        return (f" No size tried shows random init within the margin: at the largest ({label}) the gap is "
                f"{_vs(largest['gap'])}, an interval that reaches beyond the margin.")
    if f["smallest_size_within_margin"] == by_size[0]["train_size"]:
        return " Random init is within the margin at every size tried."
    text = (f" Random init needs about {fmt_int(within)} training images to come within the margin (it stays "
            "within it at every larger size tried)")
    if f["largest_images_behind"] is not None:
        text += f"; the breakdown lies between {fmt_int(f['largest_images_behind'])} and {fmt_int(within)} images"
    return text + "."


def small_data_text(f: dict, source: str) -> str:
    m, gap, small = f["margin_ap"], f["gap"], f["by_size"][0]
    where = size_label(f["train_size"], f["train_images"])
    numbers = (f"{source} reaches {fmt_ap(gap['a_mean'])} best AP ({small['best_schedule_pretrained']}, around "
               f"iteration {fmt_int(small['best_iter_pretrained'])}) against {fmt_ap(gap['b_mean'])} for random init "
               f"({small['best_schedule_random']}, around iteration {fmt_int(small['best_iter_random'])}), "
               f"{_vs(gap)}")
    lead = {HOLDS: "Little data hurts random init", DOES_NOT_HOLD: "Little data does not hurt random init here",
            NOT_ENOUGH: "Not enough evidence that little data hurts random init"}[f["status"]]
    text = (f"{lead}: with the smallest training set ({where}), each arm at its best over all its schedules, "
            f"{numbers}, {_against_margin(f['status'], m)}.")
    return text + _breakdown_text(f) + _note(f)


def localization_text(f: dict, source: str) -> str:
    m, g75, g50 = f["margin_ap"], f["gap_ap75"], f["gap_ap50"]
    where = f"at {f['schedule']} on {size_label(f['train_size'], f['train_images'])} (where random init is closest on AP)"
    numbers = f"random init's AP75 is {fmt_ap(g75['b_mean'])} against {fmt_ap(g75['a_mean'])} for {source} ({_vs(g75)})"
    text = {HOLDS: f"Pre-training does not give better localization: {where} {numbers}, within the {m:.1f} AP margin.",
            DOES_NOT_HOLD: f"Pre-training gives better localization here: {where} {numbers}: {source} leads AP75 "
                           f"by more than the {m:.1f} AP margin.",
            NOT_ENOUGH: f"Not enough evidence on localization: {where} {numbers}, an interval that straddles the "
                        f"{m:.1f} AP margin."}[f["status"]]
    diff = f["ap75_gap_minus_ap50_gap"]
    compare = "smaller than" if diff < 0 else "larger than" if diff > 0 else "equal to"
    text += (f" The AP75 gap is {compare} the AP50 gap ({fmt_signed(g50['mean'])} AP) by {abs(diff):.1f} AP: "
             + ("pre-training helps less at the strict threshold." if diff < 0 else
                "pre-training helps more at the strict threshold." if diff > 0 else "no difference."))
    return text + _note(f)


FINDING_TEXT = {"converges_faster": converges_faster_text, "catches_up": catches_up_text,
                "small_data_hurts_random": small_data_text, "localization": localization_text}


def _seeds_text(finding: dict) -> str:
    """What more seeds would do for a not_enough_evidence finding, from stats.seeds_to_settle."""
    if finding.get("status") != NOT_ENOUGH or "seeds_projected_max" not in finding:
        return ""
    n = finding["seeds_to_settle"]
    if n is None:
        return (f" At this spread between seeds, even {finding['seeds_projected_max']} seeds would not settle it: "
                f"the mean is too close to the margin.")
    return f" At this spread between seeds, about {n} seeds would settle it (if the mean held)."


def finding_text(key: str, finding: dict, source: str) -> str:
    if "reason" in finding:
        return f"Not enough evidence: {finding['reason']}."
    return FINDING_TEXT[key](finding, source) + _seeds_text(finding)


# ---------------------------------------------------------------------------------------------
# The four questions
# ---------------------------------------------------------------------------------------------

QUESTION_TITLES = {
    "necessary": "Is pre-training necessary for this data?",
    "helpful": "Is it helpful, counting what the pre-training cost?",
    "more_data": "Do you need more data?",
    "how_long": "How long must you train from scratch?",
    "best_source": "Which pretrained source is best, and does any beat random init at the longest schedule?",
}


def _compute_text(c: dict | None, source: str) -> str:
    if c is None:
        return ""
    pre, total, rand, ratio = c["pretraining"], c["pretrained_total"], c["random"], c["pretrained_over_random"]
    if pre.get("images") is None:
        return f" What the {source} pre-training cost is not known ({pre['from']}), so total compute is not compared."
    parts = [f"{fmt_count(total[k])} {k} ({fmt_ratio(ratio[k])} random init's {fmt_count(rand[k])})"
             for k in ("images", "instances", "pixels") if total[k] is not None]
    return (f" Counting its pre-training ({fmt_count(pre['images'])} images, {pre['from']}), {source} at "
            f"{c['schedule_pretrained']} has seen " + ", ".join(parts) + f"; random init at {c['schedule_random']}.")


def _cannot_say_yet(finding: dict, straddles: str) -> str:
    """The answer to a question whose finding is not_enough_evidence, with what more seeds would do."""
    if finding.get("reason"):
        return f"Cannot say yet: {finding['reason']}."
    n = finding.get("seeds_to_settle")
    if n is not None:
        return f"Cannot say yet: {straddles}; about {n} seeds would settle it at the spread measured."
    if "seeds_projected_max" in finding:
        return f"Cannot say yet: {straddles}, with a mean too close to the margin for more seeds to settle it."
    return f"Cannot say yet: {straddles}."


def question_answers(summary: dict) -> list:
    """[(key, title, answer sentence)] for the report's first section."""
    q, findings = summary["questions"], summary["findings"]
    source = (summary.get("source_labels") or {}).get(q.get("source"), q.get("source")) or "pre-training"
    catch, fast, small = findings["catches_up"], findings["converges_faster"], findings["small_data_hurts_random"]
    out = []
    if q["necessary"]["answer"] == "no":
        text = (f"No. Random init reaches {source}'s best box AP within the {catch['margin_ap']:.1f} AP margin at "
                f"{catch['schedule_longest']} ({fmt_ap(catch['ap_random'])} against {fmt_ap(catch['ap_pretrained_best'])}).")
    elif q["necessary"]["answer"] == "yes":
        text = (f"Yes, for the schedules tried: at the longest ({catch['schedule_longest']}) random init is still "
                f"{fmt_ap(catch['gap_longest'])} AP behind {source}'s best ({fmt_ap(catch['ap_random'])} against "
                f"{fmt_ap(catch['ap_pretrained_best'])}).")
    else:
        text = _cannot_say_yet(catch, "the catch-up interval straddles the margin")
    out.append(("necessary", text))

    if q["helpful"]["answer"] == "yes":
        text = f"Yes, for speed: {speedup_phrase(fast, source)}."
        if fast["shortest_final"]:
            short = fast["shortest_final"]
            text += (f" At the shortest schedule ({fast['schedule_shortest']}) it ends {fmt_signed(short['mean'])} AP "
                     f"ahead ({fmt_ap(short['a_mean'])} against {fmt_ap(short['b_mean'])}).")
    elif q["helpful"]["answer"] == "no":
        text = f"Not for speed: {speedup_phrase(fast, source)}, within the {fmt_margin_ratio(fast['speedup_margin'])} margin."
    else:
        text = _cannot_say_yet(fast, "the speed-up's interval straddles its margin")
    out.append(("helpful", text + _compute_text(q["helpful"]["compute"], source)))

    if q["more_data"]["answer"] == "yes":
        text = (f"Yes, without pre-training: with {size_label(small['train_size'], small['train_images'])} random "
                f"init is {fmt_ap(small['gap']['mean'])} AP behind at its best.")
        if q["more_data"]["images_random_needs"] is not None:
            text += f" It needs about {fmt_int(q['more_data']['images_random_needs'])} images to come within the margin."
        else:
            text += " No size tried brings it within the margin."
    elif q["more_data"]["answer"] == "no":
        text = "No: random init is within the margin even with the smallest training set tried."
    else:
        text = _cannot_say_yet(small, "the smallest size's interval straddles the margin")
    out.append(("more_data", text + worth_text(summary.get("worth_in_images"), source)))

    out.append(("how_long", _how_long_answer(q["how_long"], source, catch)))
    if "best_source" in q:
        out.append(("best_source", _best_source_answer(q["best_source"], summary.get("source_labels") or {})))
    return [(key, QUESTION_TITLES[key], text) for key, text in out]


def worth_phrase(row: dict) -> str:
    """'100 images with pre-training are worth about 230 without (2.3x, 95% CI [1.8x, 2.9x], n=3)'."""
    n, m = row["train_images"], row["multiplier"]
    bound = {"at_least": "at least ", "at_most": "at most ", "mixed": "about "}.get(row["bound"], "about ")
    text = (f"{fmt_int(n)} images with pre-training are worth {bound}{fmt_int(row['images_needed'])} without "
            f"({fmt_ratio(m['mean'])}; {fmt_ratio_ci(m)})")
    if row["bound"] == "at_least":
        text += ": random init's best at the largest size tried is below pre-training's best here"
    elif row["bound"] == "at_most":
        text += ": random init's best at the smallest size tried is above pre-training's best here"
    elif row["bound"] == "mixed":
        text += ": the seeds fall on both sides of the sizes tried, so this is a rough figure"
    if m["mean"] < 1 and row["bound"] != "at_least":
        text += "; below 1x, pre-training is behind random init here"
    return text


def worth_text(worth: dict | None, source: str) -> str:
    """The data's worth at each training-set size, in labelled images random init would need."""
    if not worth or not worth["by_size"]:
        return ""
    return (f" What {source} is worth in labelled images (random init's best AP by size, interpolated in log size): "
            + "; ".join(worth_phrase(row) for row in worth["by_size"]) + ".")


def adaptive_sentences(summary: dict) -> list[str]:
    """The report's account of an adaptive study: what it stopped or skipped, why, and what it saved."""
    a = summary.get("adaptive")
    if not a:
        return []
    share = a["iters_trained"] / a["iters_planned"] if a["iters_planned"] else None
    out = [f"This study ran with --adaptive: {fmt_int(a['iters_trained'])} of the {fmt_int(a['iters_planned'])} "
           f"planned iterations were trained" + (f" ({share:.0%})." if share is not None else ".")]
    if not a["settled_runs"]:
        out.append("No verdict was settled early: every run went to its end.")
    for r in a["settled_runs"]:
        what = "skipped" if r["skipped"] else f"stopped at iteration {fmt_int(r['stopped_at_iter'])}"
        iv = r.get("interval") or [None, None]
        offset = r.get("seed_offset")
        seed = (f", the arm's {fmt_ap(r['predicted_final_ap'] - offset)} plus this seed's offset {offset:+.1f} AP"
                if offset else "")
        out.append(f"{r['name']} {what}; its final AP in the tables and verdicts is the forecast "
                   f"{fmt_ap(r['predicted_final_ap'])}{seed} (the arm's 80% interval {fmt_ap(iv[0])}-{fmt_ap(iv[1])}): "
                   f"{r['reason']}.")
    return out


def _how_long_answer(h: dict, source: str, catch: dict) -> str:
    if h["answer"] == "within_tried":
        return (f"{h['schedule']} ({fmt_int(h['iters'])} iterations): the shortest schedule at which random init is "
                f"within the margin of {source}'s best.")
    if h["answer"] == "longer_than_tried":
        return (f"Longer than any schedule tried (the longest was {h['longest_tried']}); `rethink forecast` "
                "estimates how much longer from the curves so far.")
    return "Cannot say yet: " + (catch.get("reason") or "the catch-up interval straddles the margin") + "."


def _best_source_answer(b: dict, labels: dict) -> str:
    def name(source):
        return labels.get(source, source)

    ranking = "; ".join(
        f"{name(r['source'])} {fmt_ap(r['ap_best'])} AP ({r['schedule']}; against random init at the longest "
        f"schedule {_vs(r['gap_to_random_at_longest'])}; " + (
            f"pre-training {fmt_count(r['pretraining_images'])} images)" if r["pretraining_images"] is not None
            else "pre-training cost not recorded)")
        for r in b["ranking"])
    ahead = [name(r["source"]) for r in b["ranking"] if r["ahead_of_random_at_longest"] == HOLDS]
    text = (f"{name(b['best'])} is best ({ranking}). "
            + (f"Ahead of random init by more than the margin at the longest schedule: {', '.join(ahead)}."
               if ahead else "None is ahead of random init by more than the margin at the longest schedule."))
    if b.get("by_size"):
        text += " At equal labelled data, best first: " + "; ".join(
            f"{size_label(e['train_size'], e['train_images'])}: "
            + ", ".join(f"{name(s['source'])} {fmt_ap(s['ap_best'])}" for s in e["sources"]) for e in b["by_size"]) + "."
    return text


def add_text(summary: dict) -> dict:
    """Put each finding's sentence under its "text" key and the answers under questions.<key>.text."""
    verdicts = summary["other_verdicts"]
    headline = summary["headline"] or {"source": "pre-training"}
    labels = summary.get("source_labels") or {}
    for source, findings in [(headline["source"], summary["findings"])] + [(v["source"], v["findings"]) for v in verdicts]:
        for key, finding in findings.items():
            finding["text"] = finding_text(key, finding, labels.get(source, source))
    for key, title, text in question_answers(summary):
        summary["questions"][key].update(question=title, text=text)
    return summary


# ---------------------------------------------------------------------------------------------
# The report's page: title, status, notes, headings, the runs' notes
# ---------------------------------------------------------------------------------------------

# The paper's findings, each as the question it answers, in the order a reader asks them.
FINDING_QUESTIONS = [
    ("catches_up", "Does random init catch up with pre-training's best model, given a longer schedule?"),
    ("converges_faster", "Does pre-training speed up convergence?"),
    ("small_data_hurts_random", "Does little data hurt random init, and how much does it need?"),
    ("localization", "Does pre-training give better localization (AP75)?"),
]

HEADINGS = {
    "answers": "Answers", "verdict": "Verdict", "forecast": "Forecast", "figures": "Figures", "tables": "Tables",
    "cells": "Per cell: mean ± std over seeds (n seeds)", "comparisons": "Pretrained minus random, paired by seed",
    "pretrain": "Pre-training records", "runs": "Runs", "not_drawn": "Not drawn yet:", "failed": "Failed runs:",
}
EMPTY = {"cells": "No run is done yet.", "comparisons": "No cell has both arms done with a common seed yet.",
         "runs": "The study lists no runs."}


def report_title(name: str) -> str:
    return f"{name}: pre-training vs random init"


def verdict_heading(source: str, other: dict, several_others: bool) -> str:
    heading = f"{source} vs random init"
    return heading + (f" ({other_label(other) or 'base config'})" if several_others else "")


def failed_run_line(name: str, iteration, reason: str | None) -> str:
    return f"{name} at iteration {fmt_int(iteration)}: {reason or 'no reason recorded'}"


def run_note(run: dict, failed: dict | None) -> str:
    """The runs table's note: why a run failed, the reason study.json gives, or where a fork starts."""
    if run["state"] == "failed":
        failed = failed or {}
        return f"failed at iteration {fmt_int(failed.get('iter'))}: {failed.get('reason') or 'no reason recorded'}"
    if run["reason"]:
        return run["reason"]
    if run["trunk"]:
        return f"fork of {run['trunk']} at {fmt_int(run['fork_iter'])}"
    return ""


def status_line(summary: dict) -> str:
    counts = summary["counts"]
    parts = [f"{counts.get(state, 0)} {state}" for state in ("done", "settled", "running", "pending", "failed")
             if counts.get(state, 0)]
    return (f"{summary['n_runs']} runs ({', '.join(parts) or 'none'}); "
            f"{summary['n_seeds']} seed{'s' if summary['n_seeds'] != 1 else ''}; "
            f"margin {summary['margin_ap']:.1f} AP; {int(summary['confidence'] * 100)}% t intervals over seeds, "
            "paired by seed.")


def incomplete_text(summary: dict) -> str | None:
    missing = summary["missing"]
    if not missing:
        return None
    by_state = {}
    for run in missing:
        by_state.setdefault(run["state"], []).append(run["name"])
    parts = ", ".join(f"{len(names)} {state}" for state, names in sorted(by_state.items()))
    names = [r["name"] for r in missing]
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return (f"This study is incomplete: {len(missing)} of {summary['n_runs']} runs are not done ({parts}): "
            f"{shown}. The findings, figures and tables use the done runs only; see the list of runs below.")


def significance_text(summary: dict) -> str | None:
    cell_n = summary.get("n_seeds_per_cell")
    if cell_n and cell_n["max"] == 1:
        return (f"Every cell has one seed: no claim of significance can be made. Findings compare the means "
                f"against the {summary['margin_ap']:.1f} AP margin only; run more seeds for confidence intervals.")
    if cell_n and cell_n["min"] == 1:
        return "Some cells have one seed: no claim of significance can be made for comparisons that rest on them."
    return None
