"""The numbers behind the report: per-cell means over seeds, paired differences, and the findings.

Three layers, each usable on its own:
1. pure functions on plain numbers (`mean_std`, `paired_difference`, `iters_to_fraction`,
   `ahead_status`, `within_status`), unit-tested on constructed values;
2. `load_study` reads a study directory (study.json + run dirs) into `Study` / `RunRecord`;
3. `summarize` turns a loaded study into the dict written as report/summary.json: cells, paired
   comparisons, findings, missing and failed runs.

Finding rules (d = pretrained minus random, paired by seed; m = the study's margin_ap):
- "ahead" (converges_faster, small_data_hurts_random): holds when mean(d) > m and, with n >= 2, the
  95% t interval of d lies above 0; with n >= 2, mean(d) > m but an interval reaching 0 is
  not_enough_evidence; mean(d) <= m does_not_hold. With n = 1 only the margin decides.
- "within" (catches_up, localization, how much data random needs): with n >= 2, holds when the
  whole 95% interval is <= m (an equivalence-style test: the data rule out a gap larger than the
  margin), does_not_hold when the whole interval is > m, not_enough_evidence when it straddles m.
  With n = 1 only the margin decides: holds when d <= m.
"""

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from scipy import stats as scipy_stats

from rethink.errors import UserError
from rethink.fileio import read_json, read_jsonl

CONFIDENCE = 0.95
RANDOM = "random"
PRIMARY = "bbox/AP"
FRACTION_OF_BEST = 0.9

HOLDS = "holds"
DOES_NOT_HOLD = "does_not_hold"
NOT_ENOUGH = "not_enough_evidence"

NO_SIGNIFICANCE = "One seed per cell: no claim of significance can be made."


# ---------------------------------------------------------------------------------------------
# Pure functions on plain numbers
# ---------------------------------------------------------------------------------------------


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def mean_std(values) -> dict:
    """Mean and sample standard deviation (divisor n-1) of the finite values.

    Non-finite values (NaN AP of an empty size bucket, None) are left out and not counted in n.
    std is None below two values: one seed says nothing about spread.
    """
    vals = [float(v) for v in values if _is_number(v)]
    n = len(vals)
    if n == 0:
        return {"mean": None, "std": None, "n": 0}
    mean = math.fsum(vals) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1)) if n >= 2 else None
    return {"mean": mean, "std": std, "n": n}


def paired_difference(a, b, confidence: float = CONFIDENCE) -> dict:
    """Paired differences a[i] - b[i] with a two-sided t confidence interval on their mean.

    a and b are aligned by seed. A pair with a non-finite value on either side is dropped.
    With n < 2 the interval is undefined: ci_low, ci_high and significant are None, which the
    report words as "no claim of significance can be made". significant is True when the
    interval excludes 0.
    """
    if len(a) != len(b):
        raise ValueError(f"paired_difference needs equally long lists, got {len(a)} and {len(b)}")
    diffs = [float(x) - float(y) for x, y in zip(a, b) if _is_number(x) and _is_number(y)]
    summary = mean_std(diffs)
    n, mean, std = summary["n"], summary["mean"], summary["std"]
    result = {"mean": mean, "std": std, "n": n, "ci_low": None, "ci_high": None,
              "significant": None, "confidence": confidence}
    if n >= 2:
        half_width = scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
        result["ci_low"] = mean - half_width
        result["ci_high"] = mean + half_width
        result["significant"] = bool(result["ci_low"] > 0 or result["ci_high"] < 0)
    return result


def iters_to_fraction(iters, values, fraction: float = FRACTION_OF_BEST):
    """First iteration at which the curve reaches `fraction` of its own best value.

    None when the curve has no finite value or its best is not positive (a run that learned nothing
    has no meaningful "90% of best").
    """
    points = sorted((int(i), float(v)) for i, v in zip(iters, values) if _is_number(v))
    if not points:
        return None
    best = max(v for _, v in points)
    if best <= 0:
        return None
    threshold = fraction * best
    for i, v in points:
        if v >= threshold:
            return i
    return None  # unreachable: the best point itself passes


def iters_to_reach(iters, values, target: float):
    """First evaluated iteration at which the curve reaches `target` (None when it never does)."""
    for i, v in sorted((int(i), float(v)) for i, v in zip(iters, values) if _is_number(v)):
        if v >= target:
            return i
    return None


def ahead_status(diff: dict, margin: float) -> str:
    """Is the first arm ahead by more than `margin`? (rule in the module docstring)."""
    if diff is None or diff["n"] == 0:
        return NOT_ENOUGH
    if diff["mean"] <= margin:
        return DOES_NOT_HOLD
    if diff["n"] == 1:
        return HOLDS
    return HOLDS if diff["ci_low"] > 0 else NOT_ENOUGH


