"""Calibration of `rethink forecast`: backtests on finished studies.

    python benchmarks/bench_forecast.py [--reps N] [--study DIR ...]

Each finished study is cut where its longest runs had reached 30%, 40%, 60% and 80% of their iterations (forks run
beside their trunk, so a run of T iterations is done once the trunk passes T: `forecast.truncate_study`), then
forecast; every cell that was done in the full study but not at the cut is compared with what happened:
AP error (forecast - measured) and whether the measured value lies inside the 80% interval. Also: whether the
catch-up forecast agrees with the study's own verdict at its longest schedule (random within the margin of
pretrained's best final AP over the schedules).

Studies:
- planted, written here from known curves with Gaussian noise on every evaluation, in two geometries (the demo's:
  1x = 600, schedules 2x/10x, an evaluation every 300 iterations; the paper's: 1x = 900, 2x/4x/6x, every 100)
  and three kinds of truth: in the model's families (exp, pow) and outside them (a sum of a fast and a slow
  exponential, and a jump at the LR drop that shrinks as the schedule grows);
- the report's fixture study (tests/report/study_fixture.py) with noise added to its evaluations;
- any real study directories given with --study (the demo's run directories, for example).

The last line printed is one JSON object.
"""

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests" / "report"))

from rethink import schedule as sched  # noqa: E402
from rethink.study.backtest import FRACTIONS, backtest, summarize  # noqa: E402
from rethink.study.results import PRIMARY, RANDOM, load_results  # noqa: E402

GEOMETRIES = {
    "demo-like": {"iters_1x": 600, "schedules": ("2x", "10x"), "eval_every": 300},
    "paper-like": {"iters_1x": 900, "schedules": ("2x", "4x", "6x"), "eval_every": 100},
}
TRUTHS = ("exp", "pow", "two-exp")


# ---------------------------------------------------------------------------------------------
# Planted studies
# ---------------------------------------------------------------------------------------------


def draw_arm(truth: str, init: str, rng) -> dict:
    """Parameters of one arm's planted curve (x in units of 1x). Pretrained: fast; random: slow."""
    fast = init != RANDOM
    a = float(rng.uniform(38, 46)) if fast else float(rng.uniform(32, 44))
    jump = float(rng.uniform(1.0, 3.0)) if fast else float(rng.uniform(2.0, 6.0))
    if truth == "exp":
        return {"kind": "exp", "a": a, "b": a * 0.95, "tau": float(rng.uniform(0.2, 0.6) if fast
                                                                   else rng.uniform(1.0, 3.0)), "jump": jump}
    if truth == "pow":
        return {"kind": "pow", "a": a, "b": float(rng.uniform(5, 12) if fast else rng.uniform(15, 30)),
                "c": float(rng.uniform(0.8, 1.5) if fast else rng.uniform(0.4, 0.9)), "jump": jump}
    # outside the families: a fast and a slow component, and a jump that is 50% larger after a short trunk
    return {"kind": "two-exp", "a": a, "b1": 0.6 * a, "t1": float(rng.uniform(0.2, 0.5)),
            "b2": 0.4 * a, "t2": float(rng.uniform(2.0, 4.0) if not fast else rng.uniform(0.8, 1.5)),
            "jump": jump}


def pre_drop(p: dict, x: float) -> float:
    if p["kind"] == "exp":
        return p["a"] - p["b"] * math.exp(-x / p["tau"])
    if p["kind"] == "pow":
        return p["a"] - p["b"] * x ** (-p["c"])
    return p["a"] - p["b1"] * math.exp(-x / p["t1"]) - p["b2"] * math.exp(-x / p["t2"])


def jump_at(p: dict, d1: float) -> float:
    if p["kind"] == "two-exp":
        return p["jump"] * (1.0 + 0.5 * math.exp(-(d1 - 1.0) / 2.0))
    return p["jump"]


def write_planted(root: Path, geometry: dict, truth: str, noise: float, rng) -> Path:
    iters_1x, schedules, every = geometry["iters_1x"], geometry["schedules"], geometry["eval_every"]
    factors = {s: sched.parse_schedule(s) for s in schedules}
    longest = max(schedules, key=factors.get)
    entries = []
    for init in (RANDOM, "pretrain"):
        p = draw_arm(truth, init, rng)
        trunk = {}
        for schedule in sorted(schedules, key=factors.get, reverse=True):
            factor = factors[schedule]
            total = sched.total_iters(factor, iters_1x)
            d1, d2 = sched.drop_iters(factor, iters_1x)
            name = f"{init}_{schedule}_full_s0"
            forked = schedule != longest
            entries.append({"name": name, "path": f"runs/{name}", "state": "done", "init": init,
                            "schedule": schedule, "schedule_factor": factor, "train_size": "full", "seed": 0,
                            "iters": total, "drops": [d1, d2], "trunk": f"{init}_{longest}_full_s0" if forked else None,
                            "fork_iter": d1 if forked else None, "other": {}})
            rows = []
            for t in sched.eval_iters(total, every):
                if forked and t <= d1:
                    ap = trunk[t]
                else:
                    x = min(t, d1) / iters_1x
                    ap = pre_drop(p, x) + (jump_at(p, d1 / iters_1x) if t > d1 else 0.0)
                    ap += noise * float(rng.standard_normal())
                    if not forked:
                        trunk[t] = ap
                rows.append({"type": "eval", "iter": t, PRIMARY: ap})
            run_dir = root / "runs" / name
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            (run_dir / "final.json").write_text(json.dumps({"status": "done", "final": rows[-1], "best": rows[-1],
                                                            "iters": total}))
    (root / "study.json").write_text(json.dumps({"name": f"planted-{truth}", "margin_ap": 1.0, "pretrain": {},
                                                 "runs": entries}))
    return root


