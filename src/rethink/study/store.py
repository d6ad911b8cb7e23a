"""The study directory: study.json (the index of runs and their states), the lock, `rethink status`.

A run's state is read from its own directory (final.json: done, FAILED: failed), so the index can always be
rebuilt after a kill: it is rewritten atomically whenever a state changes.
"""

import fcntl
import os
from pathlib import Path

from rethink.engine import checkpoint as ckpt
from rethink.errors import UserError
from rethink.fileio import atomic_write_json, read_json


def run_dir(study_dir: Path, name: str) -> Path:
    return Path(study_dir) / "runs" / name


def fork_checkpoint(study_dir: Path, spec) -> Path | None:
    """The trunk's checkpoint a shorter schedule starts from (at its first LR drop); None for a run without trunk."""
    if spec.trunk is None:
        return None
    return ckpt.checkpoint_path(run_dir(study_dir, spec.trunk), spec.fork_iter)


def state_of(study_dir: Path, name: str) -> str:
    """A run's state as its directory tells it: done, settled, failed or pending."""
    return run_state(study_dir, name)[0]


def run_state(study_dir: Path, name: str, running: set = frozenset()) -> tuple[str, str | None]:
    d = run_dir(study_dir, name)
    if (d / "final.json").exists():
        return "done", None
    if (d / "settled.json").exists():  # stopped by `rethink study --adaptive`: its verdict was settled
        return "settled", read_json(d / "settled.json").get("reason")
    if (d / "FAILED").exists():
        failed = read_json(d / "FAILED")
        return "failed", f"{failed.get('reason')} at iteration {failed.get('iter')}"
    if name in running:
        return "running", None
    return "pending", None


def write_index(study_dir: Path, study, running: set = frozenset(), errors: dict | None = None) -> dict:
    runs = []
    for spec in study.runs:
        state, reason = run_state(study_dir, spec.name, running)
        if errors and spec.name in errors and state != "done":
            state, reason = "failed", errors[spec.name]
        runs.append({**spec.to_json(), "path": f"runs/{spec.name}", "state": state, "reason": reason})
    index = {
        "name": study.name,
        "study_file": str(study.path),
        "margin_ap": study.margin_ap,
        "init_cost": study.init_cost,
        "pretrain": {name: f"pretrain/{name}/pretrain.json" for name in study.pretrain},
        "runs": runs,
    }
    atomic_write_json(Path(study_dir) / "study.json", index)
    return index


class StudyLock:
    """One `rethink study` per directory: an flock, released by the OS if the process dies."""

    def __init__(self, study_dir: Path):
        self.path = Path(study_dir) / ".lock"
        self.fd = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 64).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise UserError(f"{self.path.parent}: another `rethink study` is running on it (pid {holder}); "
                            "wait for it or stop it first") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def print_status(study_dir: Path) -> int:
    path = Path(study_dir) / "study.json"
    if not path.exists():
        raise UserError(f"{study_dir}: no study.json here (run `rethink study STUDY --out {study_dir}` first)")
    index = read_json(path)
    live = _locked(Path(study_dir))
    print(f"study {index['name']} ({path}){'' if live else ', no `rethink study` running on it'}")
    print(f"{'run':44s} {'state':8s} {'iters':>8s} {'bbox/AP':>8s}  note")
    counts = {}
    for r in index["runs"]:
        state, reason = run_state(Path(study_dir), r["name"], {r["name"]} if live and r["state"] == "running" else set())
        if state == "pending" and r.get("state") == "failed":
            # a run that failed before its first iteration (a bad init, unreadable data) leaves no FAILED file in
            # its folder: study.json, which `rethink study` wrote when it ended, is then the record
            state = "failed"
        r["reason"] = reason or r.get("reason")
        final = Path(study_dir) / r["path"] / "final.json"
        ap = f"{read_json(final)['final'].get('bbox/AP', float('nan')):8.2f}" if final.exists() else f"{'-':>8s}"
        note = r.get("reason") or (f"fork of {r['trunk']} @ {r['fork_iter']}" if r.get("trunk") else "")
        print(f"{r['name']:44s} {state:8s} {r['iters']:8d} {ap}  {note}")
        counts[state] = counts.get(state, 0) + 1
    print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return 0


def _locked(study_dir: Path) -> bool:
    """Whether a `rethink study` holds the directory's lock (a stale "running" in study.json is not trusted)."""
    path = study_dir / ".lock"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
