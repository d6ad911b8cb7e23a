"""The training loop of both trainings: detection (engine/train.py) and backbone pre-training (engine/pretrain.py).

Iteration-based, as detectron2's: the LR of every iteration comes from a pure function of the iteration, and the
run directory is the only state. What both trainings do the same way lives here:

- the device and the torch settings that go with it (`setup_device`);
- where a run starts (`open_run`): its own last checkpoint, else a trunk's fork point, else iteration 0, with
  metrics.jsonl cut back to that iteration (lines logged after the checkpoint are redone by the resume);
- the loop itself (`run_loop`): set the LR, one step, then the periodic log line, evaluation and checkpoint, and
  the stop checks (SIGINT/SIGTERM, submitit's SIGUSR2, `stop_at`), with the training's data workers, the progress
  bar and the event log closed on every exit;
- what every training keeps the same way: the sums of the current log period (`PeriodMeter`), the run's wall,
  training, data and evaluation seconds across resumes (`RunClock`), both checkpointed, and the restore of a
  checkpoint's modules, optimizer and RNG state (`restore`).

A training supplies its setup and a `Steps` object: `step(it)` does one iteration (data, forward, backward,
update); `log_row(done, lr)` the training line for the period that ends at `done`; `evaluate(done)` the
evaluation line; `state_dict(done)` everything a resume needs, saved as one checkpoint; `close()` releases what
the training holds (data workers, hooks). The loop reads no key of those lines except the ones the training
names for the progress bar (`shown`, `headline`).
"""

import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import torch
from tqdm import tqdm

from rethink.engine import checkpoint as ckpt
from rethink.engine import distributed
from rethink.engine.events import RunLog
from rethink.errors import Interrupted, RunFailed, UserError
from rethink.fileio import atomic_write_json, atomic_write_text, read_json, read_jsonl, write_jsonl_text
from rethink.models.backbone import norm_parameter_ids


def resolve_device(device: str, norm: str) -> torch.device:
    """cuda when asked for or available (`device: auto`), else cpu; SyncBN without CUDA is a clear error."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("device: cuda was asked for, but no CUDA device is available here")
        return torch.device("cuda")
    if norm == "syncbn":
        raise UserError(
            "model.norm: syncbn needs CUDA (torch's SyncBatchNorm has no CPU implementation); "
            "on CPU use gn, which trains from scratch at any batch size"
        )
    return torch.device("cpu")


def setup_device(device: str, norm: str, threads: int, deterministic: bool) -> torch.device:
    """The run's device, and the torch settings that go with it, the same for every training."""
    dev = resolve_device(device, norm)
    if threads:
        torch.set_num_threads(threads)
    elif dev.type == "cpu":
        chosen, why = default_threads(deterministic)
        if chosen:
            torch.set_num_threads(chosen)
        if os.environ.get("RANK", "0") == "0":
            print(f"threads: {torch.get_num_threads()} ({why}; set threads=N to choose)", flush=True)
    if deterministic:
        if dev.type == "cuda":
            # cuBLAS is deterministic only with a fixed workspace (read when its handle is created, i.e. later).
            # torchvision's roi_align backward has no deterministic CUDA kernel (atomic adds): warn, do not stop.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=dev.type == "cuda")
    if dev.type == "cuda":
        # Autotuned conv kernels: a new tuning per distinct padded input size, amortized over a long run.
        torch.backends.cudnn.benchmark = not deterministic
    return dev


