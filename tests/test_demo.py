"""`rethink demo`: the --quick pipeline end to end, and the study that --seeds N runs."""

import json
import subprocess
import sys
from pathlib import Path

from rethink.configs import bundled_dir
from rethink.demo import study_over_seeds
from rethink.study.plan import load_plan


def test_seeds_study_is_the_demo_over_n_seeds(tmp_path):
    demo = load_plan(bundled_dir() / "studies" / "demo.yaml")
    path = study_over_seeds(bundled_dir() / "studies" / "demo.yaml", 3, tmp_path)
    seeds3 = load_plan(path)
    assert {r.seed for r in demo.runs} == {0}
    assert {r.seed for r in seeds3.runs} == {0, 1, 2}
    assert len(seeds3.runs) == 3 * len(demo.runs)

    def cell(r):
        return (r.init_label, r.schedule, str(r.train_size), repr(sorted(r.other.items())))

    # the same cells, each over three seeds, with the same iterations
    assert sorted({(cell(r), r.iters) for r in seeds3.runs}) == sorted({(cell(r), r.iters) for r in demo.runs})


def test_demo_quick_runs_the_pipeline(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "rethink", "demo", "--quick", "--out", str(out)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    demo = json.loads((out / "demo.json").read_text())
    assert demo["quick"] is True and demo["seeds"] == 1
    assert Path(demo["report"]).is_file()
    summary = json.loads((out / "study" / "report" / "summary.json").read_text())
    for name in ("converges_faster", "catches_up", "small_data_hurts_random"):
        assert summary["findings"][name]["status"] in ("holds", "does_not_hold", "not_enough_evidence")
    manifest = json.loads((out / "benchmark" / "benchmark.json").read_text())
    assert manifest["scale"] == "tiny" and manifest["generator_version"] >= 3


def test_demo_refuses_bad_seeds(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rethink", "demo", "--seeds", "0", "--out", str(tmp_path / "d")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--seeds: must be a positive integer" in result.stderr
    assert not (tmp_path / "d").exists()
