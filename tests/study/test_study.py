"""A real tiny study on CPU: the matrix, trunk sharing (forks equal standalone twins), idempotence, lock."""

import json
from pathlib import Path

import pytest
import yaml

from conftest import eval_rows, run_cli, same, tiny_config_dict, write_tiny_study
from rethink.config import config_from_dict
from rethink.engine.train import train
from rethink.errors import UserError
from rethink.fileio import read_json, read_jsonl
from rethink.study.plan import load_plan, plan_summary
from rethink.pipeline import run_study
from rethink.study.store import StudyLock


def write_study(root: Path, coco_data: Path, **extra) -> Path:
    matrix = {"solver.schedule": ["1x", "2x"], "data.train_size": [12, "full"], "seed": [0]}
    return write_tiny_study(root, coco_data, matrix, {"eval_period": 4}, **extra)


@pytest.fixture(scope="module")
def tiny_study(coco_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    path = write_study(root, coco_data)
    out = root / "out"
    code = run_study(path, out, jobs=2, progress=False)
    return path, out, code


def test_plan_shares_trunks(tiny_study):
    path, _, _ = tiny_study
    summary = plan_summary(load_plan(path))
    assert len(summary["runs"]) == 8
    forks = [r for r in summary["runs"] if r["trunk"]]
    assert len(forks) == 4 and all(r["schedule"] == "1x" and r["fork_iter"] == 8 for r in forks)
    trunks = [r for r in summary["runs"] if not r["trunk"]]
    assert all(r["schedule"] == "2x" and r["keep_iters"] == [8] for r in trunks)
    # 4 trunks of 24 + 4 tails of 12 - 8; naive: 4 x 24 + 4 x 12
    assert summary["iterations_planned"] == 4 * 24 + 4 * 4 and summary["iterations_naive"] == 4 * 24 + 4 * 12
    assert summary["evaluations_planned"] < summary["evaluations_naive"]


def test_study_runs_everything_and_writes_the_index(tiny_study):
    _, out, code = tiny_study
    assert code == 0
    index = read_json(out / "study.json")
    assert len(index["runs"]) == 8 and all(r["state"] == "done" for r in index["runs"])
    labels = {r["init"] for r in index["runs"]}
    assert labels == {"random", "weights"}
    for r in index["runs"]:
        final = read_json(out / r["path"] / "final.json")
        assert final["iters"] == r["iters"]
        assert final["train_images"] == (12 if r["train_size"] == 12 else 24)
    assert (out / "report" / "index.html").exists() and (out / "report" / "summary.json").exists()


def test_forked_run_equals_its_standalone_twin(tiny_study, tmp_path):
    _, out, _ = tiny_study
    index = read_json(out / "study.json")
    fork = next(r for r in index["runs"] if r["trunk"] and r["init"] == "random" and r["train_size"] == "full")
    run = out / fork["path"]
    segments = read_jsonl(run / "segments.jsonl")
    assert segments[0]["forked"] and segments[0]["start_iter"] == 8  # it really trained only its tail
    cfg = config_from_dict(yaml.safe_load((run / "config.yaml").read_text()))
    twin = train(cfg, tmp_path / "twin", progress=False)
    forked = read_json(run / "final.json")
    assert same(forked["final"], twin["final"]) and same(forked["best"], twin["best"])
    assert forked["images_seen"] == twin["images_seen"]
    ap = lambda rows: [(r["iter"], r["bbox/AP"]) for r in rows]  # noqa: E731
    assert ap(eval_rows(run)) == ap(eval_rows(tmp_path / "twin"))  # the trunk's curve up to 8, then its own


def test_second_study_does_nothing_and_is_idempotent(tiny_study):
    path, out, _ = tiny_study
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/final.json")}
    assert run_study(path, out, jobs=2, progress=False) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/final.json")} == stamps


def test_added_matrix_value_plans_only_the_new_runs(tiny_study):
    path, out, _ = tiny_study
    study = yaml.safe_load(path.read_text())
    study["matrix"]["seed"] = [0, 1]
    bigger = path.parent / "study_seeds.yaml"
    bigger.write_text(yaml.safe_dump(study))
    result = run_cli("plan", bigger, "--json")
    assert result.returncode == 0
    planned = {r["name"] for r in json.loads(result.stdout)["runs"]}
    done = {p.parent.name for p in out.glob("runs/*/final.json")}
    # the finished runs keep their names (and so their directories): a study on `out` trains only the 8 new ones
    assert len(planned) == 16 and done <= planned and len(planned - done) == 8


def test_lock_refuses_a_second_study(tiny_study):
    path, out, _ = tiny_study
    with StudyLock(out):
        result = run_cli("study", path, "--out", out, "--no-progress")
        assert result.returncode == 2 and "another `rethink study` is running" in result.stderr
    status = run_cli("status", out)
    assert status.returncode == 0 and "8 done" in status.stdout


def test_matrix_that_breaks_the_control_is_refused(coco_data, tmp_path):
    path = write_study(tmp_path, coco_data, set={"init": "imagenet"})
    with pytest.raises(UserError, match="set: init is the matrix axis"):
        load_plan(path)
    study = yaml.safe_load(path.read_text())
    study.pop("set")
    study["matrix"]["init"] = ["imagenet", "other.safetensors"]
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(UserError, match="needs `random`"):
        load_plan(path)
    study["matrix"]["init"] = ["random", "imagenet"]
    study["matrix"]["model.nrom"] = ["gn"]
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(UserError, match="model.nrom: unknown key"):
        load_plan(path)


STUDY_KILLS = 8


def test_study_killed_at_random_moments_completes_without_redoing_work(tiny_study, tmp_path):
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    path, reference, _ = tiny_study
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "rethink", "study", str(path), "--out", str(out), "--jobs", "2", "--no-progress"]
    rng = random.Random(7)
    finished_before: dict[str, int] = {}
    cut_runs: set[str] = set()
    for _ in range(STUDY_KILLS):
        # its own session, so the kill takes the study and the runs it started
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(1.0, 9.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for final in out.glob("runs/*/final.json"):
            finished_before.setdefault(final.parent.name, len(read_jsonl(final.parent / "segments.jsonl")))
        cut_runs |= {d.name for d in out.glob("runs/*") if d.is_dir() and not (d / "final.json").exists()}
    # the kills landed: the study was left unfinished, and some run had started and was cut before its end
    assert len(finished_before) < len(read_json(reference / "study.json")["runs"])
    assert cut_runs
    result = run_cli("study", path, "--out", out, "--jobs", "2", "--no-progress")
    assert result.returncode == 0, result.stderr
    index = read_json(out / "study.json")
    assert all(r["state"] == "done" for r in index["runs"])
    for r in index["runs"]:
        got, want = read_json(out / r["path"] / "final.json"), read_json(reference / r["path"] / "final.json")
        segments = read_jsonl(out / r["path"] / "segments.jsonl")
        assert same(got["final"], want["final"]), (r["name"], got["final"], want["final"], segments)
        ckpt_iters = {0, r["fork_iter"] or 0} | set(range(4, r["iters"] + 1, 4))
        assert all(s["start_iter"] in ckpt_iters for s in segments), r["name"]
        if r["name"] in finished_before:  # finished before a kill: never started again
            assert len(segments) == finished_before[r["name"]], r["name"]


def test_init_cost_is_checked_and_reaches_the_index(coco_data, tmp_path):
    from rethink.study.store import write_index

    cost = {"weights": {"images_per_epoch": 1000, "epochs": 10, "resolution": 32, "note": "measured elsewhere"}}
    path = write_study(tmp_path, coco_data, report={"margin_ap": 1.0, "init_cost": cost})
    study = load_plan(path)
    assert study.init_cost == cost
    assert write_index(tmp_path / "out", study)["init_cost"] == cost
    for bad, match in (({"imagenet": {"epochs": 90}}, "no pretrained init of the study is called imagenet"),
                       ({"weights": {"epochs": -1}}, r"init_cost.weights.epochs: expected a positive number"),
                       ({"weights": {"days": 3}}, "unknown key days")):
        path = write_study(tmp_path, coco_data, report={"margin_ap": 1.0, "init_cost": bad})
        with pytest.raises(UserError, match=match):
            load_plan(path)


def test_a_run_that_fails_at_start_up_is_failed_in_status(coco_data, tmp_path, capsys):
    """A run that fails before its first iteration leaves no FAILED file; status still says failed, with why."""
    from rethink.study.run import run_local
    from rethink.study.store import print_status, write_index

    config = {"data": {"train": {"images": str(coco_data / "train" / "images"),
                                 "annotations": str(tmp_path / "gone.json")},
                       "val": {"images": str(coco_data / "val" / "images"),
                               "annotations": str(coco_data / "val" / "annotations.json")},
                       "min_size_train": [64], "max_size": 64, "min_size_test": 64}}
    path = write_tiny_study(tmp_path, coco_data, {"solver.schedule": ["1x"]}, config)
    study, out = load_plan(path), tmp_path / "out"
    errors = run_local(study, out, jobs=2, progress=False)  # the executor `rethink study` runs, after its checks
    write_index(out, study, set(), errors)
    assert len(errors) == 2 and not list(out.glob("runs/*/FAILED"))
    capsys.readouterr()
    print_status(out)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(("random_", "weights_"))]
    assert len(lines) == 2 and all(" failed " in ln and "gone.json" in ln for ln in lines), lines


