"""`rethink study --adaptive`: the settle rule on planted forecasts, the check that a settled size changes no verdict
of the report (planted studies of the report's fixture), and a real tiny adaptive study that stops its trunks once
settled, reports the forecasts it used, and ends the same when killed and restarted."""

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli, same, write_tiny_study
from rethink.fileio import read_json, read_jsonl
from rethink.pipeline import report_judge
from rethink.study.adaptive import (SEGMENTS, SUBSTITUTIONS, decide, segment_stop, settle, unforecastable,
                                    with_settled)
from rethink.study.forecast import truncate_study
from rethink.study.results import _settled_final, load_results
from rethink.study.store import state_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from study_fixture import make_study  # noqa: E402


def cell(init, schedule, iters, interval=None, observed=None, size="full"):
    mid = None if interval is None else sum(interval) / 2
    return {"init": init, "train_size": size, "other": {}, "schedule": schedule, "iters": iters,
            "predicted_final_ap": mid, "interval": interval, "observed_final_ap": observed, "planned": True}


def test_segment_stops_land_on_evaluations():
    assert segment_stop(7000, 0.3, 250) == 2250  # 2100 rounded up to the next evaluation
    assert segment_stop(7000, 0.4, 250) == 3000
    assert segment_stop(36, 0.3, 2) == 12
    assert segment_stop(36, 0.99, 8) == 36  # no evaluation left before the end: the end
    assert segment_stop(100, 0.5, 0) == 100  # evaluations only at the end


def test_settle_within_behind_and_open():
    margin = 2.0
    # random's interval at the longest schedule wholly within the margin of pretrained's best (its 2x here)
    within = {"cells": [cell("pre", "2x", 200, [40.0, 42.0]), cell("pre", "6x", 600, [39.0, 41.5]),
                        cell("random", "2x", 200, observed=20.0), cell("random", "6x", 600, [40.5, 43.0])]}
    (d,) = settle(within, margin)
    assert d["verdict"] == "within" and d["schedule_longest"] == "6x" and d["random"] == [40.5, 43.0]
    assert d["pretrained_best"] == {"pre": {"schedule": "2x", "interval": [40.0, 42.0]}}
    # wholly behind: random's best case is below pretrained's worst case minus the margin
    behind = {"cells": [cell("pre", "6x", 600, [40.0, 42.0]), cell("random", "6x", 600, [30.0, 37.9])]}
    assert [d["verdict"] for d in settle(behind, margin)] == ["behind"]
    # straddling (37.9 < 38 <= 40): not settled; nor without a forecast for random
    open_ = {"cells": [cell("pre", "6x", 600, [40.0, 42.0]), cell("random", "6x", 600, [37.0, 40.5])]}
    assert settle(open_, margin) == []
    unknown = {"cells": [cell("pre", "6x", 600, [40.0, 42.0]), cell("random", "6x", 600, None)]}
    assert settle(unknown, margin) == []
    # an observed cell is a known value; cells the plan does not hold (longer forecasts) are not judged
    known = {"cells": [cell("pre", "6x", 600, observed=41.0), cell("random", "6x", 600, observed=39.5),
                       {**cell("random", "12x", 1200, [10.0, 11.0]), "planned": False}]}
    (d,) = settle(known, margin)
    assert d["verdict"] == "within" and d["random"] == [39.5, 39.5]
    # sizes are judged apart: one settled, one open
    two = {"cells": within["cells"] + [cell("pre", "6x", 600, [30.0, 32.0], size=50),
                                         cell("random", "6x", 600, [25.0, 31.0], size=50)]}
    assert [(d["train_size"], d["verdict"]) for d in settle(two, margin)] == [("full", "within")]


def arm(init, weight_at_bound, level, size="full"):
    return {"init": init, "train_size": size, "other": {}, "weight_at_bound": weight_at_bound,
            "plateau_in_sight": weight_at_bound <= 0.2, "level_at_last_iter": level}