def within_status(diff: dict, margin: float) -> str:
    """Is the first arm ahead by at most `margin`? (rule in the module docstring)."""
    if diff is None or diff["n"] == 0:
        return NOT_ENOUGH
    if diff["n"] == 1:
        return HOLDS if diff["mean"] <= margin else DOES_NOT_HOLD
    if diff["ci_high"] <= margin:
        return HOLDS
    if diff["ci_low"] > margin:
        return DOES_NOT_HOLD
    return NOT_ENOUGH


# ---------------------------------------------------------------------------------------------
# Number formatting shared by the finding sentences, the HTML and the Markdown
# ---------------------------------------------------------------------------------------------


def fmt_ap(x) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def fmt_signed(x) -> str:
    return "n/a" if x is None else f"{x:+.1f}"


def fmt_count(x) -> str:
    """1234 -> '1.2k', 128_000_000 -> '128M': the magnitudes of the compute comparison."""
    if x is None:
        return "n/a"
    x = float(x)
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            value = x / scale
            return f"{value:.3g}{suffix}"
    return f"{x:.0f}"


def fmt_int(x) -> str:
    return "n/a" if x is None else f"{int(round(x)):,}"


def fmt_ci(diff: dict) -> str:
    """'95% CI [+2.9, +4.1], n=3', or 'n=1' where no interval exists."""
    if diff is None or diff["n"] == 0:
        return "no paired seeds"
    if diff["ci_low"] is None:
        return f"n={diff['n']}"
    pct = int(round(diff["confidence"] * 100))
    return f"{pct}% CI [{diff['ci_low']:+.1f}, {diff['ci_high']:+.1f}], n={diff['n']}"


def other_label(other: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in sorted(other.items()))


def fmt_ratio(x) -> str:
    if x is None:
        return "n/a"
    return f"{x:.0f}x" if x >= 10 else f"{x:.1f}x" if x >= 0.1 else f"{x:.2g}x"


def size_sort_key(train_size, train_images) -> tuple:
    """Order training sets by their number of images; a full set whose size is not recorded goes last."""
    if train_images is not None:
        return (0, train_images)
    return (0, train_size) if isinstance(train_size, int) else (1, 0)


def size_label(train_size, train_images) -> str:
    """'2,000 images', or 'all 8,000 images' for the full training set."""
    if train_size == "full" or not isinstance(train_size, int):
        return f"all {fmt_int(train_images)} images" if train_images is not None else "the full training set"
    return f"{fmt_int(train_images if train_images is not None else train_size)} images"


# ---------------------------------------------------------------------------------------------
# Reading a study directory
# ---------------------------------------------------------------------------------------------


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

    @property
    def other_key(self) -> str:
        return json.dumps(self.other, sort_keys=True)

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
class Study:
    path: Path
    name: str
    margin_ap: float
    pretrain: dict  # source name -> pretrain.json dict, or None when not recorded
    pretrain_notes: dict  # source name -> why it is not recorded
    runs: list

    @property
    def sources(self) -> list:
        """Pretrained sources in the order the study lists them; each is compared with random init."""
        seen = []
        for run in self.runs:
            if run.init != RANDOM and run.init not in seen:
                seen.append(run.init)
        return seen


_SCHEDULE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*x\s*$")


def _schedule_factor(schedule: str) -> float | None:
    match = _SCHEDULE_RE.match(str(schedule))
    return float(match.group(1)) if match else None


def _rows_by_iter(rows: list) -> list:
    # A resumed run may log the same iteration twice; the later line is the one that counts.
    by_iter = {}
    for row in rows:
        if isinstance(row.get("iter"), int):
            by_iter[row["iter"]] = row
    return [by_iter[i] for i in sorted(by_iter)]


def _read_json_or_fail(path: Path):
    try:
        return read_json(path)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _load_run(study_dir: Path, index: int, entry: dict) -> RunRecord:
    for key in ("name", "init", "schedule", "train_size", "seed"):
        if key not in entry:
            raise UserError(f"{study_dir / 'study.json'}: runs[{index}] has no '{key}'")
    run_dir = study_dir / entry.get("path", f"runs/{entry['name']}")
    metrics_path = run_dir / "metrics.jsonl"
    try:
        lines = read_jsonl(metrics_path)
    except json.JSONDecodeError as exc:
        raise UserError(f"{metrics_path}: line {exc.lineno} is not valid JSON") from None
    final = _read_json_or_fail(run_dir / "final.json") if (run_dir / "final.json").exists() else None
    failed = _read_json_or_fail(run_dir / "FAILED") if (run_dir / "FAILED").exists() else None

    declared = entry.get("state", "pending")
    reason = entry.get("reason")
    # The files are the truth; study.json can lag behind a kill.
    if final is not None and final.get("status", "done") == "done":
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
        factor = _schedule_factor(entry["schedule"])
    if factor is None:
        raise UserError(f"{study_dir / 'study.json'}: runs[{index}] schedule {entry['schedule']!r} "
                        "has no schedule_factor and is not of the form '<N>x'")
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
        final=final, failed=failed,
    )


