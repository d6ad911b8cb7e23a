"""The executors of `rethink study` (pipeline.py): run what is missing of a study, in dependency order.

Idempotent: every run's state lives in its own directory, so after a kill, a failure or an added matrix value
the same command does only what is left (each run resumes from its last checkpoint). Executors:
  local     runs as subprocesses, `jobs` side by side, each with cores/jobs threads;
  torchrun  each run under `torchrun --nproc_per_node N`, one after another (multi-GPU machines);
  slurm     one submitit job per run; forks wait for their trunk (afterok dependency).
"""

import dataclasses
import os
import subprocess
import time
from pathlib import Path

import torch

from rethink import config as cfgmod
from rethink.engine import checkpoint as ckpt
from rethink.engine.launch import rethink_command, train_argv
from rethink.fileio import atomic_write_text, read_json
from rethink.study import store
from rethink.study.plan import RunSpec, StudyPlan


def default_jobs() -> int:
    """Runs side by side on this machine.

    On CPU each core gets a run (at most 4): small detection models do not scale across threads, and two 1-thread
    processes side by side train more images/s than one 2-thread process (benchmarks/README.md, design
    measurements). On a GPU machine runs share the GPU badly: one at a time.
    """
    if torch.cuda.is_available():
        return 1
    return max(1, min(os.cpu_count() or 1, 4))


def train_command(spec: RunSpec, study_dir: Path, nproc: int = 1, stop_at: int | None = None) -> list[str]:
    d = store.run_dir(study_dir, spec.name)
    fork = store.fork_checkpoint(study_dir, spec)
    argv = train_argv(d / "config.yaml", d, fork_from=fork, keep_iters=spec.keep_iters, progress=False,
                      stop_at=stop_at)
    return rethink_command(argv, nproc)


def _prepare_run_dir(spec: RunSpec, study_dir: Path) -> None:
    d = store.run_dir(study_dir, spec.name)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "config.yaml"
    text = cfgmod.dump_yaml(spec.config)
    if not path.exists():
        atomic_write_text(path, text)


def _fork_ready(spec: RunSpec, study_dir: Path) -> bool:
    if spec.trunk is None:
        return True
    return store.fork_checkpoint(study_dir, spec).exists()


def _summary_line(spec: RunSpec, study_dir: Path) -> str:
    final = read_json(store.run_dir(study_dir, spec.name) / "final.json")
    return f"bbox/AP {final['final'].get('bbox/AP', float('nan')):.2f}, {final['wall_time_s']:.0f} s"


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "no output"


def _start(spec: RunSpec, study_dir: Path, nproc: int, threads: int | None, stop_at: int | None) -> tuple:
    """Start one run as a subprocess, its output appended to the run's log.txt: (process, start time, log)."""
    _prepare_run_dir(spec, study_dir)
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    log = open(store.run_dir(study_dir, spec.name) / "log.txt", "a")
    proc = subprocess.Popen(train_command(spec, study_dir, nproc, stop_at), stdout=log, stderr=subprocess.STDOUT,
                            env=env)
    return proc, time.time(), log


def _finished_line(study: StudyPlan, study_dir: Path, name: str, stop_at: int | None, errors: dict) -> str:
    """What a run's end says: its AP, a pause at its segment's stop, or why it failed (recorded in `errors`)."""
    state, reason = store.run_state(study_dir, name)
    if state == "done":
        return _summary_line(next(s for s in study.runs if s.name == name), study_dir)
    if _reached(study_dir, name, stop_at):
        return f"paused at iteration {stop_at}"
    errors[name] = reason or _last_line(store.run_dir(study_dir, name) / "log.txt")
    return f"FAILED: {errors[name]}"


def _reached(study_dir: Path, name: str, stop_at: int | None) -> bool:
    """Whether a run has a checkpoint at or past the iteration it is to stop at."""
    if stop_at is None:
        return False
    last = ckpt.latest(store.run_dir(study_dir, name))
    return last is not None and last[0] >= stop_at