def write_fixture(root: Path, noise: float, rng) -> Path:
    """The report's fixture study (1x/2x/4x at 500/2,000/8,000 images, 3 seeds) with noise on each evaluation."""
    from study_fixture import make_study

    make_study(root, schedules=("2x", "4x", "8x"), sizes=(500, 2000, "full"))
    entries = json.loads((root / "study.json").read_text())["runs"]
    trunks = {}
    for entry in sorted(entries, key=lambda e: e["trunk"] is not None):  # trunks first
        run_dir = root / entry["path"]
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        for row in rows:
            if row["type"] != "eval":
                continue
            if entry["trunk"] is not None and row["iter"] <= entry["fork_iter"]:
                row[PRIMARY] = trunks[entry["trunk"]][row["iter"]]  # a fork repeats its trunk's evaluations
            else:
                row[PRIMARY] += noise * float(rng.standard_normal())
                trunks.setdefault(entry["name"], {})[row["iter"]] = row[PRIMARY]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        final = json.loads((run_dir / "final.json").read_text())
        final["final"][PRIMARY] = [r for r in rows if r["type"] == "eval"][-1][PRIMARY]
        (run_dir / "final.json").write_text(json.dumps(final))
    return root


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=4, help="planted studies per (geometry, truth, noise)")
    parser.add_argument("--noise", default="0.3,1.0", help="sd of the noise on each planted evaluation (AP)")
    parser.add_argument("--boot", type=int, default=200)
    parser.add_argument("--study", action="append", default=[], help="a finished study directory (repeatable)")
    parser.add_argument("--no-planted", action="store_true")
    args = parser.parse_args()
    started = time.time()
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.no_planted:
            for noise in (float(v) for v in args.noise.split(",")):
                for gname, geometry in GEOMETRIES.items():
                    for truth in TRUTHS:
                        for rep in range(args.reps):
                            root = write_planted(tmp / f"{gname}-{truth}-{noise}-{rep}", geometry, truth, noise, rng)
                            source = f"planted {gname} {truth} noise {noise:g}"
                            for r in backtest(load_results(root), source, args.boot):
                                rows.append({**r, "source": source})
                root = write_fixture(tmp / f"fixture-{noise}", noise, rng)
                source = f"report fixture 2x/4x/8x x3 sizes x3 seeds noise {noise:g}"
                for r in backtest(load_results(root), source, args.boot):
                    rows.append({**r, "source": source})
        for path in args.study:
            study = load_results(Path(path))
            source = f"study {path}"
            for r in backtest(study, source, args.boot):
                rows.append({**r, "source": source})
                if "init" in r:
                    predicted = "n/a" if r["predicted"] is None else f"{r['predicted']:.2f}"
                    interval = "" if r["interval"] is None else f"[{r['interval'][0]:.2f}, {r['interval'][1]:.2f}]"
                    print(f"  {path} cut {r['fraction']:.0%} {r['init']:10s} {str(r['train_size']):>6s} "
                          f"{r['schedule']:>5s} measured {r['measured']:.2f} forecast {predicted} {interval} "
                          f"{r['note'] or ''}")
                elif "error" in r:
                    print(f"  {path} cut {r['fraction']:.0%}: {r['error']}")
    sources = sorted({r["source"] for r in rows}, key=lambda s: (s.startswith("study"), s))
    table = []
    print(f"{'source':58s} {'cut':>4s} {'cells':>5s} {'|err| mean':>10s} {'p90':>6s} {'max':>6s} "
          f"{'coverage':>8s} {'width':>6s} {'catch-up':>8s}  longest only / all unfinished")
    for source in sources:
        for fraction in FRACTIONS:
            for longest_only in (True, False):
                s = summarize(rows, source, fraction, longest_only)
                s["longest_only"] = longest_only
                table.append(s)

                def f(v):
                    return "n/a" if v is None else f"{v:.2f}"

                print(f"{source:58s} {fraction:4.0%} {s['forecast']:>2d}/{s['cells']:<2d} {f(s['mean_abs_error']):>10s} "
                      f"{f(s['p90_abs_error']):>6s} {f(s['max_abs_error']):>6s} {f(s['coverage']):>8s} {f(s['mean_width']):>6s} "
                      f"{s['catch_up_agrees']:>8s}  {'longest' if longest_only else 'all'}"
                      f"{'; refused: ' + str(s['refused']) if s['refused'] else ''}")
    print(json.dumps({"table": table, "wall_s": round(time.time() - started, 1)}))


if __name__ == "__main__":
    main()
