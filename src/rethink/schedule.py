"""Schedule arithmetic: `Nx` schedules, LR drop points, warm-up, linear LR scaling, fork points.

The field writes schedules as multiples of a "1x" length (90k iterations at batch 16 for COCO).
Detectron's rule, used by the paper, places the two LR drops (x0.1 each):
  - for N >= 2: at the last 2/3 and the last 2/9 of a 1x length (COCO: the last 60k and 20k iterations),
    whatever the total, so every schedule of 2x or longer follows the same trajectory until its first drop;
  - for N < 2: at 2/3 and 8/9 of the run (1x: 60k and 80k).
Because of that shared trajectory, a shorter schedule can be forked from a longer run's checkpoint taken
exactly at the shorter schedule's first drop (see `fork_iter`).
"""

import math
import re

from rethink.errors import UserError

_SCHEDULE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*[xX]\s*$")


def parse_schedule(text, key: str = "solver.schedule") -> float:
    """'2x' -> 2.0, '0.5x' -> 0.5. Anything else is a user error naming `key`."""
    match = _SCHEDULE_RE.match(str(text))
    if not match:
        raise UserError(f"{key}: '{text}' is not a schedule; write it as the field does, e.g. 1x, 2x, 0.5x")
    factor = float(match.group(1))
    if factor <= 0:
        raise UserError(f"{key}: '{text}' must be a positive multiple of the 1x length")
    return factor


def format_schedule(factor: float) -> str:
    return f"{factor:g}x"


def total_iters(factor: float, iters_1x: int) -> int:
    return int(round(factor * iters_1x))


def drop_iters(factor: float, iters_1x: int) -> tuple[int, int]:
    """The two iterations at which the LR is multiplied by gamma (the LR at iteration == drop is already lower)."""
    total = total_iters(factor, iters_1x)
    if factor >= 2:
        first = total - int(round(iters_1x * 2 / 3))
        second = total - int(round(iters_1x * 2 / 9))
    else:
        first = int(round(total * 2 / 3))
        second = int(round(total * 8 / 9))
    return first, second


def scaled_lr(base_lr: float, batch_size: int, reference_batch_size: int = 16) -> float:
    """Linear scaling rule (Goyal et al.): the LR is given for the reference batch (16 in the paper)."""
    return base_lr * batch_size / reference_batch_size


def lr_factor(it: int, drops: tuple[int, ...], warmup_iters: int, warmup_factor: float, gamma: float = 0.1) -> float:
    """Multiplier of the (scaled) base LR used for iteration `it` (0-based), as detectron2's WarmupMultiStepLR."""
    factor = gamma ** sum(1 for d in drops if it >= d)
    if it < warmup_iters:
        alpha = it / warmup_iters
        factor *= warmup_factor * (1 - alpha) + alpha
    return factor


def fork_iter(short_factor: float, long_factor: float, iters_1x: int) -> int | None:
    """Iteration at which a run of `short_factor` can start from a `long_factor` run's checkpoint.

    Both runs use the same LR up to the short schedule's first drop if that drop comes no later than the long
    schedule's first drop; the short run then only trains its tail. None when they part earlier.
    """
    if short_factor >= long_factor:
        return None
    short_first = drop_iters(short_factor, iters_1x)[0]
    long_first = drop_iters(long_factor, iters_1x)[0]
    if short_first <= long_first and short_first > 0:
        return short_first
    return None


def check_schedule(factor: float, iters_1x: int, warmup_iters: int, key: str = "solver.schedule") -> None:
    """Refuse schedules whose drop points would fall outside the run or inside the warm-up."""
    total = total_iters(factor, iters_1x)
    first, second = drop_iters(factor, iters_1x)
    if total < 1:
        raise UserError(f"{key}: {format_schedule(factor)} of {iters_1x} iterations is less than one iteration")
    if not (0 < first <= second <= total):
        raise UserError(
            f"{key}: {format_schedule(factor)} with solver.iters_1x={iters_1x} puts the LR drops at {first} and {second}, "
            f"outside the run of {total} iterations"
        )
    if warmup_iters > first:
        raise UserError(
            f"solver.warmup_iters: {warmup_iters} is past the first LR drop at iteration {first} "
            f"of the {format_schedule(factor)} schedule; set it to at most {first} (a tenth of solver.iters_1x is "
            "a safe choice), or lengthen solver.iters_1x"
        )


def eval_iters(total: int, eval_period: int) -> list[int]:
    """Iterations at which a run evaluates: every eval_period and at the end."""
    points = list(range(eval_period, total, eval_period)) if eval_period > 0 else []
    points.append(total)
    return points


def gpu_hours(images: int, img_per_s: float) -> float:
    return images / img_per_s / 3600.0 if img_per_s > 0 else math.inf


def cosine_lr(it: int, base_lr: float, warmup_iters: int, total: int) -> float:
    """LR of iteration `it` (0-based): linear warm-up over `warmup_iters`, then cosine from base_lr to 0."""
    if it < warmup_iters:
        return base_lr * (it + 1) / warmup_iters
    progress = (it - warmup_iters) / max(1, total - warmup_iters)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
