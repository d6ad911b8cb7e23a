"""converges_faster as a speed-up, and what pre-training is worth in labelled images, on planted curves whose
answers are known by construction."""

import math

import pytest
from study_fixture import make_study

from rethink.report import findings, stats, words
from rethink.study.results import load_results


def summary_of(path):
    return findings.summarize(load_results(path))


def ramp(t, top, length):
    """A curve that rises linearly to `top` over `length` iterations and stays there: linear interpolation between
    evaluations is exact on it, so a stretch of the length is measured exactly."""
    return top * min(1.0, t / length)


def saturating(t, top, tau):
    return top * (1.0 - math.exp(-t / tau))


def wiggle(t, seed, init, amplitude):
    """Deterministic noise, different per seed, iteration and arm."""
    return amplitude * math.sin(0.37 * t + 1.3 * seed + (0.0 if init == "random" else 2.1))


# ---------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------


def test_iters_to_level_interpolates_from_the_origin():
    points = [(100, 4.0), (200, 10.0), (300, 9.0), (400, 20.0)]
    assert stats.iters_to_level(points, 2.0) == pytest.approx(50.0)  # between (0, 0) and (100, 4)
    assert stats.iters_to_level(points, 7.0) == pytest.approx(150.0)
    assert stats.iters_to_level(points, 10.0) == pytest.approx(200.0)
    assert stats.iters_to_level(points, 15.0) == pytest.approx(354.5454, rel=1e-4)  # between (300, 9) and (400, 20)
    assert stats.iters_to_level(points, 21.0) is None


def test_a_curve_stretched_3x_gives_a_speedup_of_3():
    evals = range(100, 3001, 100)
    pre = [(t, saturating(t, 40.0, 400.0)) for t in evals]
    rand = [(t, saturating(t / 3.0, 40.0, 400.0)) for t in evals]
    result = stats.speedup_at_levels(pre, rand)
    assert result["median"] == pytest.approx(3.0, rel=0.05)
    assert result["lower_bound"] is False
    assert [r["fraction"] for r in result["levels"]] == list(stats.SPEEDUP_LEVELS)


def test_levels_random_never_reaches_give_a_lower_bound():
    evals = range(100, 2001, 100)
    pre = [(t, ramp(t, 40.0, 500.0)) for t in evals]
    rand = [(t, ramp(t, 20.0, 2000.0)) for t in evals]  # never above 20 AP: levels 60-90% of 40 are not reached
    result = stats.speedup_at_levels(pre, rand)
    unreached = [r for r in result["levels"] if r["lower_bound"]]
    assert [r["fraction"] for r in unreached] == [0.6, 0.7, 0.8, 0.9]
    assert all(r["ratio"] == pytest.approx(2000.0 / r["iters_pretrained"]) for r in unreached)
    assert result["lower_bound"] is True  # five of nine levels are bounds: the median is one of them


def test_images_needed_on_a_planted_log_linear_sweep():
    sizes = [100, 400, 1600]
    random_best = [10.0 + 5.0 * math.log(n) for n in sizes]  # random's best AP, linear in log size
    for n_true in (150, 400, 1000):
        n_hat, bound = stats.images_needed(sizes, random_best, 10.0 + 5.0 * math.log(n_true))
        assert n_hat == pytest.approx(n_true, rel=0.05) and bound is None
    assert stats.images_needed(sizes, random_best, 60.0) == (1600, "at_least")
    assert stats.images_needed(sizes, random_best, 20.0) == (100, "at_most")
    # a dip at the middle size is lifted: more data never hurts a model at its best
    n_hat, _ = stats.images_needed(sizes, [20.0, 18.0, 30.0], 25.0)
    assert n_hat == pytest.approx(math.exp(math.log(400) + 0.5 * math.log(4)))


def test_images_needed_reproduces_the_papers_worth_in_coco_images():
    # PAPER.md: best AP with fewer COCO images, random vs pretrained; log-linear between sizes
    sizes, random_best = [1000, 3500, 10000, 35000], [3.5, 9.3, 25.9, 36.3]
    pretrained_best = {1000: 9.9, 3500: 16.0, 10000: 26.0}
    worth = {n: stats.images_needed(sizes, random_best, ap)[0] for n, ap in pretrained_best.items()}
    assert worth[1000] == pytest.approx(3600, rel=0.02)
    assert worth[3500] == pytest.approx(5300, rel=0.02)
    assert worth[10000] == pytest.approx(10000, rel=0.02)


def test_ratio_interval_is_a_geometric_mean_with_a_log_t_interval():
    r = stats.ratio_interval([2.0, 4.0, 8.0])
    assert r["mean"] == pytest.approx(4.0)
    half = stats.scipy_stats.t.ppf(0.975, 2) * math.log(2.0) / math.sqrt(3)
    assert r["ci_low"] == pytest.approx(4.0 * math.exp(-half)) and r["ci_high"] == pytest.approx(4.0 * math.exp(half))
    one = stats.ratio_interval([3.0])
    assert one["mean"] == pytest.approx(3.0) and one["ci_low"] is None and one["n"] == 1