def test_an_arm_with_no_plateau_in_sight_settles_only_what_holds_whatever_its_plateau():
    margin = 2.0
    # the one-seed demo at 50%: random's forecast above pretrained's, but every fit of random at AP_MAX
    cells = [cell("pre", "6x", 600, [23.2, 27.8]), cell("random", "6x", 600, [27.4, 41.8])]
    assert [d["verdict"] for d in settle({"cells": cells, "arms": [arm("random", 0.1, 16.1)]}, margin)] == ["within"]
    # random counts as anywhere from its latest level (16.1) to 100: within is no longer shown
    assert settle({"cells": cells, "arms": [arm("random", 1.0, 16.1)]}, margin) == []
    # behind is never shown for an unbounded random arm (its plateau could be anywhere above)
    behind = [cell("pre", "6x", 600, [40.0, 42.0]), cell("random", "6x", 600, [20.0, 25.0])]
    assert [d["verdict"] for d in settle({"cells": behind, "arms": [arm("random", 0.0, 20.0)]}, margin)] == ["behind"]
    assert settle({"cells": behind, "arms": [arm("random", 0.9, 20.0)]}, margin) == []
    # a verdict that holds whatever the plateau still settles: pretrained unbounded, random far above its level
    ahead = [cell("pre", "6x", 600, [10.0, 12.0]), cell("random", "6x", 600, [40.0, 42.0])]
    (d,) = settle({"cells": ahead, "arms": [arm("pre", 1.0, 9.0)]}, 100.0)
    assert d["verdict"] == "within" and d["pretrained_best"]["pre"]["interval"] == [9.0, 100.0]


# `decide` on the report's fixture (tests/report/study_fixture.py): 2x/4x, 500 images and the full set, three seeds
# whose curves differ by a persistent offset (noise_ap 1.0: 1.0 * sin(1.7 * seed + the arm's phase) AP). At 500
# images random init is ~5 AP behind; its 4x trunks (3,600 iterations, first LR drop at 3,000) stop half-way.
TRUNKS_500 = [f"{init}_4x_500_s{seed}" for init in ("random", "pretrain") for seed in (0, 1, 2)]


def fixture_study(root: Path, running=()) -> Path:
    return make_study(root, schedules=("2x", "4x"), sizes=(500, "full"), seeds=(0, 1, 2), noise_ap=1.0,
                      states={name: "running" for name in running})


def forecast_of(size, random_iv, pretrained_iv) -> dict:
    """A planted forecast of one size: its 2x forks measured, its 4x trunks forecast."""
    return {"cells": [cell("random", "2x", 1800, observed=30.0, size=size),
                      cell("random", "4x", 3600, random_iv, size=size),
                      cell("pretrain", "2x", 1800, observed=39.5, size=size),
                      cell("pretrain", "4x", 3600, pretrained_iv, size=size)]}


def test_a_settled_catch_up_does_not_settle_a_size_whose_other_verdict_turns_within_the_intervals(tmp_path):
    study = load_results(fixture_study(tmp_path, running=TRUNKS_500))
    # random's 4x interval lies wholly below pretrained's best minus the margin (37.9 < 39.0 - 1): the catch-up
    # verdict is settled, "behind"
    forecast = forecast_of(500, [33.0, 37.9], [39.0, 40.0])
    assert [d["verdict"] for d in settle(forecast, 1.0)] == ["behind"]
    # small_data_hurts_random, on the three seeds' best AP, holds with random at its forecast (35.45 AP) and not with
    # random at the top of its interval (37.9: the paired interval then straddles the 1 AP margin): not settled
    decisions, held = decide(study, forecast, 1.0, report_judge)
    assert decisions == []
    assert held == [{"train_size": 500, "other": {}, "verdict": "behind",
                     "reason": "small_data_hurts_random (pretrain): holds at the forecast, not_enough_evidence "
                               "with all high"}]


