"""`rethink train --nproc N`: run the same command under torchrun on this machine (DDP)."""

import subprocess
import sys


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    # torch.distributed.run is torchrun's module; --standalone picks a free rendezvous port on one machine.
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "rethink", *argv]


def run_torchrun(nproc: int, argv: list[str]) -> int:
    return subprocess.call(torchrun_command(nproc, argv))
