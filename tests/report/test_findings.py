"""Cells, comparisons and findings on fixture studies whose answers are known by construction."""

import json
import math

import pytest
from study_fixture import make_study, run_name

from rethink.errors import UserError
from rethink.fileio import read_jsonl
from rethink.report import stats


def summary_of(path):
    return stats.summarize(stats.load_study(path))


@pytest.fixture(scope="module")
def default_study(tmp_path_factory):
    path = make_study(tmp_path_factory.mktemp("study"))
    return path, summary_of(path)


def test_default_study_findings_all_hold(default_study):
    _, summary = default_study
    findings = summary["findings"]
    assert {k: v["status"] for k, v in findings.items()} == {
        "converges_faster": "holds", "catches_up": "holds",
        "small_data_hurts_random": "holds", "localization": "holds"}
    assert summary["findings_by_source"] == {"pretrain": findings}
    assert summary["n_seeds"] == 3 and summary["margin_ap"] == 1.0


def test_catches_up_numbers(default_study):
    _, summary = default_study
    f = summary["findings"]["catches_up"]
    assert f["schedule_shortest"] == "1x" and f["schedule_longest"] == "4x" and f["train_size"] == "full"
    assert f["first_schedule_within_margin"] == "4x"
    assert f["gap_shortest"] > 10 and 0 < f["gap_longest"] < 0.5
    assert f["gap_closed_fraction"] == pytest.approx((f["gap_shortest"] - f["gap_longest"]) / f["gap_shortest"])
    assert f["gap_longest_diff"]["ci_high"] <= 1.0
    assert [g["within_margin"] for g in f["gaps_by_schedule"]] == ["does_not_hold", "does_not_hold", "holds"]
    assert "catches up" in f["text"] and "4x" in f["text"]


def test_converges_faster_numbers(default_study):
    _, summary = default_study
    f = summary["findings"]["converges_faster"]
    assert f["schedule"] == "1x" and f["difference"]["significant"] is True
    assert f["ap_pretrained"] - f["ap_random"] == pytest.approx(f["difference"]["mean"])
    # fixture: pretrained tau 150 iterations, random 600 -> random needs several times more iterations
    assert f["iters_to_90_random"] / f["iters_to_90_pretrained"] == pytest.approx(f["iters_to_90_ratio"])
    assert f["iters_to_90_ratio"] > 3
    # 20,000 pre-training iterations of 64 images from the fixture's pretrain.json
    assert f["images_seen_pretraining"] == 1_280_000
    assert f["total_images_to_90_pretrained"] == 1_280_000 + f["iters_to_90_pretrained"] * 2
    assert f["early_iter"] == 600 and f["early_ap_pretrained"] > f["early_ap_random"] + 10


def test_converges_faster_iterations_to_reach_pretrained(default_study):
    """Random init's iterations to reach the AP pretrained has at its first evaluation of the longest curve."""
    path, summary = default_study
    f = summary["findings"]["converges_faster"]
    long, size = f["curve_schedule"], f["train_size"]
    firsts, reached = [], []
    for seed in (0, 1, 2):
        pre = [r for r in read_jsonl(path / "runs" / run_name("pretrain", long, size, seed) / "metrics.jsonl")
               if r["type"] == "eval"]
        firsts.append((pre[0]["iter"], pre[0]["bbox/AP"]))
    target = sum(ap for _, ap in firsts) / 3
    for seed in (0, 1, 2):
        rand = [r for r in read_jsonl(path / "runs" / run_name("random", long, size, seed) / "metrics.jsonl")
                if r["type"] == "eval"]
        reached.append(next(r["iter"] for r in rand if r["bbox/AP"] >= target))
    assert f["first_eval_iter_pretrained"] == pytest.approx(sum(i for i, _ in firsts) / 3)
    assert f["first_eval_ap_pretrained"] == pytest.approx(target)
    assert f["iters_random_to_reach_it"] == pytest.approx(sum(reached) / 3)
    assert f["iters_random_to_reach_it"] > 2 * f["first_eval_iter_pretrained"]  # fixture: random 4x slower
    assert f"random init needs {f['iters_random_to_reach_it']:,.0f} iterations to reach" in f["text"]


