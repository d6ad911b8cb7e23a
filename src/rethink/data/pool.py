"""Work units over a process pool, for the bundled benchmark's images: the results come back in task order and
each unit draws from its own seeds, so the output is the same whatever the number of processes."""

from __future__ import annotations

import multiprocessing
import os
from contextlib import contextmanager


def default_workers(total_images: int) -> int:
    # Starting a pool costs more than it saves on a few hundred images.
    if total_images < 2000:
        return 1
    return max(1, min(8, os.cpu_count() or 1))


@contextmanager
def worker_pool(workers: int | None, total_images: int):
    """A process pool for the work units, or None where one process draws everything."""
    n_workers = workers if workers is not None else default_workers(total_images)
    # spawn, not fork: the caller may have started torch's thread pools, which fork can deadlock.
    pool = multiprocessing.get_context("spawn").Pool(n_workers) if n_workers > 1 else None
    try:
        yield pool
    finally:
        if pool is not None:
            pool.close()
            pool.join()


def run_in_order(pool, fn, tasks, sizes, desc: str, progress: bool):
    """Results of fn over tasks, in task order (so the output never depends on the pool)."""
    from tqdm import tqdm

    results = []
    with tqdm(total=sum(sizes), desc=desc, unit="img", disable=not progress, leave=True) as bar:
        mapped = pool.imap(fn, tasks) if pool is not None else map(fn, tasks)
        for result, n in zip(mapped, sizes):
            results.append(result)
            bar.update(n)
    return results


def chunks(n: int, chunk: int) -> list[tuple[int, int]]:
    """[start, stop) spans of at most `chunk` items covering range(n)."""
    return [(a, min(a + chunk, n)) for a in range(0, n, chunk)]
