"""The command lines that start a training: `rethink train ...` as its own process, or under torchrun (DDP).

`rethink train --nproc N` and `rethink study --executor torchrun|local` both build them here.
"""

import subprocess
import sys


def train_argv(config, out, overrides=(), fork_from=None, keep_iters=(), progress: bool = True,
               stop_at: int | None = None) -> list[str]:
    """`rethink train`'s arguments for one run (what follows `python -m rethink`)."""
    argv = ["train", str(config), "--out", str(out)] + [a for o in overrides for a in ("--set", o)]
    if fork_from:
        argv += ["--fork-from", str(fork_from)]
    if keep_iters:
        argv += ["--keep-iters", ",".join(map(str, keep_iters))]
    if stop_at is not None:
        argv += ["--stop-at", str(stop_at)]
    if not progress:
        argv.append("--no-progress")
    return argv


def rethink_command(argv: list[str], nproc: int = 1) -> list[str]:
    """`python -m rethink ARGV`, or the same under torchrun with `nproc` processes on this machine."""
    if nproc > 1:
        # torch.distributed.run is torchrun's module; --standalone picks a free rendezvous port on one machine.
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                "-m", "rethink", *argv]
    return [sys.executable, "-m", "rethink", *argv]


def run_torchrun(nproc: int, argv: list[str]) -> int:
    return subprocess.call(rethink_command(argv, nproc))