def load_study(study_dir) -> Study:
    """Read S/study.json, every run directory it lists, and the pre-training records."""
    study_dir = Path(study_dir)
    index_path = study_dir / "study.json"
    if not index_path.exists():
        raise UserError(f"{study_dir}: no study.json here; point the report at a study directory "
                        "(the --out of `rethink study`)")
    index = _read_json_or_fail(index_path)
    if not isinstance(index, dict) or not isinstance(index.get("runs"), list):
        raise UserError(f"{index_path}: expected an object with a 'runs' list")
    runs = [_load_run(study_dir, i, entry) for i, entry in enumerate(index["runs"])]

    pretrain, notes = {}, {}
    for source, rel in (index.get("pretrain") or {}).items():
        path = Path(rel)
        path = path if path.is_absolute() else study_dir / path
        if path.exists():
            pretrain[source] = _read_json_or_fail(path)
        else:
            pretrain[source], notes[source] = None, f"{path} does not exist (yet)"
    for run in runs:
        if run.init != RANDOM and run.init not in pretrain:
            pretrain[run.init], notes[run.init] = None, "not recorded"
    return Study(path=study_dir, name=index.get("name", study_dir.name),
                 margin_ap=float(index.get("margin_ap", 1.0)), pretrain=pretrain,
                 pretrain_notes=notes, runs=runs)


# ---------------------------------------------------------------------------------------------
# Cells: the runs of one (init, schedule, train_size, other) over seeds
# ---------------------------------------------------------------------------------------------


def _metric_keys(dicts) -> list:
    keys = set()
    for d in dicts:
        keys.update(k for k, v in d.items()
                    if "/" in k and not k.startswith("eval/") and (v is None or isinstance(v, (int, float))))
    # bbox before segm, then AP, AP50, AP75, APs, APm, APl as the field lists them
    order = ["AP", "AP50", "AP75", "APs", "APm", "APl"]

    def rank(key):
        task, _, name = key.partition("/")
        return (task != "bbox", task, order.index(name) if name in order else len(order), name)

    return sorted(keys, key=rank)


def run_iters_to_90(run: RunRecord):
    return iters_to_fraction(*run.eval_curve(PRIMARY))


def build_cells(runs: list) -> list:
    """Mean ± std over seeds per (init, schedule, train_size, other), from the done runs only.

    metrics are the last evaluation (final.json "final"), best the best-bbox/AP evaluation;
    iters_to_90 is, per run, the first evaluated iteration reaching 90% of that run's best bbox/AP,
    then averaged over seeds.
    """
    groups = {}
    for run in runs:
        if run.state == "done":
            groups.setdefault(run.cell_key, []).append(run)
    cells = []
    for (init, schedule, train_size, other_key), members in groups.items():
        members.sort(key=lambda r: r.seed)
        finals = [r.final.get("final") or {} for r in members]
        bests = [r.final.get("best") or {} for r in members]
        cells.append({
            "init": init,
            "schedule": schedule,
            "schedule_factor": members[0].schedule_factor,
            "train_size": train_size,
            "train_images": next((r.train_images for r in members if r.train_images is not None), None),
            "other": members[0].other,
            "other_key": other_key,
            "n_seeds": len(members),
            "seeds": [r.seed for r in members],
            "runs": [r.name for r in members],
            "metrics": {k: mean_std([f.get(k) for f in finals]) for k in _metric_keys(finals)},
            "best": {k: mean_std([b.get(k) for b in bests]) for k in _metric_keys(bests)},
            "best_iter": mean_std([r.final.get("best_iter") for r in members]),
            "iters_to_90": mean_std([run_iters_to_90(r) for r in members]),
            "wall_time_s": mean_std([r.final.get("wall_time_s") for r in members]),
            "images_seen": mean_std([r.final.get("images_seen") for r in members]),
            "instances_seen": mean_std([r.final.get("instances_seen") for r in members]),
            "pixels_seen": mean_std([r.final.get("pixels_seen") for r in members]),
            "iters": members[0].iters or members[0].final.get("iters"),
            "drops": members[0].drops,
            "batch_size": members[0].batch_size,
        })
    # random init first, then the pretrained sources in the order the study lists them
    init_order = {}
    for run in [r for r in runs if r.init == RANDOM] + runs:
        init_order.setdefault(run.init, len(init_order))
    cells.sort(key=lambda c: (c["other_key"], size_sort_key(c["train_size"], c["train_images"]),
                              c["schedule_factor"], init_order[c["init"]]))
    return cells


# ---------------------------------------------------------------------------------------------
# Paired comparisons and findings
# ---------------------------------------------------------------------------------------------


def _final_metric(key):
    return lambda run: (run.final.get("final") or {}).get(key)


