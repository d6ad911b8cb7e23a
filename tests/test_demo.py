"""`rethink demo`: the --quick pipeline end to end, and the study that --seeds N runs."""

import json
import subprocess
import sys
from pathlib import Path

from rethink.configs import bundled_dir
from rethink.demo import study_copy
from rethink.study.plan import load_plan


def test_seeds_study_is_the_demo_over_n_seeds(tmp_path):
    demo = load_plan(bundled_dir() / "studies" / "demo.yaml")
    path = study_copy(bundled_dir() / "studies" / "demo.yaml", tmp_path, 3, tmp_path / "benchmark")
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


def test_sources_study_crosses_every_source_with_random(tmp_path):
    path = study_copy(bundled_dir() / "studies" / "demo_sources.yaml", tmp_path, 1, tmp_path / "benchmark")
    study = load_plan(path)
    sources = {"supervised", "moco_target", "moco_unlabelled", "moco_source", "densecl_unlabelled"}
    assert {r.init_label for r in study.runs} == {"random"} | sources
    for size in ("full", 100):
        assert {r.init_label for r in study.runs if r.train_size == size} == {"random"} | sources
    steps = study.pretrain_set
    assert all(dict(steps[name])["label"] for name in sources)  # every source is named for what it is
    # the extra images are the demo's own benchmark's; the target's train split is read in place
    assert dict(steps["moco_unlabelled"])["data.train"] == str(tmp_path / "benchmark" / "target" / "unlabelled")
    assert dict(steps["moco_target"])["data.train"].endswith("target/train/annotations.json")
    assert dict(steps["densecl_unlabelled"])["method"] == "densecl"