def test_small_data_numbers(default_study):
    _, summary = default_study
    f = summary["findings"]["small_data_hurts_random"]
    assert f["train_size"] == 500 and f["schedule"] == "4x"
    assert f["smallest_size_within_margin"] == 2000 and f["smallest_images_within_margin"] == 2000
    assert f["largest_size_behind"] == 500
    assert f["difference"]["mean"] > 4 and f["difference"]["ci_low"] > 0
    assert "2,000 training images" in f["text"]


def test_localization_numbers(default_study):
    _, summary = default_study
    f = summary["findings"]["localization"]
    assert f["gap_ap75"] < f["gap_ap50"]
    assert f["gap_ap75_minus_ap50"]["mean"] == pytest.approx(f["gap_ap75"] - f["gap_ap50"])
    assert f["tolerance_ap"] == 1.0


def test_cells_equal_means_of_final_json(default_study):
    path, summary = default_study
    assert len(summary["cells"]) == 2 * 3 * 3
    for cell in summary["cells"]:
        finals = [json.loads((path / "runs" / name / "final.json").read_text()) for name in cell["runs"]]
        assert cell["n_seeds"] == 3 == len(finals)
        for key in ("bbox/AP", "bbox/AP50", "bbox/AP75"):
            values = [f["final"][key] for f in finals]
            mean = sum(values) / 3
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
            assert cell["metrics"][key]["mean"] == pytest.approx(mean, abs=1e-12)
            assert cell["metrics"][key]["std"] == pytest.approx(std, abs=1e-12)
        best = [f["best"]["bbox/AP"] for f in finals]
        assert cell["best"]["bbox/AP"]["mean"] == pytest.approx(sum(best) / 3, abs=1e-12)
        assert cell["wall_time_s"]["mean"] == pytest.approx(sum(f["wall_time_s"] for f in finals) / 3)
    # NaN APs of the smallest size are left out, not averaged in
    small = next(c for c in summary["cells"] if c["train_size"] == 500)
    assert small["metrics"]["bbox/APs"] == {"mean": None, "std": None, "n": 0}


def test_comparisons_are_paired_by_seed(default_study):
    path, summary = default_study
    comp = next(c for c in summary["comparisons"] if c["schedule"] == "2x" and c["train_size"] == 2000)
    diffs = []
    for seed in (0, 1, 2):
        a = json.loads((path / "runs" / run_name("pretrain", "2x", 2000, seed) / "final.json").read_text())
        b = json.loads((path / "runs" / run_name("random", "2x", 2000, seed) / "final.json").read_text())
        diffs.append(a["final"]["bbox/AP"] - b["final"]["bbox/AP"])
    expected = stats.paired_difference(diffs, [0.0, 0.0, 0.0])
    assert comp["final"]["bbox/AP"]["mean"] == pytest.approx(expected["mean"])
    assert comp["final"]["bbox/AP"]["ci_low"] == pytest.approx(expected["ci_low"])
    assert comp["seeds"] == [0, 1, 2]


def test_random_that_does_not_catch_up(tmp_path):
    summary = summary_of(make_study(tmp_path, schedules=("1x", "2x")))
    f = summary["findings"]["catches_up"]
    assert f["status"] == "does_not_hold"
    assert f["first_schedule_within_margin"] is None
    assert 0.4 < f["gap_closed_fraction"] < 0.8
    assert f"closed {f['gap_closed_fraction']:.0%}" in f["text"]
    # at least half of the shortest schedule's gap closed: said so, in the text and as a flag
    most = f["gap_closed_fraction"] >= 0.5
    assert f["closes_most_of_gap"] is most
    assert f["text"].startswith("Random init closes most of the gap" if most else "Random init does not catch up")


def test_pretraining_that_helps_localization(tmp_path):
    summary = summary_of(make_study(tmp_path, sizes=("full",), schedules=("2x",), random_ap75_bonus=-3.0))
    f = summary["findings"]["localization"]
    assert f["status"] == "does_not_hold"
    assert f["gap_ap75"] - f["gap_ap50"] > 1.0


def test_one_schedule_one_size_is_not_enough_evidence(tmp_path):
    summary = summary_of(make_study(tmp_path, sizes=("full",), schedules=("2x",)))
    findings = summary["findings"]
    assert findings["catches_up"]["status"] == "not_enough_evidence"
    assert "only one schedule" in findings["catches_up"]["reason"]
    assert findings["small_data_hurts_random"]["status"] == "not_enough_evidence"
    assert "only one training-set size" in findings["small_data_hurts_random"]["reason"]
    assert findings["converges_faster"]["status"] == "holds"


