"""Training throughput of `rethink train` against a minimal plain loop, side by side in one process.

The plain loop is written in the style of torchvision's references/detection (a DataLoader over a dataset that
reads and decodes each image file when it is drawn, a random sampler, model(images, targets), sum of losses,
backward, SGD step) on the same model (same builder and seed), the same images, the same batch and the same
threads. A third loop, the plain loop over rethink's in-memory dataset, separates the data loading from the rest.
The loops are timed in alternating segments after a warm-up; `ratio` = rethink img/s / plain img/s, each the
median over rounds (>= 1.0 means no overhead from logging, checkpointing, evaluation scheduling or data
loading), and `ratio_paired_median` the median of each round's own ratio (robust to drift between rounds). It also prints the achieved model FLOP/s as a fraction of this machine's measured
matmul peak, measured in the same run.

    python benchmarks/bench_train.py [--quick] [--data DIR]

The last line printed is one JSON object.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from rethink.config import load_config  # noqa: E402
from rethink.data.coco import CocoDetection, collate  # noqa: E402
from rethink.data.coco import load_datasets  # noqa: E402
from rethink.engine.train import train  # noqa: E402
from rethink.fileio import read_jsonl  # noqa: E402
from rethink.models.detector import build_detector, set_mode_sizes  # noqa: E402


def data_overrides(root: Path) -> list[str]:
    t = root / "target"
    return [f"data.train.images={t / 'train' / 'images'}", f"data.train.annotations={t / 'train' / 'annotations.json'}",
            f"data.val.images={t / 'val' / 'images'}", f"data.val.annotations={t / 'val' / 'annotations.json'}"]


def rethink_segment(cfg_path: Path, overrides: list[str], iters: int, workdir: Path) -> float:
    """img/s of a whole `rethink train` run (evaluation only at the end, excluded; checkpoints included)."""
    out = Path(tempfile.mkdtemp(dir=workdir))
    cfg = load_config(cfg_path, overrides + [f"solver.iters_1x={iters * 3}", "solver.schedule=0.34x",
                                             "solver.warmup_iters=5", "eval_period=0", "log_period=5",
                                             "data.val_size=8"])  # checkpoints as configured (and at the end)
    train(cfg, out, progress=False)
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if r["type"] == "train"]
    # from the end of the first logging period on: the first one holds the warm-up (first iterations are slow)
    periods = list(zip(rows[:-1], rows[1:]))
    images = sum(b["images_seen"] - a["images_seen"] for a, b in periods)
    seconds = sum((b["images_seen"] - a["images_seen"]) / b["img_per_s"] for a, b in periods)
    return images / seconds


def reference_dataset(cfg, train_check, train_set):
    """The same images and targets, read from disk on every access (no decoded-image cache), as in the references."""
    return CocoDetection(train_check, [img["id"] for img in train_set.images], with_masks=False, cache="no",
                         train=True)


def plain_segment(cfg, train_set, iters: int, warmup: int = 5) -> float:
    """torchvision-references-style loop on an identically built model."""
    torch.manual_seed(cfg.seed)
    model = build_detector(cfg.model, cfg.data, len(train_set.cat_ids))
    set_mode_sizes(model, training=True)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    sampler = torch.utils.data.RandomSampler(train_set, replacement=True, num_samples=10**9)
    loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.solver.batch_size, sampler=sampler,
                                         collate_fn=collate, num_workers=0)
    it = iter(loader)
    start = None
    for i in range(warmup + iters):
        if i == warmup:
            start = time.perf_counter()
        images, targets = next(it)
        loss = sum(model(list(images), list(targets)).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return iters * cfg.solver.batch_size / (time.perf_counter() - start)


def flops_per_iteration(cfg, train_set) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = build_detector(cfg.model, cfg.data, len(train_set.cat_ids))
    set_mode_sizes(model, training=True)
    model.train()
    images, targets = collate([train_set[i] for i in range(cfg.solver.batch_size)])
    counter = FlopCounterMode(display=False)
    with counter:
        sum(model(list(images), list(targets)).values()).backward()
    return float(counter.get_total_flops())


def matmul_peak(seconds: float = 2.0) -> float:
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter segments (under 2 minutes)")
    parser.add_argument("--data", default=None, help="benchmark root (default: generate the demo benchmark)")
    parser.add_argument("--config", default=str(REPO / "src" / "rethink" / "configs" / "tiny" / "faster_rcnn_gn.yaml"))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="bench_train_"))
    data = Path(args.data) if args.data else workdir / "benchmark"
    if not args.data:
        from rethink.data.synth import write_benchmark

        write_benchmark(data, seed=0, scale="demo", progress=False)
    overrides = data_overrides(data) + [f"threads={args.threads}"]
    cfg = load_config(args.config, overrides)
    train_set, _, train_check, _ = load_datasets(cfg)
    train_set.fill_cache()
    from_disk = reference_dataset(cfg, train_check, train_set)
    iters = 100 if args.quick else 300
    rounds = 2 if args.quick else 3
    ours, plain, plain_cached = [], [], []
    for _ in range(rounds):  # alternate, so all see the same machine conditions
        ours.append(rethink_segment(Path(args.config), overrides, iters + 10, workdir))
        plain.append(plain_segment(cfg, from_disk, iters))
        plain_cached.append(plain_segment(cfg, train_set, iters))
    ips, plain_ips, cached_ips = statistics.median(ours), statistics.median(plain), statistics.median(plain_cached)
    # The machine's speed drifts between rounds (shared, noisy): each round's own ratio compares like with like.
    paired = statistics.median(a / b for a, b in zip(ours, plain))
    flops = flops_per_iteration(cfg, train_set)
    peak = matmul_peak(1.0 if args.quick else 2.0)
    achieved = flops * ips / cfg.solver.batch_size
    print(f"rethink train: {ips:.1f} img/s (segments {', '.join(f'{v:.1f}' for v in ours)})")
    print(f"plain loop:    {plain_ips:.1f} img/s (segments {', '.join(f'{v:.1f}' for v in plain)})")
    print(f"plain loop over rethink's in-memory dataset: {cached_ips:.1f} img/s "
          f"(segments {', '.join(f'{v:.1f}' for v in plain_cached)})")
    print(f"ratio {ips / plain_ips:.3f} (of the medians), {paired:.3f} (median of each round's ratio); model {flops / 1e9:.2f} GFLOP per iteration of {cfg.solver.batch_size} images,"
          f" {achieved / 1e9:.1f} GFLOP/s achieved vs {peak / 1e9:.1f} GFLOP/s matmul peak "
          f"({100 * achieved / peak:.1f}%), {args.threads} threads")
    print(json.dumps({"ratio": ips / plain_ips, "img_per_s": ips, "plain_img_per_s": plain_ips,
                      "ratio_paired_median": paired, "ratio_vs_plain_cached": ips / cached_ips, "plain_cached_img_per_s": cached_ips,
                      "flops_fraction_of_peak": achieved / peak, "gflop_per_iter": flops / 1e9,
                      "peak_gflops": peak / 1e9, "threads": args.threads, "batch_size": cfg.solver.batch_size,
                      "segments": rounds, "iters_per_segment": iters}))


if __name__ == "__main__":
    main()
