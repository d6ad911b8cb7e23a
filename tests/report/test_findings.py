"""Cells, comparisons and findings on fixture studies whose answers are known by construction."""

import json
import math

import pytest
from study_fixture import make_study, run_name

from rethink.errors import UserError
from rethink.fileio import read_jsonl
from rethink.report import findings, stats, words
from rethink.study.results import load_results


def summary_of(path):
    return findings.summarize(load_results(path))


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
    assert summary["headline"] == {"source": "pretrain", "other": {}} and summary["other_verdicts"] == []
    assert summary["n_seeds"] == 3 and summary["margin_ap"] == 1.0


def test_catches_up_numbers(default_study):
    _, summary = default_study
    f = summary["findings"]["catches_up"]
    assert f["schedule_shortest"] == "1x" and f["schedule_longest"] == "4x" and f["train_size"] == "full"
    assert f["schedule_best_pretrained"] == "4x" and f["pretrained_degrades"] == "does_not_hold"
    assert f["first_schedule_within_margin"] == "4x"
    assert f["gap_shortest"] > 10 and 0 < f["gap_longest"] < 0.5
    assert f["gap_closed_fraction"] == pytest.approx((f["gap_shortest"] - f["gap_longest"]) / f["gap_shortest"])
    assert f["gap"]["ci_high"] <= 1.0 and f["closes_most_of_gap"] is False and f["random_ahead"] is False
    assert [g["within_margin"] for g in f["gaps_by_schedule"]] == ["does_not_hold", "does_not_hold", "holds"]
    assert [g["iters"] for g in f["gaps_by_schedule"]] == [900, 1800, 3600]
    text = words.finding_text("catches_up", f, "pretrain")
    assert text.startswith("Random init catches up") and "4x" in text


def test_converges_faster_reads_the_early_curve(default_study):
    path, summary = default_study
    f = summary["findings"]["converges_faster"]
    # every evaluation of the 4x runs up to its first LR drop (3,000), plus the 1x schedule's final AP
    assert f["early_until_iter"] == 3000 and f["early_points"] == 30 + 1
    assert [p["iter"] for p in f["early_curve"]] == list(range(100, 3001, 100))
    leads = []
    for seed in (0, 1, 2):
        pre, rand = [], []
        for init, out in (("pretrain", pre), ("random", rand)):
            rows = read_jsonl(path / "runs" / run_name(init, "4x", "full", seed) / "metrics.jsonl")
            out += [r["bbox/AP"] for r in rows if r["type"] == "eval" and r["iter"] <= 3000]
            final = json.loads((path / "runs" / run_name(init, "1x", "full", seed) / "final.json").read_text())
            out.append(final["final"]["bbox/AP"])
        leads.append(sum(pre) / len(pre) - sum(rand) / len(rand))
    expected = stats.paired_difference(leads, [0.0] * 3)
    assert f["lead"]["mean"] == pytest.approx(expected["mean"])
    assert f["lead"]["ci_low"] == pytest.approx(expected["ci_low"]) and f["lead"]["ci_low"] > 1.0
    assert f["iters_to_90_ratio"] > 3  # fixture: pretrained tau 150 iterations, random 600


def test_converges_faster_speedup_from_the_run_files(default_study):
    """The speed-up recomputed from the metrics files: per seed, the median over AP levels (10-90% of pretrained's
    best before the 4x run's first LR drop) of random's iterations over pretrained's, linearly interpolated."""
    path, summary = default_study
    f = summary["findings"]["converges_faster"]
    medians = []
    for seed in (0, 1, 2):
        curves = {}
        for init in ("pretrain", "random"):
            rows = read_jsonl(path / "runs" / run_name(init, "4x", "full", seed) / "metrics.jsonl")
            curves[init] = [(r["iter"], r["bbox/AP"]) for r in rows if r["type"] == "eval" and r["iter"] <= 3000]
        best = max(ap for _, ap in curves["pretrain"])

        def reach(curve, level):
            prev = (0, 0.0)
            for t, ap in curve:
                if ap >= level:
                    return prev[0] + (level - prev[1]) / (ap - prev[1]) * (t - prev[0])
                prev = (t, ap)

        ratios = sorted(reach(curves["random"], k / 10 * best) / reach(curves["pretrain"], k / 10 * best)
                        for k in range(1, 10))
        medians.append(ratios[4])
    expected = math.exp(sum(math.log(m) for m in medians) / 3)
    assert f["speedup"]["mean"] == pytest.approx(expected)
    assert [p["median"] for p in f["speedup"]["per_seed"]] == pytest.approx(medians)
    assert 3.5 < f["speedup"]["ci_low"] < f["speedup"]["ci_high"] < 4.2  # fixture: tau 150 (pretrained), 600 (random)
    assert f["speedup"]["lower_bound"] is False and f["speedup_margin"] == 1.25
    text = words.finding_text("converges_faster", f, "pretrain")
    assert text.startswith("Pre-training (pretrain) speeds up convergence: pretrain reaches each AP level from")
    assert (f"{f['speedup']['mean']:.1f}x sooner than random init (median over the levels; 95% CI "
            f"[{f['speedup']['ci_low']:.1f}x, {f['speedup']['ci_high']:.1f}x], n=3), more than the 1.25x margin") in text


