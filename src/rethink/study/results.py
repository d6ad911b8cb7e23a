"""Reading a study directory back: study.json, each run's files (metrics.jsonl, final.json, FAILED, settled.json) and
the pre-training records, as `StudyResults` holding one `RunRecord` per run. The files are the truth: a run's state
comes from what its directory holds, not from study.json alone. The report and the forecast read studies through
this module only.
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from rethink.errors import UserError
from rethink.fileio import read_json, read_jsonl
from rethink.schedule import parse_schedule
from rethink.study.plan import other_key

RANDOM = "random"
PRIMARY = "bbox/AP"

def size_sort_key(train_size, train_images) -> tuple:
    """Order training sets by their number of images; a full set whose size is not recorded goes last."""
    if train_images is not None:
        return (0, train_images)
    return (0, train_size) if isinstance(train_size, int) else (1, 0)


@dataclass
class RunRecord:
    """One run of the study: its declared coordinates plus what its directory holds now."""

    name: str
    path: Path
    state: str  # effective state: done | failed | running | pending
    reason: str | None
    init: str
    schedule: str
    schedule_factor: float
    train_size: object  # int or "full"
    train_images: int | None
    seed: int
    iters: int | None
    drops: list
    batch_size: int | None
    trunk: str | None
    fork_iter: int | None
    other: dict
    evals: list = field(default_factory=list)
    trains: list = field(default_factory=list)
    final: dict | None = None
    failed: dict | None = None
    # `rethink study --adaptive` stopped this trunk once the forecast settled its verdict: settled.json's content.
    # Such a run counts as done, with the forecast of its final AP in place of a measured one (final["forecast"]).
    settled: dict | None = None

    @property
    def other_key(self) -> str:
        return other_key(self.other)

    @property
    def cell_key(self) -> tuple:
        return (self.init, self.schedule, self.train_size, self.other_key)

    @property
    def last_iter(self):
        iters = [row["iter"] for row in self.evals + self.trains if "iter" in row]
        return max(iters) if iters else None

    def eval_curve(self, key: str = PRIMARY):
        """(iters, values) of the evaluation lines, NaN where the key is absent."""
        iters = [row["iter"] for row in self.evals]
        values = [row.get(key, float("nan")) for row in self.evals]
        return iters, values


@dataclass
class StudyResults:
    path: Path
    name: str
    margin_ap: float
    pretrain: dict  # source name -> pretrain.json dict, or None when not recorded
    pretrain_notes: dict  # source name -> why it is not recorded
    runs: list
    init_cost: dict = field(default_factory=dict)  # source name -> the study's report.init_cost entry
    weights_meta: dict = field(default_factory=dict)  # source name -> what published weights say of themselves

    def label(self, source: str) -> str:
        """What a reader calls a pretrained source: its pre-training's label ("MoCo v2 on target"), else its name."""
        record = self.pretrain.get(source) or {}
        return record.get("label") or source

    @property
    def sources(self) -> list:
        """Pretrained sources in the order the study lists them; each is compared with random init."""
        seen = []
        for run in self.runs:
            if run.init != RANDOM and run.init not in seen:
                seen.append(run.init)
        return seen


def _rows_by_iter(rows: list) -> list:
    # A resumed run may log the same iteration twice; the later line is the one that counts.
    by_iter = {}
    for row in rows:
        if isinstance(row.get("iter"), int):
            by_iter[row["iter"]] = row
    return [by_iter[i] for i in sorted(by_iter)]


def read_json_or_fail(path: Path):
    try:
        return read_json(path)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _read_run_files(run_dir: Path) -> tuple:
    """(metrics lines, final, FAILED, settled, why unreadable) of a run directory.

    A run whose files cannot be read is left out and listed with the reason; the rest of the report stands.
    A run an adaptive study settled gets the forecast in final's place (`_settled_final`).
    """
    unreadable = None
    lines = final = failed = settled = None
    try:
        lines = read_jsonl(run_dir / "metrics.jsonl")
        final = read_json_or_fail(run_dir / "final.json") if (run_dir / "final.json").exists() else None
        failed = read_json_or_fail(run_dir / "FAILED") if (run_dir / "FAILED").exists() else None
        settled = read_json_or_fail(run_dir / "settled.json") if (run_dir / "settled.json").exists() else None
    except json.JSONDecodeError as exc:
        unreadable = f"{run_dir / 'metrics.jsonl'}: line {exc.lineno} is not valid JSON"
    except UserError as exc:
        unreadable = str(exc)
    if unreadable is not None or not isinstance(final, (dict, type(None))) or not isinstance(failed, (dict, type(None))):
        unreadable = unreadable or f"{run_dir}: final.json or FAILED is not a JSON object"
        lines, final, failed = lines if isinstance(lines, list) else [], None, None
    if final is None and isinstance(settled, dict) and settled.get("predicted_final_ap") is not None:
        final = _settled_final(settled, [r for r in lines if r.get("type") == "eval"])
    else:
        settled = None
    return lines, final, failed, settled, unreadable