def _best_ap(run):
    return (run.final.get("best") or {}).get(PRIMARY)


def _ap_at_or_before(run: RunRecord, iteration: int):
    """bbox/AP of the last evaluation at or before `iteration` (None when there is none)."""
    value = None
    for row in run.evals:
        if row["iter"] <= iteration:
            value = row.get(PRIMARY)
    return value


class _Grid:
    """Done runs indexed by cell and seed, for one pretrained source against random in one `other` group."""

    def __init__(self, runs, source, other_key, cells):
        self.source, self.other_key = source, other_key
        self.by_cell = {}
        for run in runs:
            if run.state == "done" and run.other_key == other_key:
                self.by_cell.setdefault((run.init, run.schedule, run.train_size), {})[run.seed] = run
        self.cell_info = {(c["init"], c["schedule"], c["train_size"]): c
                          for c in cells if c["other_key"] == other_key}
        # (schedule, size) where both arms have at least one common seed
        self.common = {}
        for (init, schedule, size), seeds in self.by_cell.items():
            if init != source:
                continue
            shared = set(seeds) & set(self.by_cell.get((RANDOM, schedule, size), {}))
            if shared:
                self.common[(schedule, size)] = sorted(shared)

    def cell(self, init, schedule, size):
        return self.cell_info.get((init, schedule, size))

    def sizes(self) -> list:
        """Sizes with both arms, smallest first (by actual number of training images)."""
        sizes = {size for _, size in self.common}
        return sorted(sizes, key=lambda s: size_sort_key(s, self.train_images(s)))

    def _any_schedule(self, size):
        return next(sch for sch, sz in self.common if sz == size)

    def schedules(self, size) -> list:
        """Schedules with both arms at `size`, shortest first."""
        scheds = [sch for sch, sz in self.common if sz == size]
        return sorted(scheds, key=lambda s: self.cell(self.source, s, size)["schedule_factor"])

    def runs(self, init, schedule, size):
        seeds = self.common[(schedule, size)]
        cell = self.by_cell[(init, schedule, size)]
        return [cell[s] for s in seeds]

    def pair(self, schedule, size, value_fn) -> dict:
        a = [value_fn(r) for r in self.runs(self.source, schedule, size)]
        b = [value_fn(r) for r in self.runs(RANDOM, schedule, size)]
        diff = paired_difference(a, b)
        diff["a_mean"] = mean_std(a)["mean"]
        diff["b_mean"] = mean_std(b)["mean"]
        return diff

    def train_images(self, size):
        return self.cell(self.source, self._any_schedule(size), size)["train_images"]


def comparisons(study: Study, cells: list) -> list:
    """Every paired comparison source - random that the study allows (same schedule, size and other)."""
    out = []
    keys = _metric_keys([(r.final or {}).get("final") or {} for r in study.runs if r.state == "done"])
    wanted = [k for k in keys if k.split("/")[1] in ("AP", "AP50", "AP75")]
    for other_key in sorted({c["other_key"] for c in cells}):
        for source in study.sources:
            grid = _Grid(study.runs, source, other_key, cells)
            for size in grid.sizes():
                for schedule in grid.schedules(size):
                    entry = {"source": source, "schedule": schedule, "train_size": size,
                             "train_images": grid.train_images(size), "other": json.loads(other_key),
                             "seeds": grid.common[(schedule, size)], "final": {}, "best": {}}
                    for key in wanted:
                        entry["final"][key] = grid.pair(schedule, size, _final_metric(key))
                    entry["best"][PRIMARY] = grid.pair(schedule, size, _best_ap)
                    out.append(entry)
    return out


def _significance_note(diff) -> str:
    return NO_SIGNIFICANCE if diff is not None and diff["n"] == 1 else ""


def _with_note(text: str, diff) -> str:
    note = _significance_note(diff)
    return f"{text} {note}" if note else text


def _not_enough(reason: str, **numbers) -> dict:
    return {"status": NOT_ENOUGH, "reason": reason, "text": f"Not enough evidence: {reason}.", **numbers}


def _where(grid, schedule, size) -> str:
    return f"{schedule}, {size_label(size, grid.train_images(size))}"


