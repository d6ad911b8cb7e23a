"""Crash safety: SIGKILL a training run at random moments; the same command must finish with the same results."""

import random
import signal
import subprocess
import sys
import time


from conftest import eval_rows, run_cli, same, tiny_config_dict, write_config
from rethink.config import config_from_dict, to_dict
from rethink.engine.train import train
from rethink.fileio import read_json, read_jsonl

KILLS = 12


def test_run_killed_at_random_moments_finishes_like_an_uninterrupted_one(coco_data, tmp_path):
    cfg = config_from_dict(tiny_config_dict(coco_data), ["solver.iters_1x=40", "eval_period=8",
                                                         "checkpoint_period=4", "keep_checkpoints=1"])
    reference = train(cfg, tmp_path / "reference", progress=False)
    config = write_config(tmp_path / "run.yaml", to_dict(cfg))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "rethink", "train", str(config), "--out", str(out), "--no-progress"]
    rng = random.Random(2024)
    kills = 0
    while kills < KILLS:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # random moments: during start-up, data checks, training, evaluation or a checkpoint write
        time.sleep(rng.uniform(0.5, 3.0))
        if proc.poll() is not None:
            break  # it finished before this kill
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        leftovers = [p.name for p in (out / "checkpoints").glob(".*")] if (out / "checkpoints").exists() else []
        assert all(name.endswith(".tmp") for name in leftovers)  # at most a temporary file, never a torn checkpoint
    assert kills >= 8, "the run finished too fast to be killed often enough"
    result = run_cli("train", config, "--out", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    final = read_json(out / "final.json")
    assert same(final["final"], reference["final"]) and same(final["best"], reference["best"])
    assert final["images_seen"] == reference["images_seen"]
    ap = lambda rows: [(r["iter"], r["bbox/AP"]) for r in rows]  # noqa: E731
    assert ap(eval_rows(out)) == ap(eval_rows(tmp_path / "reference"))
    # every process started at a checkpoint: nothing was trained twice beyond the last checkpoint
    starts = [s["start_iter"] for s in read_jsonl(out / "segments.jsonl")]
    assert all(s % 4 == 0 for s in starts) and starts == sorted(starts)
    # a finished run is not redone
    stamp = (out / "final.json").stat().st_mtime_ns
    assert run_cli("train", config, "--out", out, "--no-progress").returncode == 0
    assert (out / "final.json").stat().st_mtime_ns == stamp and len(read_jsonl(out / "segments.jsonl")) == len(starts)
