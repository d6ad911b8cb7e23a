"""TensorBoard events beside metrics.jsonl: the same numbers, under the metric names, rebuilt on resume."""

import json

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rethink.engine.events import RunLog
from rethink.fileio import read_jsonl


def scalars(run_dir) -> dict:
    acc = EventAccumulator(str(run_dir / "events"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_events_mirror_metrics_and_are_rebuilt_from_them(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    log = RunLog(out)
    log.write({"type": "train", "iter": 2, "loss": 1.5, "lr": 0.02, "img_per_s": 10.0})
    log.write({"type": "eval", "iter": 2, "bbox/AP": 3.25, "bbox/APs": float("nan"), "top1": 12.5})
    log.write({"type": "train", "iter": 4, "loss": 1.25, "lr": 0.02, "img_per_s": 11.0})
    log.write({"type": "eval", "iter": 4, "bbox/AP": 4.5, "bbox/APs": 1.0, "top1": 20.0})
    log.close()
    got = scalars(out)
    assert got["bbox/AP"] == [(2, 3.25), (4, 4.5)]
    assert got["bbox/APs"] == [(4, 1.0)]  # NaN (an empty size bucket) is left out
    assert got["eval/top1"] == [(2, 12.5), (4, 20.0)] and got["train/loss"] == [(2, 1.5), (4, 1.25)]
    assert got["train/img_per_s"] == [(2, 10.0), (4, 11.0)]
    # a resume truncates metrics.jsonl to its checkpoint: the events follow, without the replayed points
    kept = [r for r in read_jsonl(out / "metrics.jsonl") if r["iter"] <= 2]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    log = RunLog(out)
    log.write({"type": "eval", "iter": 4, "bbox/AP": 4.0, "bbox/APs": 1.0, "top1": 19.0})
    log.close()
    got = scalars(out)
    assert got["bbox/AP"] == [(2, 3.25), (4, 4.0)] and got["train/loss"] == [(2, 1.5)]
    assert len(list((out / "events").iterdir())) == 1
