"""GPU check: R50-FPN Mask R-CNN GN at paper resolution on one GPU, random and pretrained-from-file init.

Run through benchmarks/gpu_check.sh (which checks for a GPU first). Steps, all under OUT (default runs/gpu_check):

1. data/: a generated COCO-format dataset at the paper's input size (800x1333 JPEGs, the size torchvision's
   resize gives a COCO image at shorter side 800 / longer side at most 1333, so the model sees paper-size
   inputs): rectangles, ellipses, triangles and rings on noisy backgrounds, overlapping, with RLE masks of
   their visible pixels and boxes tight around them.
2. weights/resnet50_gn.safetensors: a randomly initialized torchvision ResNet-50 GN body (rethink's own
   builder) saved with safetensors. It stands in for ImageNet weights: the speed check only needs the
   pretrained-from-file path (read, key check, load) to run.
3. One `rethink train` per (init, batch) with the bundled paper preset paper/mask_rcnn_R50_FPN_gn.yaml and AMP,
   a short 1x schedule, evaluation (bbox and segm AP) at the end of each run. Each run is a subprocess with a
   time limit; a run that hits it still reports the throughput of the iterations it logged.
4. results/NAME.json per run and summary.json; a table on stdout.

    python benchmarks/gpu_check.py [--out DIR]     # GPU_CHECK_TINY=1: tiny sizes, for a dry run on a CPU

SyncBN is not part of this check: torch's SyncBatchNorm needs a process group of several GPUs; with one process
`norm: syncbn` is plain BatchNorm on the per-GPU batch (see `rethink train ... --nproc 8` on a multi-GPU machine).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "src" / "rethink" / "configs" / "paper" / "mask_rcnn_R50_FPN_gn.yaml"
CATEGORIES = ["rectangle", "ellipse", "triangle", "ring"]

# Full size: the paper's model and input size; four runs of at most time_limit_s each and the data stay under
# budget_s (the check must finish in 8 minutes). Tiny: the same code path on a CPU in a few minutes (a dry run of
# everything but the GPU itself), with fewer proposals and RoIs so that R50 on a CPU gets through its iterations.
FULL = dict(height=800, width=1333, train=200, val=50, min_size=800, max_size=1333, workers=8,
            batches={2: 60, 8: 40}, log_period=5, time_limit_s=100, budget_s=450, extra=[])
TINY = dict(height=96, width=160, train=8, val=4, min_size=96, max_size=160, workers=2,
            batches={2: 2, 4: 2}, log_period=1, time_limit_s=300, budget_s=1800,
            extra=["model.rpn_pre_nms_top_n_train=200", "model.rpn_post_nms_top_n_train=100",
                   "model.rpn_pre_nms_top_n_test=100", "model.rpn_post_nms_top_n_test=50",
                   "model.box_batch_size_per_image=64"])


def draw_object(kind: int, h: int, w: int, rng) -> np.ndarray:
    """A boolean h x w mask of one shape filling its box."""
    yy, xx = np.mgrid[0:h, 0:w]
    u, v = (xx + 0.5) / w * 2 - 1, (yy + 0.5) / h * 2 - 1  # box coordinates in [-1, 1]
    if kind == 0:  # rectangle
        return np.ones((h, w), dtype=bool)
    if kind == 1:  # ellipse
        return u * u + v * v <= 1
    if kind == 2:  # triangle, apex up or down
        apex_up = rng.random() < 0.5
        t = (v + 1) / 2 if apex_up else (1 - v) / 2  # 0 at the apex, 1 at the base
        return np.abs(u) <= t
    r = np.sqrt(u * u + v * v)  # ring
    return (r <= 1) & (r >= 0.55)


def make_image(rng, height: int, width: int):
    """One image and its objects' visible masks (later objects cover earlier ones), as (array, [(cat, mask)])."""
    coarse = rng.integers(20, 120, size=(height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    image = np.repeat(np.repeat(coarse, 16, axis=0), 16, axis=1)[:height, :width]
    image = image + rng.integers(0, 40, size=(height, width, 3), dtype=np.uint8)
    owner = np.full((height, width), -1, dtype=np.int16)  # which object each pixel shows
    kinds = []
    short = min(height, width)
    for index in range(int(rng.integers(3, 13))):
        # sides log-uniform from 3% to 60% of the shorter side: COCO's small, medium and large objects
        h, w = (int(s) for s in np.exp(rng.uniform(np.log(0.03 * short), np.log(0.6 * short), size=2)))
        h, w = max(h, 4), max(w, 4)
        y, x = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        kind = int(rng.integers(0, len(CATEGORIES)))
        shape = draw_object(kind, h, w, rng)
        color = rng.integers(130, 256, size=3, dtype=np.uint8)
        image[y:y + h, x:x + w][shape] = color
        owner[y:y + h, x:x + w][shape] = index
        kinds.append((kind, int(shape.sum())))
    objects = []
    for index, (kind, drawn) in enumerate(kinds):
        visible = owner == index
        area = int(visible.sum())
        if area >= 0.3 * drawn and area >= 16:  # mostly hidden objects are not labelled
            objects.append((kind, visible))
    return image, objects


def write_split(root: Path, split: str, count: int, height: int, width: int, seed: int) -> None:
    images_dir = root / split / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        rng = np.random.default_rng([seed, 0 if split == "train" else 1, i])  # any image regenerates alone
        image, objects = make_image(rng, height, width)
        name = f"{i + 1:06d}.jpg"
        Image.fromarray(image).save(images_dir / name, quality=90)
        images.append({"id": i + 1, "file_name": name, "height": height, "width": width})
        for kind, mask in objects:
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
            area = float(mask_utils.area(rle))
            rle["counts"] = rle["counts"].decode("ascii")  # JSON holds text
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": kind + 1,
                                "bbox": [x, y, w, h], "area": area, "iscrowd": 0, "segmentation": rle})
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(CATEGORIES)]
    text = json.dumps({"images": images, "annotations": annotations, "categories": categories})
    (root / split / "annotations.json").write_text(text)