def test_study_checks_its_data_before_any_run(coco_data, tmp_path):
    config = {"data": {**tiny_config_dict(coco_data)["data"], "train_size": 500}}
    path = write_tiny_study(tmp_path, coco_data, {"solver.schedule": ["1x"]}, config)
    with pytest.raises(UserError, match=r"study.yaml: .*500"):
        run_study(path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_plan_json_is_json_and_says_where_pretrained_weights_will_be(tmp_path):
    result = run_cli("plan", "studies/demo_quick.yaml", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)["runs"]
    pretrained = [r for r in runs if r["init"] == "pretrain"]
    assert pretrained and all(r["init_spec"] == "pretrain/pretrain/backbone.safetensors" for r in pretrained)
    assert all(isinstance(json.loads(r["group"]), dict) for r in runs)


def test_study_base_may_name_a_bundled_config(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": "tiny/faster_rcnn_gn.yaml", "pretrain": {"p": "tiny/pretrain.yaml"},
                                    "matrix": {"init": ["random", "p"], "solver.schedule": ["1x"]}}))
    study = load_plan(path)
    assert len(study.runs) == 2 and study.runs[0].config.model.backbone == "tiny"
    assert study.pretrain["p"].name == "pretrain.yaml"


def _strict_load(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_every_json_file_a_study_writes_is_strict_json(tiny_study, capsys):
    """NaN (COCO's AP of an object size the val set lacks) is written as null; a strict parser reads every file."""
    from rethink.cli import main

    _, out, _ = tiny_study
    files = sorted(out.rglob("*.json")) + sorted(out.rglob("*.jsonl"))
    kinds = {p.name for p in files}
    assert {"study.json", "final.json", "init.json", "metrics.jsonl", "segments.jsonl", "summary.json"} <= kinds
    for path in files:
        lines = path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]
        for line in lines:
            _strict_load(line)
    # the tiny set has no large objects: APl is not defined, null on disk, NaN once read
    some_final = next(out.glob("runs/*/final.json"))
    assert _strict_load(some_final.read_text())["final"]["bbox/APl"] is None
    assert read_json(some_final)["final"]["bbox/APl"] != read_json(some_final)["final"]["bbox/APl"]  # NaN
    run = some_final.parent
    last = sorted(run.glob("checkpoints/iter_*.pt"))[-1]
    capsys.readouterr()
    assert main(["eval", str(run / "config.yaml"), "--weights", str(last)]) == 0
    metrics = _strict_load(capsys.readouterr().out)
    assert metrics["bbox/APl"] is None and isinstance(metrics["bbox/AP"], float)