def finding_converges_faster(grid: _Grid, margin: float, pretrain_record) -> dict:
    """Pretrained ahead (rule "ahead") on final bbox/AP at the shortest schedule of the largest size.

    Also reported: AP of both before the shortest schedule's first LR drop, iterations to 90% of best
    at the longest schedule (the full curve) and their ratio, and images seen by then including
    pre-training.
    """
    src = grid.source
    if not grid.common:
        return _not_enough(f"no done runs of both {src} and random with a common seed")
    size = grid.sizes()[-1]
    schedules = grid.schedules(size)
    short, long = schedules[0], schedules[-1]
    diff = grid.pair(short, size, _final_metric(PRIMARY))
    status = ahead_status(diff, margin)

    # early on the curve: before the shortest schedule's first LR drop all arms ran at the base LR
    early_iter = grid.cell(src, short, size)["drops"][0] if grid.cell(src, short, size)["drops"] else None
    early_pre = early_rand = None
    if early_iter is not None:
        early_pre = mean_std([_ap_at_or_before(r, early_iter) for r in grid.runs(src, short, size)])["mean"]
        early_rand = mean_std([_ap_at_or_before(r, early_iter) for r in grid.runs(RANDOM, short, size)])["mean"]

    # How far behind random init runs: the iterations it needs to reach the AP pretrained has at its first
    # evaluation of the longest schedule (a ratio that a late LR drop, lifting both curves at once, cannot hide).
    first_points = [next(((i, v) for i, v in zip(*r.eval_curve(PRIMARY)) if _is_number(v)), None)
                    for r in grid.runs(src, long, size)]
    reach_iter = reach_ap = reach_rand = None
    if first_points and all(p is not None for p in first_points):
        reach_iter = mean_std([p[0] for p in first_points])["mean"]
        reach_ap = mean_std([p[1] for p in first_points])["mean"]
        reached = [iters_to_reach(*r.eval_curve(PRIMARY), reach_ap) for r in grid.runs(RANDOM, long, size)]
        reach_rand = mean_std(reached)["mean"] if reached and None not in reached else None

    it_pre = mean_std([run_iters_to_90(r) for r in grid.runs(src, long, size)])["mean"]
    it_rand = mean_std([run_iters_to_90(r) for r in grid.runs(RANDOM, long, size)])["mean"]
    ratio = it_rand / it_pre if it_pre and it_rand is not None else None
    batch_pre = grid.cell(src, long, size)["batch_size"]
    batch_rand = grid.cell(RANDOM, long, size)["batch_size"]
    img_pre = it_pre * batch_pre if it_pre is not None and batch_pre else None
    img_rand = it_rand * batch_rand if it_rand is not None and batch_rand else None
    pre_images = pretrain_record.get("images_seen") if pretrain_record else None
    total_pre = img_pre + pre_images if img_pre is not None and pre_images is not None else None
    compute_ratio = total_pre / img_rand if total_pre is not None and img_rand else None

    where = _where(grid, short, size)
    if status == HOLDS:
        lead = f"Pre-training ({src}) speeds up convergence: at the shortest schedule ({where}) it reaches "
    elif status == DOES_NOT_HOLD:
        lead = (f"Pre-training ({src}) is not ahead by more than the {margin:.1f} AP margin at the shortest "
                f"schedule ({where}): ")
    else:
        lead = (f"Pre-training ({src}) is ahead on average at the shortest schedule ({where}) "
                "but the interval reaches 0: ")
    text = (f"{lead}{fmt_ap(diff['a_mean'])} AP against {fmt_ap(diff['b_mean'])} for random init "
            f"({fmt_signed(diff['mean'])} AP, {fmt_ci(diff)}).")
    if early_iter is not None and early_pre is not None and early_rand is not None:
        text += (f" Before the first LR drop (iteration {fmt_int(early_iter)}): {fmt_ap(early_pre)} against "
                 f"{fmt_ap(early_rand)} AP.")
    if reach_ap is not None:
        what = f"the {fmt_ap(reach_ap)} AP that {src} has at iteration {fmt_int(reach_iter)}"
        if reach_rand is not None:
            text += (f" On the {long} curve random init needs {fmt_int(reach_rand)} iterations to reach {what} "
                     f"({fmt_ratio(reach_rand / reach_iter)} as many).")
        else:
            text += f" On the {long} curve random init never reaches {what}."
    if it_pre is not None and it_rand is not None:
        text += (f" On the {long} curve {src} reaches 90% of its best AP after {fmt_int(it_pre)} iterations, "
                 f"random init after {fmt_int(it_rand)}"
                 + (f" ({fmt_ratio(ratio)} as many)." if ratio is not None else "."))
    if total_pre is not None and img_rand is not None:
        text += (f" Counting its pre-training ({fmt_count(pre_images)} images), {src} has seen "
                 f"{fmt_count(total_pre)} images by then against {fmt_count(img_rand)} for random init "
                 f"({fmt_ratio(compute_ratio)} as many).")
    elif pretrain_record is None:
        text += f" The cost of the {src} pre-training is not recorded, so total compute cannot be compared."
    return {
        "status": status, "text": _with_note(text, diff), "n": diff["n"],
        "schedule": short, "train_size": size, "train_images": grid.train_images(size),
        "ap_pretrained": diff["a_mean"], "ap_random": diff["b_mean"], "difference": diff,
        "early_iter": early_iter, "early_ap_pretrained": early_pre, "early_ap_random": early_rand,
        "curve_schedule": long, "first_eval_iter_pretrained": reach_iter, "first_eval_ap_pretrained": reach_ap,
        "iters_random_to_reach_it": reach_rand,
        "iters_to_90_pretrained": it_pre, "iters_to_90_random": it_rand,
        "iters_to_90_ratio": ratio, "images_to_90_pretrained": img_pre, "images_to_90_random": img_rand,
        "images_seen_pretraining": pre_images, "total_images_to_90_pretrained": total_pre,
        "total_compute_ratio": compute_ratio,
    }


