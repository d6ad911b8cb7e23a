"""What trunk sharing saves: iterations and evaluations planned vs run-everything-separately, and for the demo
study the measured wall time with trunk sharing against without, in one run of this script.

    python benchmarks/bench_study.py [--quick]

`--quick` shrinks the demo study (shorter 1x, smaller model input) so both variants finish in about two minutes;
without it the demo study runs at its real size twice (about as long as two `make demo` study steps). The last
line printed is one JSON object.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from rethink.demo import QUICK_PRETRAIN_OVERRIDES, data_overrides  # noqa: E402
from rethink.study.plan import load_plan, plan_summary  # noqa: E402
from rethink.pipeline import run_study  # noqa: E402

QUICK_RUNS = ["solver.iters_1x=60", "solver.warmup_iters=5", "eval_period=30", "log_period=10",
              "checkpoint_period=30", "data.val_size=60"]


def planned(path: Path, overrides=()) -> dict:
    s = plan_summary(load_plan(path, overrides))
    return {k: s[k] for k in ("iterations_planned", "iterations_naive", "evaluations_planned", "evaluations_naive")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data", default=None, help="benchmark root (default: generate the demo benchmark)")
    args = parser.parse_args()
    studies = REPO / "src" / "rethink" / "configs" / "studies"
    table1 = planned(studies / "paper_table1_r50.yaml")
    work = Path(tempfile.mkdtemp(prefix="bench_study_"))
    data = Path(args.data) if args.data else work / "benchmark"
    if not args.data:
        from rethink.data.synth import write_benchmark

        write_benchmark(data, seed=0, scale="demo", progress=False)
    runs, pretrain = data_overrides(data)
    if args.quick:
        runs += QUICK_RUNS
        pretrain += QUICK_PRETRAIN_OVERRIDES
    demo = planned(studies / "demo.yaml", runs)
    # Pre-train once and share it, so both variants time the detection runs only.
    shared_pre = work / "pretrain_shared"
    walls = {}
    for name, share in (("shared", True), ("naive", False)):
        out = work / name
        if shared_pre.exists():
            shutil.copytree(shared_pre, out / "pretrain")
        start = time.perf_counter()
        run_study(studies / "demo.yaml", out, overrides=runs, pretrain_overrides=pretrain, share_trunks=share,
                  progress=False)
        walls[name] = time.perf_counter() - start
        if not shared_pre.exists():
            shutil.copytree(out / "pretrain", shared_pre)
            pre = json.loads((out / "pretrain" / "pretrain" / "pretrain.json").read_text())["wall_time_s"]
            walls[name] -= pre  # the first variant also pre-trained; time the detection runs only
    print(f"paper Table 1 (R50): {table1['iterations_planned']} iterations planned vs {table1['iterations_naive']} "
          f"naive ({table1['iterations_planned'] / table1['iterations_naive']:.2f}); evaluations "
          f"{table1['evaluations_planned']} vs {table1['evaluations_naive']}")
    print(f"demo study: {demo['iterations_planned']} iterations vs {demo['iterations_naive']} naive; measured "
          f"{walls['shared']:.0f} s with trunk sharing vs {walls['naive']:.0f} s without "
          f"({walls['naive'] / walls['shared']:.2f}x)")
    print(json.dumps({"iterations_planned": demo["iterations_planned"], "iterations_naive": demo["iterations_naive"],
                      "evaluations_planned": demo["evaluations_planned"],
                      "evaluations_naive": demo["evaluations_naive"], "wall_shared_s": walls["shared"],
                      "wall_naive_s": walls["naive"], "table1": table1, "quick": args.quick}))


if __name__ == "__main__":
    main()