# ---------------------------------------------------------------------------------------------
# converges_faster on planted studies
# ---------------------------------------------------------------------------------------------


def test_papers_numbers_hold(tmp_path):
    """R50 GN from the paper: 2x finals 36.8 (random) vs 40.3 (pretrained), random within the margin by 6x.
    Pre-drop curves top*(1 - exp(-t/tau)), a 4 AP jump at the first LR drop; 1x = 900 iterations."""
    def ap(t, init, images, drops, seed):
        top, tau = (37.35, 569.0) if init == "random" else (37.1, 313.0)
        return saturating(min(t, drops[0]), top, tau) + (4.0 if t > drops[0] else 0.0) + wiggle(t, seed, init, 0.05)

    schedules = ("2x", "3x", "4x", "5x", "6x")
    summary = summary_of(make_study(tmp_path, schedules=schedules, sizes=("full",), ap_fn=ap))
    f = summary["findings"]["converges_faster"]
    assert f["status"] == "holds"
    assert f["shortest_final"]["a_mean"] == pytest.approx(40.3, abs=0.1)
    assert f["shortest_final"]["b_mean"] == pytest.approx(36.8, abs=0.1)
    assert f["speedup"]["mean"] == pytest.approx(569.0 / 313.0, rel=0.05)
    assert summary["findings"]["catches_up"]["status"] == "holds"


def test_too_short_a_shortest_schedule_still_holds_on_the_longer_curve(tmp_path):
    """Both arms near 6 AP at 2x (the shortest schedule teaches neither), pretrained 1-8 AP ahead for most of the
    longer curve: the speed-up sees it, the 2x finals do not."""
    def pre_drop(t, init):
        k = 3500.0 * (1.35 if init == "random" else 1.0)
        return 40.0 / (1.0 + (k / max(t, 1.0)) ** 2.5)

    def ap(t, init, images, drops, seed):
        return pre_drop(min(t, drops[0]), init) + (3.5 if t > drops[0] else 0.0) + wiggle(t, seed, init, 0.05)

    path = make_study(tmp_path, schedules=("2x", "6x"), sizes=("full",), margin_ap=2.0, ap_fn=ap)
    summary = summary_of(path)
    f = summary["findings"]["converges_faster"]
    short = f["shortest_final"]
    assert 4.0 < short["b_mean"] < short["a_mean"] < 8.0 and short["mean"] < 2.0  # the planted case
    leads = [p["ap_pretrained"] - p["ap_random"] for p in f["early_curve"]]
    assert sum(1.0 <= d <= 8.0 for d in leads) >= 0.6 * len(leads)
    assert f["status"] == "holds"
    assert f["speedup"]["mean"] == pytest.approx(1.35, rel=0.05)


def test_the_same_curve_up_to_noise_does_not_hold(tmp_path):
    def ap(t, init, images, drops, seed):
        return saturating(min(t, drops[0]), 40.0, 500.0) + (3.0 if t > drops[0] else 0.0) + wiggle(t, seed, init, 0.5)

    summary = summary_of(make_study(tmp_path, schedules=("2x", "4x"), sizes=("full",), ap_fn=ap))
    f = summary["findings"]["converges_faster"]
    assert f["status"] == "does_not_hold"
    assert 0.85 < f["speedup"]["mean"] < 1.15 and f["speedup"]["ci_high"] <= 1.25
    assert "does not speed up convergence here" in words.finding_text("converges_faster", f, "pretrain")
    answers = {key: text for key, _, text in words.question_answers(summary)}
    assert answers["helpful"].startswith("Not for speed:")


def test_seeds_that_disagree_are_not_enough_evidence(tmp_path):
    stretch = {0: 2.5, 1: 0.8, 2: 1.6}

    def ap(t, init, images, drops, seed):
        length = 1500.0 * (stretch[seed] if init == "random" else 1.0)
        return ramp(min(t, drops[0]), 40.0, length) + (3.0 if t > drops[0] else 0.0)

    summary = summary_of(make_study(tmp_path, schedules=("2x", "6x"), sizes=("full",), ap_fn=ap))
    f = summary["findings"]["converges_faster"]
    assert [p["median"] for p in f["speedup"]["per_seed"]] == pytest.approx([2.5, 0.8, 1.6])
    assert f["status"] == "not_enough_evidence"
    assert f["speedup"]["ci_low"] < 1.25 < f["speedup"]["ci_high"]
    answers = {key: text for key, _, text in words.question_answers(summary)}
    assert answers["helpful"].startswith("Cannot say yet: the speed-up's interval straddles its margin")