def default_threads(deterministic: bool) -> tuple[int | None, str]:
    """The intra-op thread count of a CPU run with `threads: 0`, and why: (None, why) leaves torch's own.

    Torch takes every core, which on a shared or small machine is a trap: its threads spin waiting for each other
    while other work holds the cores (a tiny run went from 44 to 0.5-4 img/s on a busy 2-core machine).
    OMP_NUM_THREADS, when set (`rethink study` sets it per run), is kept.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return None, "from OMP_NUM_THREADS"
    cores = available_cores()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return choose_threads(cores, load, deterministic), f"{cores} cores, load {load:.1f}"


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. a SLURM or container allocation)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def choose_threads(cores: int, load: float, deterministic: bool) -> int:
    """The cores that other work leaves free (load: the 1-minute load average), at least 1 and at most 8 (small
    detectors gain little past that). A deterministic run takes min(cores, 4) whatever the load: CPU kernels may
    split a sum differently with another thread count, and a resume must compute exactly what the run would have."""
    if deterministic:
        return max(1, min(cores, 4))
    return max(1, min(int(round(cores - load)), 8))


def amp_dtype(device: torch.device, amp: bool):
    """Mixed precision on CUDA only: bf16 where the GPU has it (no loss scaling needed), else fp16."""
    if device.type != "cuda" or not amp:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def param_groups(model, weight_decay: float, weight_decay_norm: float) -> list[dict]:
    """SGD's parameter groups: no weight decay on norm parameters and biases (the paper's recipe, as detectron2);
    frozen parameters are left out."""
    norm_ids = norm_parameter_ids(model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if id(p) in norm_ids or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": weight_decay_norm}]


class Signals:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the end of the iteration and stops.

    SIGUSR2 too, when a handler is already listening for it: submitit's, which requeues a SLURM job that is near
    its time limit (or preempted, where the cluster sends the job's signal then). The loop saves first and then
    hands the signal over (hand_over), so the requeued job resumes from that iteration, not from the last
    periodic checkpoint.
    """

    def __init__(self):
        self.stop = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
            if callable(signal.getsignal(signal.SIGUSR2)):
                self._old[signal.SIGUSR2] = signal.signal(signal.SIGUSR2, self._handle)
        return self

    def _handle(self, signum, frame):
        self.stop = signal.Signals(signum).name

    def hand_over(self):
        """Pass a SIGUSR2 we kept to the handler that was there before (submitit: requeue this job and exit)."""
        if self.stop == "SIGUSR2" and callable(self._old.get(signal.SIGUSR2)):
            self._old[signal.SIGUSR2](signal.SIGUSR2, None)

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def open_run(out: Path, fork_from: Path | None = None, is_main: bool = True) -> tuple[int, dict | None, str]:
    """(start iteration, checkpoint state or None, how): "resumed" from the run's own last checkpoint, "forked"
    from a trunk's checkpoint (a study's shorter schedule), or "new".

    metrics.jsonl is cut back to the start iteration; for a fork it is the trunk's curve up to the fork point.
    """
    resumed = ckpt.latest(out)
    if resumed is not None:
        start_iter, path = resumed
        state, source, how = ckpt.load(path), out / "metrics.jsonl", "resumed"
    elif fork_from is not None:
        state = ckpt.load(fork_from)
        start_iter, source, how = int(state["iter"]), Path(fork_from).parent.parent / "metrics.jsonl", "forked"
    else:
        start_iter, state, source, how = 0, None, None, "new"
    if is_main:
        kept = [r for r in read_jsonl(source) if r.get("iter", 0) <= start_iter] if source is not None else []
        atomic_write_text(out / "metrics.jsonl", write_jsonl_text(kept))
    return start_iter, state, how


@dataclass(frozen=True)
class Periods:
    """When the loop logs, evaluates and checkpoints; `keep_iters` are always checkpointed and kept (fork points)."""

    max_iter: int
    log: int
    evals: frozenset[int]
    checkpoint: int
    keep_last: int = 1
    keep_iters: tuple[int, ...] = ()


class PeriodMeter:
    """The sums over the current log period: iterations, images, step and data seconds, and the training's own
    values (its loss terms, correct predictions...). Values may be device tensors, summed without a CPU-GPU sync;
    they are read once per log line. Checkpointed with the run, so a resumed run logs the lines of an uninterrupted
    one."""

    def __init__(self, state: dict | None = None):
        self.reset()
        if state:
            self.iters, self.images = int(state["iters"]), int(state["images"])
            self.time_s, self.data_s = float(state["time_s"]), float(state["data_s"])
            # a checkpoint written before the sums had their own key kept them beside the counts
            base = ("iters", "images", "time_s", "data_s")
            self.sums = dict(state.get("sums", {k: v for k, v in state.items() if k not in base}))

    def reset(self) -> None:
        self.iters, self.images, self.time_s, self.data_s = 0, 0, 0.0, 0.0
        self.sums: dict = {}

    def add(self, images: int, time_s: float, data_s: float, **values) -> None:
        self.iters += 1
        self.images += images
        self.time_s += time_s
        self.data_s += data_s
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0) + value

    def mean(self, key: str) -> float:
        """A value's mean per iteration over the period."""
        return float(self.sums.get(key, 0.0)) / self.iters if self.iters else math.nan

    def rates(self) -> dict:
        """Images per second of iteration time (data + step, not logging, evaluation or checkpoints), and the share
        of it spent waiting for data."""
        return {"img_per_s": self.images / self.time_s if self.time_s > 0 else 0.0,
                "data_fraction": self.data_s / self.time_s if self.time_s > 0 else 0.0}

    def state_dict(self) -> dict:
        return {"iters": self.iters, "images": self.images, "time_s": self.time_s, "data_s": self.data_s,
                "sums": {k: v.item() if torch.is_tensor(v) else v for k, v in self.sums.items()}}