def finding_catches_up(grid: _Grid, margin: float) -> dict:
    """Random within the margin (rule "within") at the longest schedule of the largest size.

    Needs at least two schedules at that size. gap = pretrained - random final bbox/AP;
    gap_closed_fraction = (gap_shortest - gap_longest) / gap_shortest when gap_shortest > 0.
    first_schedule_within_margin: the shortest schedule where the "within" rule holds.
    closes_most_of_gap: not within the margin, but the longest schedule closed at least half of the shortest
    schedule's gap (random init on its way to catching up, as in the paper's longer schedules).
    """
    src = grid.source
    if not grid.common:
        return _not_enough(f"no done runs of both {src} and random with a common seed")
    size = grid.sizes()[-1]
    schedules = grid.schedules(size)
    if len(schedules) < 2:
        return _not_enough(f"only one schedule ({schedules[0]}) has both arms done on "
                           f"{size_label(size, grid.train_images(size))}; catching up needs a longer one to compare",
                           train_size=size)
    gaps = []
    for schedule in schedules:
        diff = grid.pair(schedule, size, _final_metric(PRIMARY))
        gaps.append({"schedule": schedule, "gap": diff, "within_margin": within_status(diff, margin)})
    short, long = gaps[0], gaps[-1]
    status = long["within_margin"]
    first = next((g["schedule"] for g in gaps if g["within_margin"] == HOLDS), None)
    g_short, g_long = short["gap"]["mean"], long["gap"]["mean"]
    closed = (g_short - g_long) / g_short if g_short is not None and g_long is not None and g_short > 0 else None
    closes_most = status != HOLDS and closed is not None and closed >= 0.5

    where = _where(grid, long["schedule"], size)
    numbers = (f"{fmt_ap(long['gap']['b_mean'])} vs {fmt_ap(long['gap']['a_mean'])} AP for {src} "
               f"(gap {fmt_signed(g_long)} AP, {fmt_ci(long['gap'])})")
    if status == HOLDS:
        text = (f"Random init catches up: at the longest schedule ({where}) it reaches {numbers}, "
                f"within the {margin:.1f} AP margin")
        if first == short["schedule"]:
            text += f"; it is already within the margin at the shortest schedule ({first}, gap {fmt_signed(g_short)} AP)."
        else:
            text += (f", first within the margin at {first}" if first else "")
            text += f"; the gap was {fmt_signed(g_short)} AP at {short['schedule']}."
    elif status == DOES_NOT_HOLD and closes_most:
        text = (f"Random init closes most of the gap but does not catch up within the margin: at the longest "
                f"schedule ({where}) it reaches {numbers}, more than the {margin:.1f} AP margin behind; it closed "
                f"{closed:.0%} of the {fmt_signed(g_short)} AP gap seen at {short['schedule']}.")
    elif status == DOES_NOT_HOLD:
        text = (f"Random init does not catch up: at the longest schedule ({where}) it reaches {numbers}, "
                f"more than the {margin:.1f} AP margin behind")
        if closed is not None and closed > 0:
            text += f"; it closed {closed:.0%} of the {fmt_signed(g_short)} AP gap seen at {short['schedule']}."
        else:
            text += f"; the gap at {short['schedule']} was {fmt_signed(g_short)} AP."
    else:
        text = (f"Not enough evidence that random init catches up: at the longest schedule ({where}) it reaches "
                f"{numbers}; the interval straddles the {margin:.1f} AP margin")
        text += f"; the gap was {fmt_signed(g_short)} AP at {short['schedule']}."
    return {
        "status": status, "text": _with_note(text, long["gap"]), "n": long["gap"]["n"],
        "train_size": size, "train_images": grid.train_images(size),
        "schedule_shortest": short["schedule"], "schedule_longest": long["schedule"],
        "ap_pretrained": long["gap"]["a_mean"], "ap_random": long["gap"]["b_mean"],
        "gap_shortest": g_short, "gap_longest": g_long, "gap_longest_diff": long["gap"],
        "gap_closed_fraction": closed, "closes_most_of_gap": closes_most, "first_schedule_within_margin": first,
        "gaps_by_schedule": gaps, "margin_ap": margin,
    }