def test_small_data_numbers(default_study):
    _, summary = default_study
    f = summary["findings"]["small_data_hurts_random"]
    assert f["train_size"] == 500
    assert f["smallest_size_within_margin"] == 2000 and f["smallest_images_within_margin"] == 2000
    assert f["largest_size_behind"] == 500
    assert f["gap"]["mean"] > 4 and f["gap"]["ci_low"] > 1.0
    assert "2,000 training images" in words.finding_text("small_data_hurts_random", f, "pretrain")


def test_localization_numbers(default_study):
    _, summary = default_study
    f = summary["findings"]["localization"]
    assert f["schedule"] == "4x"  # where random is closest on AP
    assert f["gap_ap75"]["mean"] < 0  # random init localizes slightly better (fixture bonus 0.8)
    assert f["ap75_gap_minus_ap50_gap"] == pytest.approx(f["gap_ap75"]["mean"] - f["gap_ap50"]["mean"])
    assert f["margin_ap"] == 1.0


def test_questions_answered_from_the_findings(default_study):
    _, summary = default_study
    q = summary["questions"]
    assert q["source"] == "pretrain"
    assert q["necessary"]["answer"] == "no" and q["helpful"]["answer"] == "yes"
    assert q["more_data"] == {**q["more_data"], "answer": "yes", "images_random_needs": 2000,
                              "largest_images_behind": 500}
    assert q["how_long"]["answer"] == "within_tried" and q["how_long"]["schedule"] == "4x"
    assert q["how_long"]["iters"] == 3600
    c = q["helpful"]["compute"]
    # pre-training: 20,000 iterations of 64 images (pretrain.json), plus 4x fine-tuning of 3,600 x 2 images
    assert c["pretraining"]["images"] == 1_280_000 and "measured" in c["pretraining"]["from"]
    assert c["pretrained_total"]["images"] == 1_280_000 + 7_200 and c["random"]["images"] == 7_200
    assert c["pretrained_total"]["pixels"] == (1_280_000 + 7_200) * 64 * 64
    assert c["pretrained_over_random"]["images"] == pytest.approx((1_280_000 + 7_200) / 7_200)
    answers = dict((k, t) for k, _, t in words.question_answers(summary))
    assert answers["necessary"].startswith("No.") and answers["how_long"].startswith("4x (3,600 iterations)")
    assert "1.29M images" in answers["helpful"]
    assert "best_source" not in q


def test_pretrained_peaking_early_on_small_data_is_judged_at_its_best(tmp_path):
    """Pretrained peaks at 1x on 500 images and degrades: at the longest schedule alone random looks fine."""
    summary = summary_of(make_study(tmp_path, pretrained_decay={500: 5.0}))
    f = summary["findings"]["small_data_hurts_random"]
    assert f["status"] == "holds"
    small = f["by_size"][0]
    assert small["best_schedule_pretrained"] == "1x" and small["best_schedule_random"] == "4x"
    assert f["gap"]["ci_low"] > 1.0
    # the longest schedule alone would hide it: there random is within the margin of pretrained's best AP
    at_4x = next(c for c in summary["comparisons"] if c["schedule"] == "4x" and c["train_size"] == 500)
    assert at_4x["best"]["bbox/AP"]["ci_high"] < 1.0


