"""`rethink study --adaptive`: the settle rule on planted forecasts, and a real tiny adaptive study that stops its
trunks once settled, reports the forecasts it used, and ends the same when killed and restarted."""

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
from rethink.study.adaptive import segment_stop, settle
from rethink.study.store import state_of


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


def write_adaptive_study(root: Path, coco_data: Path, margin: float) -> Path:
    matrix = {"solver.schedule": ["2x", "4x"], "data.train_size": ["full"], "seed": [0]}
    return write_tiny_study(root, coco_data, matrix, {"eval_period": 2, "checkpoint_period": 2, "log_period": 2},
                            name="adaptive", report={"margin_ap": margin})


@pytest.fixture(scope="module")
def adaptive_study(coco_data, tmp_path_factory):
    # a margin of 100 AP: whatever the tiny curves, random's forecast is within it, so the study settles as soon
    # as the forecast has enough evaluations (what is tested is the machinery, not the tiny model's AP)
    root = tmp_path_factory.mktemp("adaptive")
    path = write_adaptive_study(root, coco_data, margin=100.0)
    out = root / "out"
    result = run_cli("study", path, "--out", out, "--adaptive", "--jobs", "2", "--no-progress")
    return path, out, result


def test_adaptive_study_stops_settled_trunks_and_reports_why(adaptive_study):
    _, out, result = adaptive_study
    assert result.returncode == 0, result.stderr[-2000:]
    (decision,) = read_json(out / "adaptive.json")["decisions"]
    assert decision["verdict"] == "within" and decision["share"] == 0.3
    index = {r["name"]: r for r in read_json(out / "study.json")["runs"]}
    trunks = [r for r in index.values() if r["schedule"] == "4x"]
    forks = [r for r in index.values() if r["schedule"] == "2x"]
    # the 4x trunks (48 iterations) stopped at the 30% segment (iteration 16), their verdict settled...
    assert all(r["state"] == "settled" and "within the 100 AP margin" in r["reason"] for r in trunks)
    for r in trunks:
        run = out / r["path"]
        assert max(row["iter"] for row in read_jsonl(run / "metrics.jsonl")) == 16
        assert not (run / "final.json").exists() and (run / "checkpoints" / "iter_0000016.pt").exists()
        assert read_json(run / "settled.json")["stopped_at_iter"] == 16
    # ...and the 2x forks, which fork at iteration 16 (2x's first LR drop), ran whole: they teach the forecast the
    # jump of the tail both schedules share
    assert all(r["state"] == "done" for r in forks)
    summary = read_json(out / "report" / "summary.json")
    runs = {r["name"]: r for r in summary["runs"]}
    assert all(runs[r["name"]]["settled"] for r in trunks) and not any(runs[r["name"]]["settled"] for r in forks)
    adaptive = summary["adaptive"]
    # iterations trained: 2 trunks x 16 + 2 forks x (24 - 16), of 2 x 48 + 2 x 8 planned
    assert adaptive["iters_trained"] == 48 and adaptive["iters_planned"] == 112
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
