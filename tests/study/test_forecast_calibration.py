"""The forecast's 80% intervals hold their coverage on planted curves, inside the model's families and outside
them, over many seeded replicates: a study is planted from drawn parameters, cut part-way, forecast, and every
cell finished in the full study but not at the cut is scored."""

import json
import math

import numpy as np
import pytest

from rethink import schedule as sched
from rethink.study.forecast import forecast_study, truncate_study
from rethink.study.results import load_results

ITERS_1X = 300
SCHEDULES = {"2x": 2.0, "4x": 4.0, "8x": 8.0}
EVAL_EVERY = 60
NOISE = 0.5  # sd of the noise on every evaluation, AP
REPLICATES = 8  # planted studies per kind; each scores 6 cells: 4x and 8x of both arms at 40%, 8x at 60%
CUTS = (0.4, 0.6)
N_BOOT = 100  # the product's 300 replicates make the same intervals a little smoother, at 3x the time


def draw(kind: str, init: str, rng) -> dict:
    """One arm's planted curve: pretrained fast, random slow. "inside": the model's exp or pow families and the same
    jump at every drop; "outside": a fast and a slow exponential (no family's shape), and a jump 50% larger after a
    short trunk than after a long one (the model takes it as the same)."""
    fast = init != "random"
    a = float(rng.uniform(38, 46)) if fast else float(rng.uniform(32, 44))
    jump = float(rng.uniform(1.0, 3.0)) if fast else float(rng.uniform(2.0, 5.0))
    if kind == "inside" and rng.random() < 0.5:
        return {"f": "exp", "a": a, "b": 0.95 * a, "tau": float(rng.uniform(0.3, 0.8) if fast else rng.uniform(1.0, 2.5)),
                "jump": jump}
    if kind == "inside":
        return {"f": "pow", "a": a, "b": float(rng.uniform(5, 12) if fast else rng.uniform(15, 30)),
                "c": float(rng.uniform(0.8, 1.5) if fast else rng.uniform(0.4, 0.9)), "jump": jump}
    return {"f": "two-exp", "a": a, "t1": float(rng.uniform(0.2, 0.5)),
            "t2": float(rng.uniform(0.8, 1.5) if fast else rng.uniform(2.0, 4.0)), "jump": jump}


def curve(p: dict, x: float) -> float:
    if p["f"] == "exp":
        return p["a"] - p["b"] * math.exp(-x / p["tau"])
    if p["f"] == "pow":
        return p["a"] - p["b"] * x ** (-p["c"])
    return p["a"] - 0.6 * p["a"] * math.exp(-x / p["t1"]) - 0.4 * p["a"] * math.exp(-x / p["t2"])


def jump(p: dict, d1: float) -> float:
    return p["jump"] * (1.0 + 0.5 * math.exp(-(d1 - 1.0) / 2.0)) if p["f"] == "two-exp" else p["jump"]


def plant(root, kind: str, rng):
    """A finished study directory: 8x trunks, 2x and 4x forks at their first drop, noise on every evaluation."""
    entries = []
    for init in ("random", "pretrain"):
        p, trunk = draw(kind, init, rng), {}
        for schedule, factor in sorted(SCHEDULES.items(), key=lambda kv: -kv[1]):
            total, (d1, d2) = sched.total_iters(factor, ITERS_1X), sched.drop_iters(factor, ITERS_1X)
            name, forked = f"{init}_{schedule}_full_s0", factor != 8.0
            entries.append({"name": name, "path": f"runs/{name}", "state": "done", "init": init,
                            "schedule": schedule, "schedule_factor": factor, "train_size": "full", "seed": 0,
                            "train_images": 1000, "iters": total, "drops": [d1, d2], "other": {},
                            "trunk": f"{init}_8x_full_s0" if forked else None, "fork_iter": d1 if forked else None})
            rows = []
            for t in sched.eval_iters(total, EVAL_EVERY):
                if forked and t <= d1:
                    ap = trunk[t]
                else:
                    ap = curve(p, min(t, d1) / ITERS_1X) + (jump(p, d1 / ITERS_1X) if t > d1 else 0.0)
                    ap += NOISE * float(rng.standard_normal())
                    trunk.setdefault(t, ap)
                rows.append({"type": "eval", "iter": t, "bbox/AP": ap})
            run_dir = root / "runs" / name
            run_dir.mkdir(parents=True)
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            (run_dir / "final.json").write_text(json.dumps({"status": "done", "final": rows[-1], "iters": total}))
    (root / "study.json").write_text(json.dumps({"name": kind, "margin_ap": 1.0, "pretrain": {}, "runs": entries}))
    return load_results(root)


def scored_cells(study) -> list:
    """(covered, |error|, width) of every cell done in the full study but not at each cut."""
    finals = {(r.init, r.schedule_factor): r.final["final"]["bbox/AP"] for r in study.runs}
    out = []
    for cut in CUTS:
        reached = int(cut * sched.total_iters(8.0, ITERS_1X))
        result = forecast_study(truncate_study(study, {("full", "{}"): reached}), n_boot=N_BOOT)
        for c in result["cells"]:
            factor = sched.parse_schedule(c["schedule"])
            if (c["init"], factor) not in finals or sched.total_iters(factor, ITERS_1X) <= reached:
                continue
            truth = finals[(c["init"], factor)]
            lo, hi = c["interval"]
            out.append((lo <= truth <= hi, abs(c["predicted_final_ap"] - truth), hi - lo))
    return out


@pytest.mark.parametrize("kind", ["inside", "outside"])
def test_interval_coverage_stays_in_the_band_over_replicates(tmp_path, kind):
    rng = np.random.default_rng({"inside": 11, "outside": 12}[kind])
    cells = []
    for rep in range(REPLICATES):
        cells += scored_cells(plant(tmp_path / str(rep), kind, rng))
    coverage = float(np.mean([c[0] for c in cells]))
    width = float(np.mean([c[2] for c in cells]))
    # the band for an 80% interval over many cells: not overconfident (>= 0.7), not vacuous (<= 0.95),
    # and sharp enough to use (mean width under 10 AP); 72 cells, so one cell moves the coverage by 0.014
    assert len(cells) == REPLICATES * 6
    assert 0.7 <= coverage <= 0.95, (kind, coverage, width)
    assert width < 10.0, (kind, coverage, width)