def test_pretrained_degrading_with_longer_schedules_is_not_caught_up_by_a_worse_model(tmp_path):
    summary = summary_of(make_study(tmp_path, pretrained_decay={8000: 1.0}, random_plateau_scale=0.92))
    f = summary["findings"]["catches_up"]
    assert f["status"] == "does_not_hold" and f["schedule_best_pretrained"] == "1x"
    assert f["gap"]["ci_low"] > 1.0 and f["first_schedule_within_margin"] is None
    assert f["pretrained_degrades"] == "holds" and f["pretrained_degradation"]["ci_low"] > 1.0
    # at the longest schedule random init equals the (degraded) pretrained model: the old reading
    at_4x = next(c for c in summary["comparisons"] if c["schedule"] == "4x" and c["train_size"] == "full")
    assert abs(at_4x["final"]["bbox/AP"]["mean"]) < 0.5
    assert f["closes_most_of_gap"] is True  # does_not_hold, and most of the 1x gap closed
    assert summary["questions"]["how_long"]["answer"] == "longer_than_tried"
    text = words.finding_text("catches_up", f, "pretrain")
    assert "pretrain degrades with longer training" in text and "1x" in text


def test_single_long_schedule_gets_a_verdict(tmp_path):
    summary = summary_of(make_study(tmp_path, sizes=("full",), schedules=("4x",)))
    findings = summary["findings"]
    assert findings["converges_faster"]["status"] == "holds"
    assert findings["converges_faster"]["shortest_final"] is None
    assert findings["converges_faster"]["early_points"] == 30
    assert findings["catches_up"]["status"] == "holds"
    assert findings["catches_up"]["gap_closed_fraction"] is None
    assert findings["small_data_hurts_random"]["status"] == "not_enough_evidence"
    assert "only one training-set size" in findings["small_data_hurts_random"]["reason"]


def test_pretrained_ahead_equally_at_ap50_and_ap75_helps_localization(tmp_path):
    summary = summary_of(make_study(tmp_path, sizes=("full",), random_ap75_bonus=0.0,
                                    pretrained_ap50_bonus=3.0, pretrained_ap75_bonus=3.0))
    f = summary["findings"]["localization"]
    assert f["status"] == "does_not_hold"
    assert f["gap_ap75"]["ci_low"] > 1.0
    assert abs(f["ap75_gap_minus_ap50_gap"]) < 0.5  # equal gaps: a difference rule would have said "holds"
    assert "better localization here" in words.finding_text("localization", f, "pretrain")


def test_pretraining_that_helps_localization(tmp_path):
    summary = summary_of(make_study(tmp_path, sizes=("full",), schedules=("2x",), random_ap75_bonus=-3.0))
    f = summary["findings"]["localization"]
    assert f["status"] == "does_not_hold"
    assert f["gap_ap75"]["mean"] > 1.0


def test_interval_straddling_the_margin_is_not_enough_evidence(tmp_path):
    summary = summary_of(make_study(tmp_path, noise_ap=1.5))
    catch = summary["findings"]["catches_up"]
    assert catch["status"] == "not_enough_evidence"
    assert catch["gap"]["ci_low"] < 1.0 < catch["gap"]["ci_high"]
    assert catch["closes_most_of_gap"] is False and catch["first_schedule_within_margin"] is None
    assert summary["findings"]["localization"]["status"] == "not_enough_evidence"
    assert summary["questions"]["necessary"]["answer"] == "unclear"
    answers = {key: text for key, _, text in words.question_answers(summary)}
    assert answers["necessary"] == ("Cannot say yet: the catch-up interval straddles the margin; about "
                                    f"{catch['seeds_to_settle']} seeds would settle it at the spread measured.")
    # the lead early in training is still far above the margin despite the noise
    assert summary["findings"]["converges_faster"]["lead"]["ci_low"] > 1.0
    # an unsettled finding says how many seeds would settle it, and that number settles it when its mean holds
    n = catch["seeds_to_settle"]
    assert n is not None and n > 3
    gap = catch["gap"]
    side = -1 if gap["mean"] < 1.0 else 1
    half = stats.scipy_stats.t.ppf(0.975, n - 1) * gap["std"] / math.sqrt(n)
    assert side * (gap["mean"] - side * half - 1.0) > 0
    assert f"about {n} seeds would settle it" in words.finding_text("catches_up", catch, "pretrain")
    # a settled finding carries no projection and no sentence about it
    fast = summary["findings"]["converges_faster"]
    assert fast["status"] == "holds" and fast["seeds_to_settle"] is None
    assert "seeds would" not in words.finding_text("converges_faster", fast, "pretrain")


