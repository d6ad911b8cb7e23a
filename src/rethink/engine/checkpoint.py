"""Checkpoints: the full training state, written atomically, pruned by a policy that keeps fork points.

A checkpoint holds everything a resume needs to continue exactly as if never stopped: model, optimizer,
iteration (which is also the sampler position and the LR schedule position), RNG states, counters, the
best metrics so far and the wall time spent. Files are `checkpoints/iter_0001234.pt`.

Pruning policy: keep the newest `keep_last` checkpoints, plus every iteration listed in `keep_iters` (fork
points of a study's shorter schedules), plus the final one. Everything else is deleted after a newer
checkpoint is safely on disk.
"""

import random
import re
from pathlib import Path

import numpy as np
import torch

from rethink.errors import UNREADABLE, UserError
from rethink.fileio import atomic_save_with, check_free_space, load_failure

_NAME = re.compile(r"^iter_(\d{7,})\.pt$")


def checkpoint_path(run_dir: Path, it: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"iter_{it:07d}.pt"


def list_checkpoints(run_dir: Path) -> dict[int, Path]:
    folder = Path(run_dir) / "checkpoints"
    found = {}
    if folder.is_dir():
        for p in folder.iterdir():
            m = _NAME.match(p.name)
            if m:
                found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # numpy's and Python's states as plain lists/ints: the file stays loadable with weights_only=True
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": _plain(random.getstate()),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    random.setstate(_tuples(state["python"]))


def _plain(x):
    return [_plain(v) for v in x] if isinstance(x, (tuple, list)) else x


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


def save(run_dir: Path, it: int, state: dict, keep_last: int, keep_iters=(), final_iter: int | None = None) -> Path:
    path = checkpoint_path(run_dir, it)
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = list_checkpoints(run_dir)
    # Fail before writing rather than leave a truncated file: estimate from the last checkpoint's size.
    estimate = max((p.stat().st_size for p in previous.values()), default=0) or _estimate_bytes(state)
    check_free_space(path.parent, int(estimate * 1.2) + 2**20, f"the checkpoint at iteration {it}")
    atomic_save_with(path, lambda tmp: torch.save(state, tmp))
    prune(run_dir, keep_last, keep_iters, final_iter)
    return path


def _estimate_bytes(state: dict) -> int:
    total = 0

    def walk(x):
        nonlocal total
        if isinstance(x, torch.Tensor):
            total += x.numel() * x.element_size()
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    walk(state)
    return total


def prune(run_dir: Path, keep_last: int, keep_iters=(), final_iter: int | None = None) -> None:
    found = list_checkpoints(run_dir)
    newest = sorted(found)[-keep_last:]
    keep = set(newest) | set(keep_iters) | ({final_iter} if final_iter is not None else set())
    for it, p in found.items():
        if it not in keep:
            p.unlink(missing_ok=True)


def load(path: Path) -> dict:
    try:
        # Our own checkpoints hold only tensors and plain containers, so weights_only=True reads them fully.
        return torch.load(path, map_location="cpu", weights_only=True)
    except (*UNREADABLE, OSError) as e:
        raise UserError(f"{path}: cannot read checkpoint ({load_failure(path, e)}); pass a run's "
                        "checkpoints/iter_*.pt") from None


def latest(run_dir: Path) -> tuple[int, Path] | None:
    found = list_checkpoints(run_dir)
    if not found:
        return None
    it = max(found)
    return it, found[it]