def prepare_data(root: Path, size: dict) -> None:
    done = root / "done.json"
    if done.exists() and json.loads(done.read_text()) == {k: size[k] for k in ("height", "width", "train", "val")}:
        return
    for split in ("train", "val"):
        write_split(root, split, size[split], size["height"], size["width"], seed=0)
    done.write_text(json.dumps({k: size[k] for k in ("height", "width", "train", "val")}))


def prepare_weights(path: Path) -> None:
    """A ResNet-50 GN body from rethink's builder, randomly initialized, as a safetensors file."""
    if path.exists():
        return
    import torch
    from safetensors.torch import save_file

    from rethink.models import backbone as bb

    torch.manual_seed(0)
    body, _ = bb.build_resnet("resnet50", "gn", None, None)
    bb.init_random(body)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in body.state_dict().items()}, str(path))


def run_overrides(data: Path, size: dict, init: str, batch: int, iters: int) -> list[str]:
    return [
        f"data.train.images={data / 'train' / 'images'}", f"data.train.annotations={data / 'train' / 'annotations.json'}",
        f"data.val.images={data / 'val' / 'images'}", f"data.val.annotations={data / 'val' / 'annotations.json'}",
        f"data.min_size_train=[{size['min_size']}]", f"data.max_size={size['max_size']}",
        f"data.min_size_test={size['min_size']}", f"data.num_workers={size['workers']}",
        # decoded JPEGs, as with COCO (whose 118k images are never cached in memory)
        "data.cache_images='no'",
        f"init={init}", f"solver.batch_size={batch}", "solver.schedule=1x", f"solver.iters_1x={iters}",
        f"solver.warmup_iters={iters // 3}", "solver.amp=true",
        f"eval_period={iters}", f"log_period={size['log_period']}", f"checkpoint_period={iters}",
        "keep_checkpoints=1",
        *size["extra"],
    ]


def throughput(rows: list[dict]) -> float | None:
    """img/s over the logged periods after the first one (which holds the warm-up: cudnn autotuning, allocator)."""
    periods = list(zip(rows[:-1], rows[1:]))
    images = sum(b["images_seen"] - a["images_seen"] for a, b in periods)
    seconds = sum((b["images_seen"] - a["images_seen"]) / b["img_per_s"] for a, b in periods if b["img_per_s"] > 0)
    return images / seconds if seconds > 0 else None


def run_one(out: Path, name: str, overrides: list[str], time_limit_s: int) -> dict:
    run_dir = out / "runs" / name
    log = out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "rethink", "train", str(PRESET), "--out", str(run_dir), "--no-progress"]
    for o in overrides:
        command += ["--set", o]
    start = time.perf_counter()
    with open(log, "w") as f:
        try:
            rc = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, timeout=time_limit_s).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.perf_counter() - start
    rows = []
    if (run_dir / "metrics.jsonl").exists():
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train_rows = [r for r in rows if r["type"] == "train"]
    evals = [r for r in rows if r["type"] == "eval"]
    final = json.loads((run_dir / "final.json").read_text()) if (run_dir / "final.json").exists() else {}
    init = json.loads((run_dir / "init.json").read_text()) if (run_dir / "init.json").exists() else {}
    result = {
        "name": name, "rc": rc, "wall_s": wall, "iters_logged": train_rows[-1]["iter"] if train_rows else 0,
        "img_per_s": throughput(train_rows),
        # peak CUDA memory allocated by tensors (torch.cuda.max_memory_allocated); absent on a CPU
        "max_mem_mb": max((r["max_mem_mb"] for r in train_rows if "max_mem_mb" in r), default=None),
        "final_loss": train_rows[-1]["loss"] if train_rows else None,
        "eval": {k: v for k, v in evals[-1].items() if k != "type"} if evals else None,
        "device": final.get("device"),
        "init_tensors_loaded": init.get("loaded"),  # the pretrained-from-file arm: backbone tensors read from the file
        "log": str(log),
    }
    if rc != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        result["log_tail"] = lines[-5:]
    return result