def run_local(study: StudyPlan, study_dir: Path, jobs: int, nproc: int = 1, progress: bool = True,
              only: set | None = None, stop_at: dict | None = None) -> dict:
    """Run pending runs as subprocesses; returns {name: error} for runs that did not finish.

    only: the names to run (default all). stop_at: {name: iteration} to stop a run at (an adaptive study's
    segment); a run that stops there, or is already there, is paused, not failed.
    """
    stop_at = stop_at or {}
    todo = [s for s in study.runs if store.state_of(study_dir, s.name) == "pending"
            and (only is None or s.name in only) and not _reached(study_dir, s.name, stop_at.get(s.name))]
    total = len(todo)
    # trunks first (longest first), then forks as their fork checkpoint appears
    todo.sort(key=lambda s: (s.trunk is not None, -s.iters, s.name))
    threads = max(1, (os.cpu_count() or 1) // jobs) if nproc == 1 else None
    running: dict[str, tuple[subprocess.Popen, float, object]] = {}
    errors: dict[str, str] = {}
    finished = 0
    store.write_index(study_dir, study, set(), errors)
    while todo or running:
        for spec in list(todo):
            if len(running) >= jobs:
                break
            if spec.trunk and not _fork_ready(spec, study_dir):
                trunk_state = store.run_state(study_dir, spec.trunk, set(running))[0]
                if trunk_state == "done":
                    # e.g. a schedule added after the trunk finished: its fork point was not kept; train it whole
                    todo[todo.index(spec)] = spec = dataclasses.replace(spec, trunk=None, fork_iter=None)
                elif trunk_state == "settled":  # an adaptive study stopped the trunk before the fork point
                    todo.remove(spec)
                    continue
                elif trunk_state == "failed" or spec.trunk in errors:
                    errors[spec.name] = f"its trunk {spec.trunk} stopped before the fork point {spec.fork_iter}"
                    todo.remove(spec)
                    finished += 1
                    continue
                else:
                    continue
            running[spec.name] = _start(spec, study_dir, nproc, threads, stop_at.get(spec.name))
            todo.remove(spec)
            if progress:
                source = f" (fork of {spec.trunk} at {spec.fork_iter})" if spec.trunk else ""
                print(f"[study] start {spec.name}{source}", flush=True)
            store.write_index(study_dir, study, set(running), errors)
        time.sleep(0.2)
        for name, (proc, started, log) in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            log.close()
            del running[name]
            finished += 1
            line = _finished_line(study, study_dir, name, stop_at.get(name), errors)
            if progress:
                print(f"[study] {finished}/{total} {name}: {line}", flush=True)
            store.write_index(study_dir, study, set(running), errors)
    return errors


class SlurmRun:
    """One run as a submitit job: sets torch.distributed's variables from SLURM, trains, requeues on preemption."""

    def __init__(self, config_path: str, out: str, fork_from: str | None, keep_iters: tuple):
        self.config_path, self.out, self.fork_from, self.keep_iters = config_path, out, fork_from, keep_iters

    def __call__(self):
        import submitit

        from rethink.config import load_config
        from rethink.engine.train import train

        try:
            env = submitit.JobEnvironment()
            os.environ.update(RANK=str(env.global_rank), LOCAL_RANK=str(env.local_rank),
                              WORLD_SIZE=str(env.num_tasks), MASTER_ADDR=env.hostnames[0],
                              MASTER_PORT=os.environ.get("MASTER_PORT", "29500"))
        except RuntimeError:
            pass  # submitit's local executor without a SLURM environment: one process
        fork = Path(self.fork_from) if self.fork_from else None
        return train(load_config(self.config_path), Path(self.out), fork_from=fork, keep_iters=self.keep_iters,
                     progress=False)

    def checkpoint(self, *args, **kwargs):
        # Preempted or out of time: requeue the same call; train() resumes from the run's last checkpoint.
        import submitit

        return submitit.helpers.DelayedSubmission(SlurmRun(self.config_path, self.out, self.fork_from,
                                                           self.keep_iters))


def run_slurm(study: StudyPlan, study_dir: Path, options: dict, progress: bool = True) -> dict:
    import submitit

    folder = Path(options.get("folder") or study_dir / "slurm")
    cluster = options.get("cluster")  # None: SLURM if present; "local" for tests and single machines
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    gpus = int(options.get("gpus_per_node") or 1)
    params = dict(timeout_min=int(options.get("time_min") or 4320), name=f"rethink-{study.name}")
    if executor.cluster == "slurm":
        params.update(slurm_partition=options.get("partition"), gpus_per_node=gpus, tasks_per_node=gpus,
                      nodes=1, cpus_per_task=max(1, int(options.get("cpus_per_task") or 8)))
        params = {k: v for k, v in params.items() if v is not None}
    executor.update_parameters(**params)
    errors: dict[str, str] = {}
    pending = [s for s in study.runs if store.state_of(study_dir, s.name) == "pending"]
    jobs = {}
    # Trunks first; forks depend on their trunk's job (afterok) on SLURM, and wait for it here otherwise.
    for wave in ([s for s in pending if s.trunk is None], [s for s in pending if s.trunk is not None]):
        for spec in wave:
            _prepare_run_dir(spec, study_dir)
            d = store.run_dir(study_dir, spec.name)
            fork = str(store.fork_checkpoint(study_dir, spec)) if spec.trunk else None
            if spec.trunk in jobs and executor.cluster == "slurm":
                executor.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{jobs[spec.trunk].job_id}"})
            elif executor.cluster == "slurm":
                executor.update_parameters(slurm_additional_parameters={})
            if spec.trunk in jobs and executor.cluster != "slurm":
                _wait_job(jobs[spec.trunk], spec.trunk, errors)
            jobs[spec.name] = executor.submit(SlurmRun(str(d / "config.yaml"), str(d), fork, spec.keep_iters))
            if progress:
                print(f"[study] submitted {spec.name} as job {jobs[spec.name].job_id}", flush=True)
        store.write_index(study_dir, study, set(jobs), errors)
    for name, job in jobs.items():
        _wait_job(job, name, errors)
        if progress:
            print(f"[study] {name}: {'FAILED: ' + errors[name] if name in errors else 'done'}", flush=True)
        store.write_index(study_dir, study, set(), errors)
    return errors


def _wait_job(job, name: str, errors: dict) -> None:
    try:
        job.result()
    except Exception as e:  # the job's own exception, re-raised by submitit: record it, go on with the others
        errors[name] = str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__