def finding_small_data(grid: _Grid, margin: float) -> dict:
    """Pretrained ahead (rule "ahead") on best bbox/AP at the smallest size, longest schedule run there.

    Needs at least two sizes. smallest_size_within_margin: the smallest size from which random stays
    within the margin (rule "within") at every larger size tried: how much data random init needs.
    largest_size_behind: the largest size below that where random is behind (rule "ahead" holds);
    the data-size figure marks the breakdown between the two.
    """
    src = grid.source
    if not grid.common:
        return _not_enough(f"no done runs of both {src} and random with a common seed")
    sizes = grid.sizes()
    if len(sizes) < 2:
        return _not_enough(f"only one training-set size ({size_label(sizes[0], grid.train_images(sizes[0]))}) "
                           "has both arms done", train_size=sizes[0])
    per_size = []
    for size in sizes:
        schedule = grid.schedules(size)[-1]
        diff = grid.pair(schedule, size, _best_ap)
        per_size.append({"train_size": size, "train_images": grid.train_images(size), "schedule": schedule,
                         "gap": diff, "within_margin": within_status(diff, margin),
                         "random_behind": ahead_status(diff, margin)})
    smallest = per_size[0]
    status = ahead_status(smallest["gap"], margin)

    within_from = None
    for i in range(len(per_size)):
        if all(p["within_margin"] == HOLDS for p in per_size[i:]):
            within_from = per_size[i]
            break
    upper = per_size.index(within_from) if within_from else len(per_size)
    behind = [p for p in per_size[:upper] if p["random_behind"] == HOLDS]
    largest_behind = behind[-1] if behind else None

    where = f"{size_label(smallest['train_size'], smallest['train_images'])}, {smallest['schedule']}"
    gap = smallest["gap"]
    numbers = (f"{fmt_ap(gap['a_mean'])} best AP vs {fmt_ap(gap['b_mean'])} for random init "
               f"({fmt_signed(gap['mean'])} AP, {fmt_ci(gap)})")
    if status == HOLDS:
        text = (f"Little data hurts random init: with the smallest training set ({where}) {src} reaches "
                f"{numbers}, more than the {margin:.1f} AP margin.")
    elif status == DOES_NOT_HOLD:
        text = (f"Little data does not hurt random init here: with the smallest training set ({where}) {src} "
                f"reaches {numbers}, within the {margin:.1f} AP margin.")
    else:
        text = (f"With the smallest training set ({where}) {src} reaches {numbers}: ahead on average, "
                "but the interval reaches 0.")
    largest = per_size[-1]
    largest_label = size_label(largest["train_size"], largest["train_images"])
    if within_from is None and largest["within_margin"] == DOES_NOT_HOLD:
        text += f" Random init is still more than the margin behind at the largest size tried ({largest_label})."
    elif within_from is None:
        text += (f" No size tried shows random init within the margin: at the largest ({largest_label}) the "
                 f"gap is {fmt_signed(largest['gap']['mean'])} AP ({fmt_ci(largest['gap'])}), an interval "
                 "that reaches beyond the margin.")
    elif within_from is smallest:
        text += " Random init is within the margin at every size tried."
    else:
        text += (f" Random init needs about {fmt_int(within_from['train_images'])} training images to come within "
                 f"the margin (it stays within it at every larger size tried).")
    return {
        "status": status, "text": _with_note(text, gap), "n": gap["n"],
        "train_size": smallest["train_size"], "train_images": smallest["train_images"],
        "schedule": smallest["schedule"], "best_ap_pretrained": gap["a_mean"], "best_ap_random": gap["b_mean"],
        "difference": gap, "by_size": per_size, "margin_ap": margin,
        "smallest_size_within_margin": within_from["train_size"] if within_from else None,
        "smallest_images_within_margin": within_from["train_images"] if within_from else None,
        "largest_size_behind": largest_behind["train_size"] if largest_behind else None,
        "largest_images_behind": largest_behind["train_images"] if largest_behind else None,
    }