@pytest.mark.parametrize("plateau, closed, most", [(1.0, (0.55, 0.75), True), (0.8, (0.25, 0.45), False)])
def test_random_that_does_not_catch_up(tmp_path, plateau, closed, most):
    """Both sides of the 0.5 rule: the fixture's random curve closes 63% of the gap at 2x (plateau as pretrained's),
    37% with its plateau scaled by 0.8; neither is within the margin."""
    summary = summary_of(make_study(tmp_path, schedules=("1x", "2x"), random_plateau_scale=plateau))
    f = summary["findings"]["catches_up"]
    assert f["status"] == "does_not_hold"
    assert f["first_schedule_within_margin"] is None
    assert closed[0] < f["gap_closed_fraction"] < closed[1]
    assert f["closes_most_of_gap"] is most
    text = words.finding_text("catches_up", f, "pretrain")
    assert f"closed {f['gap_closed_fraction']:.0%}" in text
    assert text.startswith("Random init closes most of the gap" if most else "Random init does not catch up")


def test_stated_init_cost_for_imagenet(tmp_path):
    cost = {"imagenet": {"images_per_epoch": 1_281_167, "epochs": 100, "resolution": 224, "note": "paper"}}
    summary = summary_of(make_study(tmp_path, inits=("random", "imagenet"), pretrain_records=(), init_cost=cost))
    c = summary["pretraining_cost"]["imagenet"]
    assert c["images"] == 128_116_700 and c["pixels"] == 128_116_700 * 224 * 224
    assert c["from"].startswith("stated in the study")
    total = summary["compute"]["pretrained_total"]
    assert total["images"] == 128_116_700 + 3_600 * 2
    # the compute figure stacks the same counts the text uses (an imagenet arm gets its hatched pre-training bar)
    from rethink.report.figures import _pretraining_seen

    costs = summary["pretraining_cost"]
    assert _pretraining_seen(costs, "imagenet", "images_seen") == 128_116_700
    assert _pretraining_seen(costs, "imagenet", "pixels_seen") == 128_116_700 * 224 * 224
    assert _pretraining_seen(costs, "random", "images_seen") is None


def test_imagenet_cost_from_the_weights_metadata_and_stated_epochs(tmp_path):
    """timm's metadata names the data set and resolution; the study states the epochs; the report combines."""
    cost = {"imagenet": {"epochs": 600, "note": "timm's a1h recipe"}}
    path = make_study(tmp_path, inits=("random", "imagenet"), sizes=("full",), pretrain_records=(), init_cost=cost)
    for run_dir in (path / "runs").glob("imagenet_*"):
        (run_dir / "init.json").write_text(json.dumps({"source": "timm:resnet50_gn.a1h_in1k"}))
    summary = summary_of(path)
    c = summary["pretraining_cost"]["imagenet"]
    assert c["images_per_epoch"] == 1_281_167 and c["resolution"] == 224 and c["epochs"] == 600
    assert c["images"] == 1_281_167 * 600 and c["pixels"] == 1_281_167 * 600 * 224 * 224
    assert "ImageNet-1k, 224 px from timm's metadata of resnet50_gn.a1h_in1k" in c["from"]
    assert "stated in the study (report.init_cost): timm's a1h recipe" in c["from"]
    # without the stated epochs: the per-epoch size is known, the total is not, and the report says what to state
    (path / "study.json").write_text(json.dumps({**json.loads((path / "study.json").read_text()), "init_cost": {}}))
    c = summary_of(path)["pretraining_cost"]["imagenet"]
    assert c["images"] is None and c["images_per_epoch"] == 1_281_167 and "epochs is not recorded" in c["from"]


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


def test_one_seed_makes_no_significance_claim(tmp_path):
    summary = summary_of(make_study(tmp_path, seeds=(0,)))
    for key, finding in summary["findings"].items():
        assert finding["n"] == 1, key
        assert words.NO_SIGNIFICANCE in words.finding_text(key, finding, "pretrain"), key
    assert summary["findings"]["catches_up"]["status"] == "holds"  # the margin alone decides
    assert summary["findings"]["converges_faster"]["lead"]["ci_low"] is None
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
    assert [v["source"] for v in findings.all_verdicts(summary)] == ["pretrain", "imagenet"]
    assert summary["headline"]["source"] == "pretrain"
    assert summary["pretrain"]["imagenet"] is None
    cost = summary["pretraining_cost"]["imagenet"]
    assert cost["images"] is None and cost["from"] == "not recorded"
    best = summary["questions"]["best_source"]
    # the fixture's second source plateaus 1% lower and converges slower
    assert best["best"] == "pretrain" and [r["source"] for r in best["ranking"]] == ["pretrain", "imagenet"]
    assert best["any_ahead_at_longest"] is False  # random init is within the margin at 4x
    # each source with its paired gap to random init (3 seeds: an interval) and its pre-training cost
    top = best["ranking"][0]
    gap = top["gap_to_random_at_longest"]
    assert gap["n"] == 3 and gap["ci_low"] < gap["mean"] < gap["ci_high"]
    assert top["pretraining_images"] == summary["pretraining_cost"]["pretrain"]["images"] > 0
    assert best["ranking"][1]["pretraining_images"] is None  # imagenet: not recorded
    # at equal labelled data, per size: the same order at every size here (imagenet plateaus 1% lower)
    sizes = [e["train_size"] for e in best["by_size"]]
    assert sizes == [c["train_size"] for c in summary["findings"]["small_data_hurts_random"]["by_size"]]
    for entry in best["by_size"]:
        assert [s["source"] for s in entry["sources"]] == ["pretrain", "imagenet"]
        assert entry["sources"][0]["ap_best"] > entry["sources"][1]["ap_best"]
    text = words.add_text(summary)["questions"]["best_source"]["text"]
    assert "95% CI [" in text and "At equal labelled data, best first: " in text