@pytest.mark.parametrize("stretches, status", [
    ({0: 1.26}, "holds"), ({0: 1.24}, "does_not_hold"),
    ({0: 1.27, 1: 1.28, 2: 1.29}, "holds"), ({0: 1.21, 1: 1.22, 2: 1.23}, "does_not_hold"),
])
def test_the_rule_at_its_margin(tmp_path, stretches, status):
    """Random init's ramp is pretrained's stretched by a planted factor per seed, measured exactly; the margin is
    1.25x: just above it holds, just below it does not, with one seed and with three."""
    def ap(t, init, images, drops, seed):
        length = 2000.0 * (stretches[seed] if init == "random" else 1.0)
        return ramp(min(t, drops[0]), 40.0, length) + (3.0 if t > drops[0] else 0.0)

    summary = summary_of(make_study(tmp_path, schedules=("2x", "6x"), sizes=("full",), seeds=tuple(stretches),
                                    ap_fn=ap))
    f = summary["findings"]["converges_faster"]
    assert [p["median"] for p in f["speedup"]["per_seed"]] == pytest.approx(list(stretches.values()), rel=1e-9)
    assert f["status"] == status


def test_a_still_unreached_level_cannot_rule_a_speedup_out(tmp_path):
    """Random init levels off at 11 AP while pretrained keeps climbing slowly to 24 by the drop: random never reaches
    pretrained's upper five levels, whose ratios are bounds, and the median is one of them, below the margin. A
    bound below the margin gives not_enough_evidence, not does_not_hold."""
    def ap(t, init, images, drops, seed):
        rising = ramp(min(t, drops[0]), 11.0, 600.0) if init == "random" else ramp(min(t, drops[0]), 40.0, 5000.0)
        return rising + (3.0 if t > drops[0] else 0.0)

    summary = summary_of(make_study(tmp_path, schedules=("2x", "4x"), sizes=("full",), ap_fn=ap))
    f = summary["findings"]["converges_faster"]
    assert [r["lower_bound"] for r in f["speedup"]["levels"]] == [False] * 4 + [True] * 5
    assert f["speedup"]["lower_bound"] is True and f["speedup"]["mean"] == pytest.approx(3000 / 2700)
    assert f["status"] == "not_enough_evidence"
    assert "known only from below" in words.finding_text("converges_faster", f, "pretrain")


# ---------------------------------------------------------------------------------------------
# Worth in labelled images on planted studies
# ---------------------------------------------------------------------------------------------


def _worth_study(tmp_path, factor):
    """Best AP at n images: random 10 + 5 ln(n); pretrained as random at factor * n."""
    def ap(t, init, images, drops, seed):
        n = images * (1.0 if init == "random" else factor)
        return saturating(t, 10.0 + 5.0 * math.log(n), 100.0) + wiggle(t, seed, init, 0.0)

    return summary_of(make_study(tmp_path, schedules=("2x",), sizes=(500, 2000, "full"), ap_fn=ap))


def test_worth_in_images_of_a_planted_size_sweep(tmp_path):
    summary = _worth_study(tmp_path, factor=2.0)
    rows = {r["train_images"]: r for r in summary["worth_in_images"]["by_size"]}
    assert rows[500]["images_needed"] == pytest.approx(1000, rel=0.05) and rows[500]["bound"] is None
    assert rows[2000]["images_needed"] == pytest.approx(4000, rel=0.05) and rows[2000]["bound"] is None
    assert rows[500]["multiplier"]["mean"] == pytest.approx(2.0, rel=0.05)
    # 16,000 images lie past the largest size tried (8,000): a lower bound, said so
    assert rows[8000]["bound"] == "at_least" and rows[8000]["images_needed"] == pytest.approx(8000)
    answers = {key: text for key, _, text in words.question_answers(summary)}
    assert "500 images with pre-training are worth about 1,000 without (2.0x; 95% CI [" in answers["more_data"]
    assert "8,000 images with pre-training are worth at least 8,000 without" in answers["more_data"]


def test_worth_below_one_where_pretrained_is_behind(tmp_path):
    summary = _worth_study(tmp_path, factor=0.5)
    rows = {r["train_images"]: r for r in summary["worth_in_images"]["by_size"]}
    assert rows[2000]["multiplier"]["mean"] == pytest.approx(0.5, rel=0.05) and rows[2000]["bound"] is None
    assert rows[8000]["multiplier"]["mean"] == pytest.approx(0.5, rel=0.05)
    assert rows[500]["bound"] == "at_most"  # 250 images lie below the smallest size tried
    text = words.worth_phrase(rows[2000])
    assert "worth about 1,000 without" in text and "pre-training is behind random init here" in text


def test_one_size_has_no_worth_in_images(tmp_path):
    summary = summary_of(make_study(tmp_path, sizes=("full",), schedules=("2x",)))
    assert summary["worth_in_images"] is None