def _load_run(study_dir: Path, index: int, entry: dict) -> RunRecord:
    for key in ("name", "init", "schedule", "train_size", "seed"):
        if key not in entry:
            raise UserError(f"{study_dir / 'study.json'}: runs[{index}] has no '{key}'")
    run_dir = study_dir / entry.get("path", f"runs/{entry['name']}")
    lines, final, failed, settled, unreadable = _read_run_files(run_dir)
    declared = entry.get("state", "pending")
    reason = entry.get("reason")
    # The files are the truth; study.json can lag behind a kill.
    if unreadable is not None:
        state, reason = "failed", f"unreadable run files: {unreadable}"
    elif final is not None and final.get("status", "done") == "done":
        state = "done"
    elif failed is not None:
        state, reason = "failed", failed.get("reason", reason)
    elif declared == "failed":
        state = "failed"
    elif declared == "running":
        state = "running"
    elif declared == "done":
        state, reason = "pending", "study.json says done but final.json is missing"
    else:
        state = "pending"

    factor = entry.get("schedule_factor")
    if factor is None:
        factor = parse_schedule(entry["schedule"], key=f"{study_dir / 'study.json'}: runs[{index}].schedule")
    train_size = entry["train_size"]
    # the index may leave the actual number of images out; the run records it in final.json
    train_images = entry.get("train_images")
    if train_images is None and final is not None:
        train_images = final.get("train_images")
    if train_images is None and isinstance(train_size, int):
        train_images = train_size
    return RunRecord(
        name=entry["name"], path=run_dir, state=state, reason=reason, init=entry["init"],
        schedule=str(entry["schedule"]), schedule_factor=float(factor), train_size=train_size,
        train_images=train_images, seed=entry["seed"], iters=entry.get("iters"),
        drops=list(entry.get("drops") or []), batch_size=entry.get("batch_size"),
        trunk=entry.get("trunk"), fork_iter=entry.get("fork_iter"), other=dict(entry.get("other") or {}),
        evals=_rows_by_iter([r for r in lines if r.get("type") == "eval"]),
        trains=_rows_by_iter([r for r in lines if r.get("type") == "train"]),
        final=final, failed=failed, settled=settled,
    )


def _settled_final(settled: dict, evals: list) -> dict:
    """final.json's place for a run an adaptive study stopped: the forecast final AP (this seed's, seed_final_ap,
    where settled.json has it: the arm's forecast plus the seed's offset), the best measured so far (or the
    forecast, if higher), and the work done until the stop."""
    predicted = settled.get("seed_final_ap")
    predicted = settled["predicted_final_ap"] if predicted is None else predicted
    measured = [r for r in evals if isinstance(r.get(PRIMARY), (int, float)) and math.isfinite(r[PRIMARY])]
    best_row = max(measured, key=lambda r: r[PRIMARY]) if measured else None
    best = {PRIMARY: predicted}
    if best_row is not None and best_row[PRIMARY] > predicted:
        best = {k: v for k, v in best_row.items() if "/" in k and not k.startswith("eval/")}
    return {"status": "done", "final": {PRIMARY: predicted}, "best": best,
            "best_iter": best_row["iter"] if best_row is not None else None,
            "forecast": {"interval": settled.get("interval"), "stopped_at_iter": settled.get("stopped_at_iter")}}


def load_results(study_dir) -> StudyResults:
    """Read S/study.json, every run directory it lists, and the pre-training records."""
    study_dir = Path(study_dir)
    index_path = study_dir / "study.json"
    if not index_path.exists():
        raise UserError(f"{study_dir}: no study.json here; point the report at a study directory "
                        "(the --out of `rethink study`)")
    index = read_json_or_fail(index_path)
    if not isinstance(index, dict) or not isinstance(index.get("runs"), list):
        raise UserError(f"{index_path}: expected an object with a 'runs' list")
    runs = [_load_run(study_dir, i, entry) for i, entry in enumerate(index["runs"])]

    pretrain, notes = {}, {}
    for source, rel in (index.get("pretrain") or {}).items():
        path = Path(rel)
        path = path if path.is_absolute() else study_dir / path
        if path.exists():
            pretrain[source] = read_json_or_fail(path)
        else:
            pretrain[source], notes[source] = None, f"{path} does not exist (yet)"
    for run in runs:
        if run.init != RANDOM and run.init not in pretrain:
            pretrain[run.init], notes[run.init] = None, "not recorded"
    return StudyResults(path=study_dir, name=index.get("name", study_dir.name),
                 margin_ap=float(index.get("margin_ap", 1.0)), pretrain=pretrain,
                 pretrain_notes=notes, runs=runs, init_cost=dict(index.get("init_cost") or {}),
                 weights_meta=_weights_meta(runs, pretrain))


def _weights_meta(runs: list, pretrain: dict) -> dict:
    """Per pretrained source that rethink did not pre-train itself, the metadata of the weights its runs
    loaded (init.json's "source", e.g. timm:resnet50_gn.a1h_in1k)."""
    from rethink.models.weights_meta import weights_metadata

    out = {}
    for run in runs:
        if run.init == RANDOM or pretrain.get(run.init) is not None or run.init in out:
            continue
        path = run.path / "init.json"
        loaded = read_json_or_fail(path).get("source") if path.exists() else None
        meta = weights_metadata(str(loaded)) if loaded else None
        if meta is not None:
            out[run.init] = meta
    return out