def environment() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), bf16=torch.cuda.is_bf16_supported(),
                    amp_dtype="bfloat16" if torch.cuda.is_bf16_supported() else "float16 + GradScaler",
                    gpu_mem_gb=torch.cuda.get_device_properties(0).total_memory / 2**30)
    return info


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(summary: dict) -> None:
    env = summary["environment"]
    print(f"\nGPU check: {env.get('gpu', 'no GPU (dry run)')}, torch {env['torch']}, AMP {env.get('amp_dtype', 'off')}, "
          f"images {summary['size']['height']}x{summary['size']['width']}")
    print(f"{'run':<16} {'rc':>7} {'iters':>5} {'img/s':>7} {'peak MB':>8} {'loss':>6} {'bbox AP':>7} {'segm AP':>7} "
          f"{'eval img/s':>10} {'wall s':>6}")
    for r in summary["runs"]:
        ev = r["eval"] or {}
        print(f"{r['name']:<16} {str(r['rc']):>7} {r['iters_logged']:>5} {fmt(r['img_per_s'], '.2f'):>7} "
              f"{fmt(r['max_mem_mb'], '.0f'):>8} {fmt(r['final_loss'], '.3f'):>6} {fmt(ev.get('bbox/AP'), '.2f'):>7} "
              f"{fmt(ev.get('segm/AP'), '.2f'):>7} {fmt(ev.get('eval/img_per_s'), '.2f'):>10} {r['wall_s']:6.0f}")
    print("SyncBN: not applicable with one GPU (SyncBatchNorm needs a process group of several GPUs; "
          "`norm: syncbn` in one process is BatchNorm on the per-GPU batch).")
    print(f"all ok: {summary['ok']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "runs" / "gpu_check"))
    args = parser.parse_args()
    tiny = os.environ.get("GPU_CHECK_TINY", "0") not in ("", "0")
    size = TINY if tiny else FULL
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    if not env["cuda"] and not tiny:
        print("gpu_check: no CUDA device here; GPU_CHECK_TINY=1 runs the tiny dry run on the CPU", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    prepare_data(out / "data", size)
    weights = out / "weights" / "resnet50_gn.safetensors"
    prepare_weights(weights)
    print(f"data and weights ready in {time.perf_counter() - t0:.0f} s", flush=True)

    results = []
    (out / "results").mkdir(exist_ok=True)
    for init_name, init in (("random", "random"), ("pretrained", str(weights))):
        for batch, iters in size["batches"].items():
            name = f"{init_name}_b{batch}"
            left = size["budget_s"] - (time.perf_counter() - t0)
            limit = int(min(size["time_limit_s"], left))
            if limit < 30:
                results.append({"name": name, "rc": "skipped: out of time", "wall_s": 0.0, "iters_logged": 0,
                                "img_per_s": None, "max_mem_mb": None, "final_loss": None, "eval": None,
                                "init": init_name, "batch_size": batch, "iters": iters})
                continue
            result = run_one(out, name, run_overrides(out / "data", size, init, batch, iters), limit)
            result.update(init=init_name, batch_size=batch, iters=iters)
            (out / "results" / f"{name}.json").write_text(json.dumps(result, indent=2))
            results.append(result)
            print(f"{name}: rc {result['rc']}, {fmt(result['img_per_s'], '.2f')} img/s, "
                  f"peak {fmt(result['max_mem_mb'], '.0f')} MB, {result['wall_s']:.0f} s", flush=True)

    # AP evaluation works when each finished run logged finite box and mask AP for every val image
    evaluated = [r for r in results if r["eval"]]
    eval_ok = bool(evaluated) and all(
        r["eval"]["eval/images"] == size["val"] and all(np.isfinite(r["eval"][k]) for k in ("bbox/AP", "segm/AP"))
        for r in evaluated)
    ok = all(r["rc"] == 0 for r in results) and eval_ok
    summary = {"environment": env, "size": {k: size[k] for k in ("height", "width", "train", "val")},
               "runs": results, "eval_ok": eval_ok, "ok": ok, "wall_s": time.perf_counter() - t0}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print_table(summary)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