def test_other_axis_values_get_their_own_cells_and_verdicts(tmp_path):
    summary = summary_of(make_study(tmp_path, sizes=(500, "full"), schedules=("1x", "4x"), seeds=(0,),
                                    others=({"model.norm": "gn"}, {"model.norm": "syncbn"})))
    assert len(summary["cells"]) == 2 * 2 * 2 * 2
    assert [v["other"] for v in findings.all_verdicts(summary)] == [{"model.norm": "gn"}, {"model.norm": "syncbn"}]
    assert findings.all_verdicts(summary)[0]["findings"] is summary["findings"]


def test_missing_study_json_and_default_margin(tmp_path):
    with pytest.raises(UserError, match="no study.json"):
        load_results(tmp_path)
    path = make_study(tmp_path / "s", sizes=("full",), schedules=("2x",), seeds=(0,), margin_ap=None)
    assert load_results(path).margin_ap == 1.0


def test_partial_last_metrics_line_is_ignored(tmp_path):
    path = make_study(tmp_path, sizes=("full",), schedules=("2x",), seeds=(0,))
    metrics = path / "runs" / run_name("random", "2x", "full", 0) / "metrics.jsonl"
    before = load_results(path).runs[0].evals
    with open(metrics, "a") as f:
        f.write('{"type": "eval", "iter": 99999, "bbox/A')  # a write cut short by a kill
    after = load_results(path).runs[0].evals
    assert after == before


def test_broken_run_files_are_listed_and_the_rest_still_reports(tmp_path):
    path = make_study(tmp_path, sizes=("full",), schedules=("1x", "2x"))
    broken_metrics = run_name("random", "2x", "full", 1)
    broken_final = run_name("pretrain", "1x", "full", 2)
    metrics = path / "runs" / broken_metrics / "metrics.jsonl"
    metrics.write_text('{"type": "eval", "iter": 1}\nnot json at all\n' + metrics.read_text())
    (path / "runs" / broken_final / "final.json").write_text("{\"status\": \"do")
    summary = summary_of(path)
    missing = {m["name"]: m["reason"] for m in summary["missing"]}
    assert set(missing) == {broken_metrics, broken_final}
    assert missing[broken_metrics] == f"unreadable run files: {metrics}: line 2 is not valid JSON"
    assert "final.json: not valid JSON" in missing[broken_final]
    f = summary["findings"]["catches_up"]
    assert f["status"] == "does_not_hold" and f["gap"]["seeds"] == [0, 2]  # the pairs left at 2x


def test_sources_are_named_by_their_pretraining_label(tmp_path):
    """A source's pretrain.json label ("supervised on shapes") names it in the sentences and the legends; a source
    without one keeps its step name."""
    from rethink.report.figure_style import init_label

    path = make_study(tmp_path, inits=("random", "pretrain", "imagenet"))
    record = path / "pretrain" / "pretrain" / "pretrain.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "label": "supervised on shapes"}))
    study = load_results(path)
    summary = words.add_text(findings.summarize(study))
    assert summary["source_labels"] == {"pretrain": "supervised on shapes", "imagenet": "imagenet"}
    assert "supervised on shapes" in summary["findings"]["catches_up"]["text"]
    answers = {key: text for key, _, text in words.question_answers(summary)}
    assert answers["best_source"].startswith("supervised on shapes is best")
    assert init_label("pretrain", study) == "supervised on shapes"
    assert init_label("imagenet", study) == "pretrained: imagenet" and init_label("random", study) == "random init"