def test_one_seed_makes_no_significance_claim(tmp_path):
    summary = summary_of(make_study(tmp_path, seeds=(0,)))
    for key, finding in summary["findings"].items():
        assert finding["n"] == 1, key
        assert stats.NO_SIGNIFICANCE in finding["text"], key
    assert summary["findings"]["catches_up"]["status"] == "holds"  # the margin alone decides
    assert summary["findings"]["converges_faster"]["difference"]["ci_low"] is None
    assert all(c["final"]["bbox/AP"]["significant"] is None for c in summary["comparisons"])
    assert all(c["metrics"]["bbox/AP"]["std"] is None for c in summary["cells"])


def test_failed_pending_running_runs_are_listed_and_left_out(tmp_path):
    states = {run_name("random", "4x", 500, 1): "failed", run_name("pretrain", "2x", "full", 2): "pending",
              run_name("pretrain", "4x", "full", 0): "running"}
    summary = summary_of(make_study(tmp_path, states=dict(states)))
    assert {m["name"]: m["state"] for m in summary["missing"]} == states
    assert summary["counts"] == {"done": 51, "running": 1, "pending": 1, "failed": 1}
    (failed,) = summary["failed"]
    assert failed["name"] == run_name("random", "4x", 500, 1)
    assert failed["iter"] == 3000 and "non-finite loss" in failed["reason"]
    cell = next(c for c in summary["cells"]
                if c["init"] == "random" and c["schedule"] == "4x" and c["train_size"] == 500)
    assert cell["n_seeds"] == 2 and cell["seeds"] == [0, 2]
    # the running trunk is not a done run, so that cell pairs the two seeds left
    comp = next(c for c in summary["comparisons"] if c["schedule"] == "4x" and c["train_size"] == "full")
    assert comp["seeds"] == [1, 2]
    running = next(m for m in summary["missing"] if m["state"] == "running")
    assert running["last_iter"] == 1800 and running["iters"] == 3600


def test_several_sources_each_compared_with_random(tmp_path):
    summary = summary_of(make_study(tmp_path, inits=("random", "pretrain", "imagenet")))
    assert summary["sources"] == ["pretrain", "imagenet"]
    assert list(summary["findings_by_source"]) == ["pretrain", "imagenet"]
    assert summary["findings"] == summary["findings_by_source"]["pretrain"]
    imagenet = summary["findings_by_source"]["imagenet"]["converges_faster"]
    assert imagenet["images_seen_pretraining"] is None and "not recorded" in imagenet["text"]
    assert summary["pretrain"]["imagenet"] is None


def test_other_axis_values_get_their_own_cells_and_verdicts(tmp_path):
    summary = summary_of(make_study(tmp_path, sizes=(500, "full"), schedules=("1x", "4x"), seeds=(0,),
                                    others=({"model.norm": "gn"}, {"model.norm": "syncbn"})))
    assert len(summary["cells"]) == 2 * 2 * 2 * 2
    assert [v["other"] for v in summary["verdicts"]] == [{"model.norm": "gn"}, {"model.norm": "syncbn"}]
    assert summary["findings"] == summary["verdicts"][0]["findings"]


def test_missing_study_json_and_default_margin(tmp_path):
    with pytest.raises(UserError, match="no study.json"):
        stats.load_study(tmp_path)
    path = make_study(tmp_path / "s", sizes=("full",), schedules=("2x",), seeds=(0,), margin_ap=None)
    assert stats.load_study(path).margin_ap == 1.0


def test_partial_last_metrics_line_is_ignored(tmp_path):
    path = make_study(tmp_path, sizes=("full",), schedules=("2x",), seeds=(0,))
    metrics = path / "runs" / run_name("random", "2x", "full", 0) / "metrics.jsonl"
    before = stats.load_study(path).runs[0].evals
    with open(metrics, "a") as f:
        f.write('{"type": "eval", "iter": 99999, "bbox/A')  # a write cut short by a kill
    after = stats.load_study(path).runs[0].evals
    assert after == before
