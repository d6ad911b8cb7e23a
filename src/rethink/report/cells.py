"""Cells and paired comparisons: per-cell means over seeds, and the done runs indexed by cell and seed (`Grid`)
that every finding compares a pretrained source with random init on. Numbers only, as findings.py.
"""

import json

from rethink.report.stats import iters_to_fraction, mean_std, paired_difference
from rethink.study.results import PRIMARY, RANDOM, RunRecord, StudyResults, size_sort_key


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
    for (init, schedule, train_size, group_key), members in groups.items():
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
            "other_key": group_key,
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
# Paired comparisons
# ---------------------------------------------------------------------------------------------


def _final_metric(key):
    return lambda run: (run.final.get("final") or {}).get(key)


def best_ap(run):
    return (run.final.get("best") or {}).get(PRIMARY)


class Grid:
    """Done runs indexed by cell and seed, for one pretrained source against random in one `other` group."""

    def __init__(self, runs, source, group_key, cells):
        self.source, self.other_key = source, group_key
        self.by_cell = {}
        for run in runs:
            if run.state == "done" and run.other_key == group_key:
                self.by_cell.setdefault((run.init, run.schedule, run.train_size), {})[run.seed] = run
        self.cell_info = {(c["init"], c["schedule"], c["train_size"]): c
                          for c in cells if c["other_key"] == group_key}
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
        return paired([value_fn(r) for r in self.runs(self.source, schedule, size)],
                       [value_fn(r) for r in self.runs(RANDOM, schedule, size)])

    def train_images(self, size):
        return self.cell(self.source, self._any_schedule(size), size)["train_images"]


def comparisons(study: StudyResults, cells: list) -> list:
    """Every paired comparison source - random that the study allows (same schedule, size and other)."""
    out = []
    keys = _metric_keys([(r.final or {}).get("final") or {} for r in study.runs if r.state == "done"])
    wanted = [k for k in keys if k.split("/")[1] in ("AP", "AP50", "AP75")]
    for group_key in sorted({c["other_key"] for c in cells}):
        for source in study.sources:
            grid = Grid(study.runs, source, group_key, cells)
            for size in grid.sizes():
                for schedule in grid.schedules(size):
                    entry = {"source": source, "schedule": schedule, "train_size": size,
                             "train_images": grid.train_images(size), "other": json.loads(group_key),
                             "seeds": grid.common[(schedule, size)], "final": {}, "best": {}}
                    for key in wanted:
                        entry["final"][key] = grid.pair(schedule, size, _final_metric(key))
                    entry["best"][PRIMARY] = grid.pair(schedule, size, best_ap)
                    out.append(entry)
    return out


def paired(a: list, b: list) -> dict:
    """paired_difference(a, b) with the two arms' means alongside (a_mean, b_mean)."""
    diff = paired_difference(a, b)
    diff["a_mean"] = mean_std(a)["mean"]
    diff["b_mean"] = mean_std(b)["mean"]
    return diff
