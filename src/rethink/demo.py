"""`rethink demo`: the whole paper on a laptop CPU, offline: benchmark -> pre-training -> study -> report.

Steps, each skipped when already done (the same command resumes after an interruption):
  1. generate the bundled benchmark (rethink.data.synth) into OUT/benchmark;
  2. the demo study (the bundled studies/demo.yaml): its pre-training step on the benchmark's source set, then
     random vs pretrained init over schedules and training-set sizes on the target set;
  3. the report in OUT/study/report/index.html.
`--quick` runs the same pipeline on the tiny benchmark with a few iterations (checks the pipeline, not findings).
`--adaptive` runs the study with `rethink study --adaptive` (study/adaptive.py).
`--sources` runs studies/demo_sources.yaml instead: several pre-trained sources against random init (supervised on
the source, MoCo v2 on the target's labelled images, on ten times as many extra unlabelled target images, on the
source's images; DenseCL on the extra images), the benchmark drawing the extra images into
benchmark/target/unlabelled.
`--seeds N` runs the same study over seeds 0..N-1 (same benchmark and pre-trained backbone; each seed changes the
detector's random weights, sample order and draws), so the report gives paired 95% intervals.
"""

import time
from pathlib import Path

import yaml

from rethink.configs import bundled_dir
from rethink.errors import UserError
from rethink.fileio import atomic_write_json, atomic_write_text


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
                            "ssl.memory_bank_size=16",  # under the tiny target's 40 images (--sources)
                            "log_period=10", "checkpoint_period=30"]


DEMO_BENCHMARK = "runs/demo/benchmark"  # where the bundled study files' data paths point (the default --out)


def study_copy(study_file: Path, out: Path, seeds: int, benchmark: Path) -> Path:
    """A copy of a bundled study written to `out`: its relative links (base, pretrain) made absolute, as they
    resolve next to the bundled file; a pre-training step's `train_on` folder under runs/demo/benchmark moved to
    `benchmark`; with seeds > 1 every matrix's seed axis set to 0..seeds-1."""
    data = yaml.safe_load(study_file.read_text())
    data["base"] = str((study_file.parent / data["base"]).resolve())
    for key, value in data.get("pretrain", {}).items():
        if isinstance(value, dict):
            value["config"] = str((study_file.parent / value["config"]).resolve())
            train_on = str(value.get("train_on", ""))
            if train_on.startswith(DEMO_BENCHMARK + "/"):
                value["train_on"] = str(benchmark / train_on[len(DEMO_BENCHMARK) + 1:])
        else:
            data["pretrain"][key] = str((study_file.parent / value).resolve())
    suffix = ""
    if seeds > 1:
        suffix = f"_seeds{seeds}"
        data["name"] = f"{data['name']}{suffix}"
        matrices = data["matrix"] if isinstance(data["matrix"], list) else [data["matrix"]]
        for matrix in matrices:
            matrix["seed"] = list(range(seeds))
    path = out / f"{study_file.stem}{suffix}.yaml"
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
    return path


# --sources: extra unlabelled target-domain images, ten times the labelled training set (cheap to collect, costly
# to label: the case for in-domain self-supervised pre-training)
UNLABELLED_FACTOR = 10


def run_demo(out: Path, quick: bool = False, jobs: int | None = None, seeds: int = 1, adaptive: bool = False,
             sources: bool = False) -> int:
    from rethink.pipeline import run_study
    from rethink.data.synth import write_benchmark, write_unlabelled

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise UserError(f"--seeds: must be a positive integer, got {seeds!r}")
    out = Path(out).resolve()
    configs = bundled_dir()
    timings = {}
    start = time.perf_counter()

    print(f"[demo] 1/3 benchmark: {out / 'benchmark'}", flush=True)
    t0 = time.perf_counter()
    manifest = write_benchmark(out / "benchmark", seed=0, scale="tiny" if quick else "demo")
    if sources:
        write_unlabelled(out / "benchmark", UNLABELLED_FACTOR * manifest["counts"]["target_train"])
    timings["benchmark_s"] = time.perf_counter() - t0

    print("[demo] 2/3 study: pre-training, then random vs pretrained init (runs side by side)", flush=True)
    t0 = time.perf_counter()
    runs, pretrain = data_overrides(out / "benchmark")
    name = "demo_sources" if sources else "demo"
    study_file = configs / "studies" / (f"{name}_quick.yaml" if quick else f"{name}.yaml")
    if seeds > 1 or sources:
        out.mkdir(parents=True, exist_ok=True)
        study_file = study_copy(study_file, out, seeds, out / "benchmark")
    if quick:
        runs += QUICK_RUN_OVERRIDES
        pretrain += QUICK_PRETRAIN_OVERRIDES
    code = run_study(study_file, out / "study", jobs=jobs, overrides=runs, pretrain_overrides=pretrain,
                     adaptive=adaptive)
    timings["study_s"] = time.perf_counter() - t0

    report = out / "study" / "report" / "index.html"
    timings["total_s"] = time.perf_counter() - start
    atomic_write_json(out / "demo.json", {"quick": quick, "seeds": seeds, "adaptive": adaptive, "sources": sources,
                                          **timings,
                                          "report": str(report)})
    print(f"[demo] 3/3 report: {report}", flush=True)
    print(f"[demo] done in {timings['total_s']:.0f} s (benchmark {timings['benchmark_s']:.0f} s, "
          f"study {timings['study_s']:.0f} s)", flush=True)
    return code
