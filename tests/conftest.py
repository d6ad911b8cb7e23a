"""Shared test fixtures: small real COCO datasets on disk and tiny-model configs that train in seconds."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

REPO = Path(__file__).resolve().parents[1]

# Tests run single-threaded: deterministic, and two pytest workers never fight over 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def make_coco(root: Path, n_train: int = 24, n_val: int = 8, size: int = 64, seed: int = 0) -> dict:
    """Write a small COCO dataset: colored rectangles and ellipses on noise, boxes tight around RLE masks."""
    rng = np.random.default_rng(seed)
    categories = [{"id": 1, "name": "rect"}, {"id": 2, "name": "ellipse"}]
    paths = {}
    for split, n in (("train", n_train), ("val", n_val)):
        img_dir = root / split / "images"
        img_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(n):
            canvas = (rng.random((size, size, 3)) * 60).astype(np.uint8)
            image_id = i + 1
            for _ in range(int(rng.integers(1, 4))):
                cat = int(rng.integers(1, 3))
                w, h = (int(v) for v in rng.integers(size // 6, size // 2, size=2))
                x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
                m = np.zeros((size, size), dtype=np.uint8)
                if cat == 1:
                    m[y:y + h, x:x + w] = 1
                else:
                    yy, xx = np.mgrid[0:size, 0:size]
                    m[((xx - x - w / 2) / (w / 2)) ** 2 + ((yy - y - h / 2) / (h / 2)) ** 2 <= 1] = 1
                color = np.array([200, 60, 60] if cat == 1 else [60, 200, 220], dtype=np.uint8)
                canvas[m.astype(bool)] = color
                ys, xs = np.nonzero(m)
                if len(xs) == 0:
                    continue
                rle = mask_utils.encode(np.asfortranarray(m))
                rle["counts"] = rle["counts"].decode("ascii")
                bx, by = int(xs.min()), int(ys.min())
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                    "bbox": [bx, by, int(xs.max()) - bx + 1, int(ys.max()) - by + 1],
                    "area": int(m.sum()), "iscrowd": 0, "segmentation": rle,
                })
            name = f"{image_id:05d}.png"
            Image.fromarray(canvas).save(img_dir / name)
            images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        ann_path = root / split / "annotations.json"
        ann_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
        paths[split] = (img_dir, ann_path)
    return paths


def tiny_config_dict(data_root: Path, **solver) -> dict:
    """A tiny Faster R-CNN config on make_coco data: a few iterations, evaluations along the way."""
    return {
        "model": {
            "detector": "faster_rcnn", "backbone": "tiny", "norm": "gn",
            "tiny_widths": [8, 16, 16, 32], "tiny_depths": [1, 1, 1, 1],
            "fpn_channels": 16, "box_head_conv_dim": 16, "box_head_num_conv": 1, "box_head_fc_dim": 32,
            "mask_head_conv_dim": 16, "mask_head_num_conv": 1,
            "anchor_sizes": [8, 16, 32, 64, 128],
            "rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 100,
            "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 50,
            "box_batch_size_per_image": 32, "rpn_batch_size_per_image": 64,
        },
        "data": {
            "train": {"images": str(data_root / "train" / "images"),
                      "annotations": str(data_root / "train" / "annotations.json")},
            "val": {"images": str(data_root / "val" / "images"),
                    "annotations": str(data_root / "val" / "annotations.json")},
            "min_size_train": [64], "max_size": 64, "min_size_test": 64,
        },
        "solver": {"schedule": "1x", "iters_1x": 12, "batch_size": 4, "base_lr": 0.16, "warmup_iters": 2,
                   "warmup_factor": 0.1, **solver},
        "seed": 0, "eval_period": 4, "log_period": 2, "checkpoint_period": 4, "threads": 1, "deterministic": True,
    }


@pytest.fixture(scope="session")
def coco_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    make_coco(root)
    return root


def write_config(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


def run_cli(*args, cwd=None, timeout=600):
    """Run `python -m rethink ...` as a user would; returns the CompletedProcess."""
    import subprocess
    import sys

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "rethink", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def eval_rows(run_dir: Path) -> list[dict]:
    from rethink.fileio import read_jsonl

    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["type"] == "eval"]


def same(a, b) -> bool:
    """Equality of metric dicts where NaN equals NaN (COCO reports NaN for absent object sizes)."""
    import json

    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def write_tiny_study(root: Path, coco_data: Path, matrix: dict, config: dict | None = None, **extra) -> Path:
    """A study file over tiny_config_dict (with `config` keys replaced) and a random-weights "pretrained" body in
    root/weights.safetensors; `matrix` gets `init: [random, that file]`. Returns the study file's path."""
    import torch
    import yaml
    from safetensors.torch import save_file

    from rethink.models import backbone as bb

    cfg = {**tiny_config_dict(coco_data), **(config or {})}
    write_config(root / "base.yaml", cfg)
    torch.manual_seed(11)
    body, _ = bb.build_resnet("tiny", "gn", tuple(cfg["model"]["tiny_widths"]), (1, 1, 1, 1))
    weights = root / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in body.state_dict().items()}, str(weights))
    study = {"name": "tiny", "base": "base.yaml", "matrix": {"init": ["random", str(weights)], **matrix},
             "report": {"margin_ap": 1.0}, **extra}
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path
