"""`rethink demo`: the whole paper on a laptop CPU, offline: benchmark -> pre-training -> study -> report.

Steps, each skipped when already done (the same command resumes after an interruption):
  1. generate the bundled benchmark (rethink.synth) into OUT/benchmark;
  2. the demo study (the bundled studies/demo.yaml): its pre-training step on the benchmark's source set, then
     random vs pretrained init over schedules and training-set sizes on the target set;
  3. the report in OUT/study/report/index.html.
`--quick` runs the same pipeline on the tiny benchmark with a few iterations (checks the pipeline, not findings).
"""

import time
from pathlib import Path

from rethink.configs import bundled_dir
from rethink.fileio import atomic_write_json


def data_overrides(benchmark: Path) -> tuple[list[str], list[str]]:
    """Point the study's run configs at OUT/benchmark/target and its pre-training at OUT/benchmark/source."""
    target, source = benchmark / "target", benchmark / "source"
    runs = [
        f"data.train.images={target / 'train' / 'images'}",
        f"data.train.annotations={target / 'train' / 'annotations.json'}",
        f"data.val.images={target / 'val' / 'images'}",
        f"data.val.annotations={target / 'val' / 'annotations.json'}",
    ]
    pretrain = [f"data.train={source / 'train'}", f"data.val={source / 'val'}"]
    return runs, pretrain


# --quick: the tiny benchmark and a few iterations; a smaller model so the suite stays fast.
QUICK_RUN_OVERRIDES = [
    "solver.iters_1x=16", "solver.warmup_iters=2", "solver.batch_size=4", "eval_period=8", "log_period=4",
    "checkpoint_period=8", "data.min_size_train=[64]", "data.max_size=64", "data.min_size_test=64",
    "model.box_head_num_conv=1", "model.box_head_fc_dim=64",
]
QUICK_PRETRAIN_OVERRIDES = ["solver.iters=30", "solver.batch_size=32", "solver.warmup_iters=5", "eval_period=0",
                            "log_period=10", "checkpoint_period=30"]


def run_demo(out: Path, quick: bool = False, jobs: int | None = None) -> int:
    from rethink.study.run import run_study
    from rethink.synth import write_benchmark

    out = Path(out).resolve()
    configs = bundled_dir()
    timings = {}
    start = time.perf_counter()

    print(f"[demo] 1/3 benchmark: {out / 'benchmark'}", flush=True)
    t0 = time.perf_counter()
    write_benchmark(out / "benchmark", seed=0, scale="tiny" if quick else "demo")
    timings["benchmark_s"] = time.perf_counter() - t0

    print("[demo] 2/3 study: pre-training, then random vs pretrained init (runs side by side)", flush=True)
    t0 = time.perf_counter()
    runs, pretrain = data_overrides(out / "benchmark")
    study_file = configs / "studies" / ("demo_quick.yaml" if quick else "demo.yaml")
    if quick:
        runs += QUICK_RUN_OVERRIDES
        pretrain += QUICK_PRETRAIN_OVERRIDES
    code = run_study(study_file, out / "study", jobs=jobs, overrides=runs, pretrain_overrides=pretrain)
    timings["study_s"] = time.perf_counter() - t0

    report = out / "study" / "report" / "index.html"
    timings["total_s"] = time.perf_counter() - start
    atomic_write_json(out / "demo.json", {"quick": quick, **timings, "report": str(report)})
    print(f"[demo] 3/3 report: {report}", flush=True)
    print(f"[demo] done in {timings['total_s']:.0f} s (benchmark {timings['benchmark_s']:.0f} s, "
          f"study {timings['study_s']:.0f} s)", flush=True)
    return code