def test_a_size_settles_when_no_verdict_turns_and_each_seed_keeps_its_offset(tmp_path):
    full = load_results(fixture_study(tmp_path / "full"))
    stopped_dir = fixture_study(tmp_path / "stopped", running=TRUNKS_500)
    forecast = forecast_of(500, [34.0, 35.0], [39.0, 40.0])
    (d,), held = decide(load_results(stopped_dir), forecast, 1.0, report_judge)
    assert held == [] and d["verdict"] == "behind" and d["substitutions"] == len(SUBSTITUTIONS) == 7
    assert sorted(d["finals"]) == sorted(TRUNKS_500)
    # each seed's final: the arm's forecast plus the seed's offset at iteration 1,800, the latest evaluation of all
    # three trunks: the fixture's per-seed noise less its mean over the seeds
    for init, phase, forecast_ap in (("random", 0.0, 34.5), ("pretrain", 1.0, 39.5)):
        noise = [math.sin(1.7 * seed + phase) for seed in (0, 1, 2)]
        for seed in (0, 1, 2):
            info = d["finals"][f"{init}_4x_500_s{seed}"]
            assert info["predicted_final_ap"] == forecast_ap
            assert info["seed_offset"] == pytest.approx(noise[seed] - sum(noise) / 3, abs=1e-9)
            assert info["seed_final_ap"] == pytest.approx(forecast_ap + info["seed_offset"], abs=1e-9)
    random_finals = [d["finals"][f"random_4x_500_s{s}"]["seed_final_ap"] for s in (0, 1, 2)]
    assert [round(ap, 3) for ap in random_finals] == [34.255, 35.246, 33.999]
    # settled.json carries them to the report: study/results.py reads each seed's own final AP
    for name, info in d["finals"].items():
        (stopped_dir / "runs" / name / "settled.json").write_text(json.dumps({"status": "settled", **info}))
    runs = {r.name: r for r in load_results(stopped_dir).runs}
    for name, info in d["finals"].items():
        assert runs[name].state == "done" and runs[name].final["final"]["bbox/AP"] == info["seed_final_ap"]
        assert _settled_final(info, runs[name].evals)["final"]["bbox/AP"] == info["seed_final_ap"]
    # and the report's verdicts on the settled study are the full study's
    assert report_judge(load_results(stopped_dir))["statuses"] == report_judge(full)["statuses"] == {
        "converges_faster (pretrain)": "holds", "catches_up (pretrain)": "not_enough_evidence",
        "small_data_hurts_random (pretrain)": "holds", "localization (pretrain)": "not_enough_evidence"}
    # with_settled reads the same as the files do
    assert report_judge(with_settled(load_results(fixture_study(tmp_path / "again", running=TRUNKS_500)),
                                     d["finals"]))["statuses"] == report_judge(full)["statuses"]


def test_what_a_forecast_does_not_give_holds_the_size_that_is_read(tmp_path):
    study = load_results(fixture_study(tmp_path))
    forecast = {"cells": [cell("random", "2x", 1800, observed=40.0), cell("random", "4x", 3600, [40.5, 41.5]),
                          cell("pretrain", "2x", 1800, observed=40.5), cell("pretrain", "4x", 3600, [40.8, 41.3])]}
    assert [d["verdict"] for d in settle(forecast, 1.0)] == ["within"]
    # the full set's 4x trunks stopped past their first LR drop (3,000): converges_faster has its curves, but
    # localization reads the AP50 and AP75 of the runs at 4x (where random is closest), and a forecast is box AP only
    decisions, (held,) = decide(truncate_study(study, {("full", "{}"): 3200}), forecast, 1.0, report_judge)
    assert decisions == [] and held["reason"] == (
        "localization reads random_4x_full_s0's measured final (AP50, AP75), which a forecast does not give")
    # stopped before the drop, converges_faster's curves are cut too
    early = truncate_study(study, {("full", "{}"): 1800})
    _, (held,) = decide(early, forecast, 1.0, report_judge)
    assert held["reason"] == (
        "localization reads random_4x_full_s0's measured final (AP50, AP75); converges_faster reads "
        "random_4x_full_s0's curve to iteration 3,000 (it stops at 1,800), which a forecast does not give")
    # which the study knows before it forecasts (its runs read at their best AP so far): no forecast is made
    assert unforecastable(early, report_judge) == {("full", "{}"): held["reason"]}
    assert unforecastable(truncate_study(study, {(500, "{}"): 1800}), report_judge) == {("500", "{}"): None}


def write_adaptive_study(root: Path, coco_data: Path, margin: float) -> Path:
    matrix = {"solver.schedule": ["2x", "4x"], "data.train_size": [12, "full"], "seed": [0]}
    return write_tiny_study(root, coco_data, matrix, {"eval_period": 2, "checkpoint_period": 2, "log_period": 2},
                            name="adaptive", report={"margin_ap": margin})


@pytest.fixture(scope="module")
def adaptive_study(coco_data, tmp_path_factory):
    # a margin of 100 AP: whatever the tiny curves, random's forecast is within it and no verdict turns on the 12-image
    # size's values, so that size settles as soon as the forecast has enough evaluations (what is tested is the
    # machinery, not the tiny model's AP). The full set runs to its end: localization and converges_faster read it.
    root = tmp_path_factory.mktemp("adaptive")
    path = write_adaptive_study(root, coco_data, margin=100.0)
    out = root / "out"
    result = run_cli("study", path, "--out", out, "--adaptive", "--jobs", "2", "--no-progress")
    return path, out, result


