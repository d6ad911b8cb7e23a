"""The backtest of a study's own curves: cuts only where the study has been, cells scored only where they finished
since the cut, and the forecast's errors at each cut on a planted study where they are known."""

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from rethink.study.backtest import FRACTIONS, cut_iters, measured_cells, own_backtest, progress
from rethink.study.forecast import truncate_study
from rethink.study.results import load_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from study_fixture import PLANTED_BIAS, make_planted_study  # noqa: E402

GROUP = ("full", "{}")
LONGEST = 7200  # 8x of the fixture's 900-iteration 1x
RUNNING = {"random_8x_full_s0": "running", "pretrain_8x_full_s0": "running"}  # the trunks half-way, at 3,600


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    study = load_results(make_planted_study(tmp_path_factory.mktemp("finished")))
    return study, own_backtest(study)


@pytest.fixture(scope="module")
def in_progress(tmp_path_factory):
    study = load_results(make_planted_study(tmp_path_factory.mktemp("running"), states=RUNNING))
    return study, own_backtest(study)


def by_fraction(result: dict) -> dict:
    return {cut["fraction"]: cut for cut in result["cuts"]}


def test_cuts_are_made_only_below_where_the_study_is(in_progress):
    study, _ = in_progress
    assert progress(study) == {GROUP: 3600}
    assert cut_iters(study, 0.3) == {GROUP: 2160} and cut_iters(study, 0.4) == {GROUP: 2880}
    assert cut_iters(study, 0.6) == {} and cut_iters(study, 0.8) == {}  # 4,320 and 5,760: not reached yet


def test_finished_study_errors_are_the_planted_ones(finished):
    _, result = finished
    cuts = by_fraction(result)
    assert sorted(cuts) == list(FRACTIONS)
    for fraction in (0.3, 0.4):
        cut = cuts[fraction]
        # 2x was done at the cut; 4x and 8x finished since, off by their planted bias
        errors = {(r["init"], r["schedule"]): r["error"] for r in cut["scored"]}
        assert errors == pytest.approx({(init, s): -PLANTED_BIAS[s] for init in ("random", "pretrain")
                                        for s in ("4x", "8x")}, abs=1e-3)
        assert (cut["cells"], cut["forecast"], cut["covered"]) == (4, 4, 0)  # exact curves: intervals of no width
        assert cut["mean_abs_error"] == pytest.approx(2.0, abs=1e-3)
        assert cut["max_abs_error"] == pytest.approx(3.0, abs=1e-3)
        assert cut["mean_width"] == pytest.approx(0.0, abs=1e-3)
    for fraction in (0.6, 0.8):
        cut = cuts[fraction]
        # 4x done at the cut too: 8x's jump is learned from 2x's (exact) and 4x's (3 AP high), so its forecast lies
        # between the exact value and 3 AP above it, where 8x came out 1 AP above: off by -1 to +2 AP
        assert [(r["init"], r["schedule"]) for r in cut["scored"]] == [("random", "8x"), ("pretrain", "8x")]
        assert (cut["cells"], cut["forecast"]) == (2, 2)
        errors = [r["error"] for r in cut["scored"]]
        assert all(-1.0 - 1e-3 <= e <= 2.0 + 1e-3 for e in errors), errors
        assert cut["mean_abs_error"] == pytest.approx(sum(abs(e) for e in errors) / 2)
        assert cut["max_abs_error"] == pytest.approx(max(abs(e) for e in errors))
        assert cut["covered"] == sum(r["interval"][0] <= r["measured"] <= r["interval"][1] for r in cut["scored"])
        assert cut["cut_iters"] == [{"train_size": "full", "other": {}, "iters": int(fraction * LONGEST)}]


def test_in_progress_study_scores_only_the_cells_done_since_the_cut(in_progress):
    _, result = in_progress
    cuts = by_fraction(result)
    assert sorted(cuts) == [0.3, 0.4]
    for cut in cuts.values():
        # 4x finished since the cut; 8x is not done now, so it is not scored
        assert [(r["init"], r["schedule"]) for r in cut["scored"]] == [("random", "4x"), ("pretrain", "4x")]
        assert cut["mean_abs_error"] == pytest.approx(3.0, abs=1e-3)
        assert (cut["cells"], cut["forecast"], cut["covered"]) == (2, 2, 0)


def test_too_early_and_nothing_finished_since(in_progress):
    study, _ = in_progress
    early = own_backtest(truncate_study(study, {GROUP: 2000}))  # below 30% of 7,200
    assert early["cuts"] == []
    quiet = own_backtest(truncate_study(study, {GROUP: 2500}))  # past 30%, nothing done since
    assert [(c["fraction"], c["cells"], c["forecast"]) for c in quiet["cuts"]] == [(0.3, 0, 0)]


def test_a_settled_run_is_not_a_measurement(in_progress):
    study, _ = in_progress
    assert ("random", "full", "{}", 4.0) in measured_cells(study)
    runs = [replace(r, settled={"predicted_final_ap": 40.0}) if r.name == "random_4x_full_s0" else r
            for r in study.runs]
    assert ("random", "full", "{}", 4.0) not in measured_cells(replace(study, runs=runs))