def finding_localization(grid: _Grid, margin: float) -> dict:
    """Pre-training does not help localization: at the longest schedule of the largest size, the
    per-seed AP75 gap minus AP50 gap (each pretrained - random) satisfies the "within" rule with the
    study's margin as tolerance, i.e. the AP75 gap is not larger than the AP50 gap by more than margin_ap.
    """
    src = grid.source
    if not grid.common:
        return _not_enough(f"no done runs of both {src} and random with a common seed")
    size = grid.sizes()[-1]
    schedule = grid.schedules(size)[-1]
    g50, g75 = [], []
    for a, b in zip(grid.runs(src, schedule, size), grid.runs(RANDOM, schedule, size)):
        fa, fb = a.final.get("final") or {}, b.final.get("final") or {}
        values = [fa.get("bbox/AP50"), fb.get("bbox/AP50"), fa.get("bbox/AP75"), fb.get("bbox/AP75")]
        if all(_is_number(v) for v in values):
            g50.append(values[0] - values[1])
            g75.append(values[2] - values[3])
    if not g50:
        return _not_enough(f"no bbox/AP50 and bbox/AP75 at {_where(grid, schedule, size)}")
    excess = paired_difference(g75, g50)
    gap50 = mean_std(g50)["mean"]
    gap75 = mean_std(g75)["mean"]
    status = within_status(excess, margin)
    where = f"{schedule} on {size_label(size, grid.train_images(size))}"
    numbers = (f"the AP75 gap ({src} - random) is {fmt_signed(gap75)} AP against {fmt_signed(gap50)} AP at AP50 "
               f"(difference {fmt_signed(excess['mean'])}, {fmt_ci(excess)}, tolerance {margin:.1f} AP)")
    if status == HOLDS:
        text = f"Pre-training does not improve localization here: at {where} {numbers}."
    elif status == DOES_NOT_HOLD:
        text = f"Pre-training improves localization here: at {where} {numbers}."
    else:
        text = f"Not enough evidence on localization: at {where} {numbers}; the interval straddles the tolerance."
    return {
        "status": status, "text": _with_note(text, excess), "n": excess["n"],
        "schedule": schedule, "train_size": size, "train_images": grid.train_images(size),
        "gap_ap50": gap50, "gap_ap75": gap75, "gap_ap75_minus_ap50": excess, "tolerance_ap": margin,
    }


FINDING_KEYS = ("converges_faster", "catches_up", "small_data_hurts_random", "localization")


def findings_for(study: Study, cells: list, source: str, other_key: str) -> dict:
    grid = _Grid(study.runs, source, other_key, cells)
    margin = study.margin_ap
    return {
        "converges_faster": finding_converges_faster(grid, margin, study.pretrain.get(source)),
        "catches_up": finding_catches_up(grid, margin),
        "small_data_hurts_random": finding_small_data(grid, margin),
        "localization": finding_localization(grid, margin),
    }


def _no_source_findings(reason: str) -> dict:
    return {key: _not_enough(reason) for key in FINDING_KEYS}


def _clean(obj):
    """JSON-safe copy: NaN/inf become null (strict JSON has no NaN), tuples become lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def summarize(study: Study) -> dict:
    """Everything the report shows, as plain JSON-able data (written as report/summary.json)."""
    cells = build_cells(study.runs)
    other_keys = sorted({c["other_key"] for c in cells}) or [json.dumps({})]
    sources = study.sources

    verdicts = []
    for other_key in other_keys:
        for source in sources:
            verdicts.append({"source": source, "other": json.loads(other_key),
                             "findings": findings_for(study, cells, source, other_key)})
    if sources:
        top = verdicts[0]["findings"]
    else:
        top = _no_source_findings("the study has no pretrained init to compare with random")
    by_source = {v["source"]: v["findings"] for v in reversed(verdicts)}  # first other group wins
    by_source = {s: by_source[s] for s in sources}

    state_counts = {s: 0 for s in ("done", "running", "pending", "failed")}
    for run in study.runs:
        state_counts[run.state] = state_counts.get(run.state, 0) + 1
    missing = [{"name": r.name, "state": r.state, "reason": r.reason, "last_iter": r.last_iter, "iters": r.iters}
               for r in study.runs if r.state != "done"]
    failed = [{"name": r.name, "iter": (r.failed or {}).get("iter", r.last_iter),
               "reason": (r.failed or {}).get("reason", r.reason), "losses": (r.failed or {}).get("losses")}
              for r in study.runs if r.state == "failed"]
    seeds = sorted({r.seed for r in study.runs})
    done_seeds = [c["n_seeds"] for c in cells]

    summary = {
        "name": study.name,
        "margin_ap": study.margin_ap,
        "confidence": CONFIDENCE,
        "n_seeds": len(seeds),
        "seeds": seeds,
        "n_seeds_per_cell": {"min": min(done_seeds), "max": max(done_seeds)} if done_seeds else None,
        "sources": sources,
        "counts": state_counts,
        "n_runs": len(study.runs),
        "cells": [{k: v for k, v in c.items() if k != "other_key"} for c in cells],
        "comparisons": comparisons(study, cells),
        "findings": top,
        "findings_by_source": by_source,
        "verdicts": verdicts,
        "pretrain": {s: study.pretrain.get(s) for s in sources},
        "pretrain_notes": {s: study.pretrain_notes[s] for s in sources if s in study.pretrain_notes},
        "missing": missing,
        "failed": failed,
        "runs": [{"name": r.name, "init": r.init, "schedule": r.schedule, "train_size": r.train_size,
                  "train_images": r.train_images, "seed": r.seed, "other": r.other, "state": r.state,
                  "reason": r.reason, "last_iter": r.last_iter, "iters": r.iters, "trunk": r.trunk,
                  "fork_iter": r.fork_iter,
                  "final_ap": ((r.final or {}).get("final") or {}).get(PRIMARY) if r.state == "done" else None}
                 for r in study.runs],
    }
    return _clean(summary)