class RunClock:
    """A run's seconds across its resumes: wall (from the process's start), training, data and evaluation."""

    KEYS = ("wall_time_s", "train_time_s", "data_time_s", "eval_time_s")

    def __init__(self, state: dict | None = None, start: float | None = None):
        self.before = {k: float((state or {}).get(k, 0.0)) for k in self.KEYS}
        self.start = time.perf_counter() if start is None else start

    def add(self, key: str, seconds: float) -> None:
        self.before[key] += seconds

    def segment_s(self) -> float:
        """Wall seconds of this process's segment of the run."""
        return time.perf_counter() - self.start

    def elapsed(self) -> dict:
        return {**self.before, "wall_time_s": self.before["wall_time_s"] + self.segment_s()}


NONFINITE_HINT = "lower solver.base_lr or lengthen solver.warmup_iters"


def fail_run(out: Path, it: int, reason: str, losses: dict):
    """Stop a run for good (a non-finite loss, in every training alike): the FAILED marker records the iteration,
    the reason and the loss terms, and RunFailed says so in one line. The same command then refuses to resume it."""
    if distributed.is_main():
        atomic_write_json(out / "FAILED", {"iter": it, "reason": reason, "losses": losses})
    raise RunFailed(f"{out}: {reason} at iteration {it} ({', '.join(f'{k}={v:.4g}' for k, v in losses.items())}); "
                    f"{NONFINITE_HINT}")


def refuse_failed(out: Path) -> None:
    """A run that failed earlier stops here, saying how to retry it."""
    if (out / "FAILED").exists():
        failed = read_json(out / "FAILED")
        raise RunFailed(f"{out}: failed earlier at iteration {failed.get('iter')}: {failed.get('reason')}; "
                        f"delete {out / 'FAILED'} to retry from the last checkpoint")


def restore(state: dict, modules: dict, optimizer) -> None:
    """Load a checkpoint into a training: each module's weights (`modules`: checkpoint key -> module), the
    optimizer, and the RNG states, which the data and draws of the next iterations depend on."""
    for key, module in modules.items():
        module.load_state_dict(state[key])
    optimizer.load_state_dict(state["optimizer"])
    ckpt.set_rng_state(state["rng"])


class Steps(Protocol):
    headline: str  # the evaluation line's key the progress bar prints
    shown: tuple[str, ...]  # the training line's keys the progress bar shows

    def step(self, it: int) -> None: ...

    def log_row(self, done: int, lr: float) -> dict | None: ...

    def evaluate(self, done: int) -> dict: ...

    def state_dict(self, done: int) -> dict: ...

    def close(self) -> None: ...


def run_loop(steps: Steps, optimizer, get_lr: Callable[[int], float], out: Path, start_iter: int, periods: Periods,
             *, progress: bool = True, world_size: int = 1, device=None, stop_at: int | None = None) -> None:
    """Iterations start_iter..max_iter-1 of one run; returns when the last is done and checkpointed.

    Raises Interrupted after saving a checkpoint when a signal (or `stop_at`: stop once this iteration is done)
    stops it early. With several
    processes every one of them takes the same stop decision, at the same iteration.
    """
    is_main = distributed.is_main()
    log = RunLog(out) if is_main else None
    bar = tqdm(total=periods.max_iter, initial=start_iter, disable=not (progress and is_main), dynamic_ncols=True,
               desc=out.name, unit="it", mininterval=1.0)
    try:
        with Signals() as signals:
            for it in range(start_iter, periods.max_iter):
                lr = get_lr(it)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                done = it + 1
                log_now = done % periods.log == 0 or done == periods.max_iter
                steps.step(it)
                bar.update(1)

                row = steps.log_row(done, lr) if log_now else None
                if row is not None:
                    if log is not None:
                        log.write(row)
                    bar.set_postfix({k: f"{row[k]:.4g}" for k in steps.shown if row.get(k) is not None})
                if done in periods.evals:
                    row = steps.evaluate(done)
                    if log is not None:
                        log.write(row)
                    bar.write(f"{out.name} iter {done}: {steps.headline} {row[steps.headline]:.2f}")

                stop = signals.stop is not None
                if world_size > 1:
                    # a signal reaches the processes at different iterations; one that stopped alone would leave
                    # the others waiting in a collective
                    stop = distributed.all_reduce_sum([1.0 if stop else 0.0], device)[0] > 0
                asked = stop_at is not None and done >= stop_at
                if (done % periods.checkpoint == 0 or done in periods.keep_iters or done == periods.max_iter
                        or stop or asked):
                    state = steps.state_dict(done)
                    if is_main:
                        ckpt.save(out, done, state, periods.keep_last, periods.keep_iters, periods.max_iter)
                    distributed.barrier()
                if (stop or asked) and done < periods.max_iter:
                    signals.hand_over()  # under submitit on SIGUSR2: requeued, resumes from the checkpoint just saved
                    why = signals.stop or (f"stop_at={stop_at}" if asked else "a signal to another process")
                    raise Interrupted(f"{out}: stopped by {why} at iteration {done}; checkpoint saved, "
                                      "run the same command to resume")
    finally:
        steps.close()
        bar.close()
        if log is not None:
            log.close()
