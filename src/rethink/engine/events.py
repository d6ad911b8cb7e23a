"""TensorBoard event files beside metrics.jsonl, so `tensorboard --logdir STUDY_DIR` shows a study's runs side by side.

metrics.jsonl stays the record; the events are derived from it. Opening a run's events rebuilds them from the
lines metrics.jsonl holds at that moment (after a resume truncated it, or a fork copied its trunk's lines), so the
curves in TensorBoard are exactly the logged ones, without the points of a segment that a resume replayed.

Tags: evaluation metrics under their own names (`bbox/AP`, `segm/AP75`; pre-training's `top1` as `eval/top1`),
training lines under `train/` (`train/loss`, `train/lr`, `train/img_per_s`, ...).
"""

import math
import shutil
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from rethink.fileio import append_jsonl, read_jsonl

EVENTS_DIR = "events"


def _scalars(row: dict) -> dict:
    train = row.get("type") == "train"
    out = {}
    for key, value in row.items():
        if key in ("type", "iter") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            continue
        tag = f"train/{key}" if train else (key if "/" in key else f"eval/{key}")
        out[tag] = value
    return out


class RunLog:
    """Appends metric lines to out/metrics.jsonl and the same numbers to out/events/ (main process only)."""

    def __init__(self, out: Path):
        self.metrics = Path(out) / "metrics.jsonl"
        events = Path(out) / EVENTS_DIR
        shutil.rmtree(events, ignore_errors=True)
        self.writer = SummaryWriter(str(events))
        for row in read_jsonl(self.metrics):
            self._add(row)
        self.writer.flush()

    def _add(self, row: dict) -> None:
        for tag, value in _scalars(row).items():
            self.writer.add_scalar(tag, value, global_step=int(row["iter"]))

    def write(self, row: dict) -> None:
        append_jsonl(self.metrics, row)
        self._add(row)
        if row.get("type") == "eval":
            self.writer.flush()  # an evaluation is worth seeing at once

    def close(self) -> None:
        self.writer.close()