def test_adaptive_study_stops_settled_trunks_and_reports_why(adaptive_study):
    _, out, result = adaptive_study
    assert result.returncode == 0, result.stderr[-2000:]
    (decision,) = read_json(out / "adaptive.json")["decisions"]
    assert decision["train_size"] == 12 and decision["verdict"] == "within" and decision["share"] in SEGMENTS
    assert decision["substitutions"] == len(SUBSTITUTIONS) * 5  # each of the full set's five
    stop = segment_stop(48, decision["share"], 2)
    index = {r["name"]: r for r in read_json(out / "study.json")["runs"]}
    small = [r for r in index.values() if r["train_size"] == 12]
    trunks = [r for r in small if r["schedule"] == "4x"]
    forks = [r for r in small if r["schedule"] == "2x"]
    # the 12-image 4x trunks (48 iterations) stopped at the segment that settled them...
    assert len(trunks) == 2 and all(r["state"] == "settled" and "within the 100 AP margin" in r["reason"]
                                    for r in trunks)
    for r in trunks:
        run = out / r["path"]
        assert max(row["iter"] for row in read_jsonl(run / "metrics.jsonl")) == stop
        assert not (run / "final.json").exists() and (run / "checkpoints" / f"iter_{stop:07d}.pt").exists()
        settled = read_json(run / "settled.json")
        # one seed: its offset from the arm's mean is 0, its final AP the arm's forecast
        assert settled["stopped_at_iter"] == stop and settled["seed_offset"] == 0.0
        assert settled["seed_final_ap"] == settled["predicted_final_ap"]
    # ...the 2x forks, which fork at iteration 16 (2x's first LR drop), ran whole: they teach the forecast the jump of
    # the tail both schedules share; and the full set ran to its end
    assert stop >= 16 and all(r["state"] == "done" for r in forks)
    assert all(r["state"] == "done" for r in index.values() if r["train_size"] == "full")
    summary = read_json(out / "report" / "summary.json")
    runs = {r["name"]: r for r in summary["runs"]}
    assert all(runs[r["name"]]["settled"] for r in trunks)
    assert not any(r["settled"] for r in runs.values() if r["name"] not in {t["name"] for t in trunks})
    adaptive = summary["adaptive"]
    # iterations trained: 2 stopped trunks + 2 full-set trunks x 48 + 4 forks x (24 - 16), of 4 x 48 + 4 x 8 planned
    assert adaptive["iters_trained"] == 2 * stop + 96 + 32 and adaptive["iters_planned"] == 224
    report = (out / "report" / "report.md").read_text()
    assert "adaptive" in report.lower() and "forecast" in report.lower()


def test_adaptive_study_killed_and_restarted_ends_as_the_uninterrupted_one(adaptive_study, tmp_path):
    path, reference, _ = adaptive_study
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "rethink", "study", str(path), "--out", str(out), "--adaptive", "--jobs", "2",
           "--no-progress"]
    rng = random.Random(3)
    for _ in range(2):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(2.0, 12.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # the kills landed: the study was stopped before its end (no report yet, a run neither done nor settled)
    assert not (out / "report" / "index.html").exists()
    states = [state_of(out, r["name"]) for r in read_json(reference / "study.json")["runs"]]
    assert any(s not in ("done", "settled") for s in states)
    result = run_cli("study", path, "--out", out, "--adaptive", "--jobs", "2", "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    assert read_json(out / "adaptive.json") == read_json(reference / "adaptive.json")
    got = {r["name"]: r for r in read_json(out / "study.json")["runs"]}
    want = {r["name"]: r for r in read_json(reference / "study.json")["runs"]}
    assert {n: r["state"] for n, r in got.items()} == {n: r["state"] for n, r in want.items()}
    for name, r in want.items():
        evals = [row for row in read_jsonl(out / r["path"] / "metrics.jsonl") if row["type"] == "eval"]
        ref = [row for row in read_jsonl(reference / r["path"] / "metrics.jsonl") if row["type"] == "eval"]
        assert [e["iter"] for e in evals] == [e["iter"] for e in ref], name
        assert all(same({"ap": a["bbox/AP"]}, {"ap": b["bbox/AP"]}) for a, b in zip(evals, ref)), name
        if r["state"] == "settled":
            assert read_json(out / r["path"] / "settled.json") == read_json(reference / r["path"] / "settled.json")
