"""COCO AP scoring speed: faster-coco-eval (what training uses) against pycocotools (the reference).

Generates a COCO-like ground truth in memory (640x480 images, several objects each over the
whole small/medium/large range, 20 categories, polygon masks as in COCO's own files) and
detections (jittered hits, duplicates, misses, wrong classes, false positives, RLE masks as a
model writes them), then times `coco_metrics` with both backends on the same data, alternating
between them so that drifts of the machine hit both alike, and keeps the best of the repeats.

    python benchmarks/bench_eval.py            # 3000 images, bbox and segm
    python benchmarks/bench_eval.py --quick    # 500 images, under a minute or two

The last line printed is one JSON object (speedup, max_ap_diff, images, times) for scripts.
"""

import argparse
import json
import math
import sys
import time

import numpy as np
import pycocotools.mask as pycoco_mask

from rethink.engine.coco_eval import coco_metrics

WIDTH, HEIGHT = 640, 480
NUM_CATEGORIES = 20
POLYGON_VERTICES = 16


def ellipse_polygon(x, y, w, h):
    """A COCO polygon [x1, y1, x2, y2, ...] tracing the ellipse inscribed in the box."""
    angles = np.linspace(0.0, 2.0 * np.pi, POLYGON_VERTICES, endpoint=False)
    xs = x + w / 2.0 * (1.0 + np.cos(angles))
    ys = y + h / 2.0 * (1.0 + np.sin(angles))
    return np.stack([xs, ys], axis=1).ravel().tolist()


def polygon_rle(polygon):
    rle = pycoco_mask.frPyObjects([polygon], HEIGHT, WIDTH)[0]
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def clip_box(x, y, w, h):
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(WIDTH), x + w), min(float(HEIGHT), y + h)
    return x0, y0, max(x1 - x0, 1.0), max(y1 - y0, 1.0)


def make_ground_truth(num_images, rng):
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": WIDTH, "height": HEIGHT, "file_name": f"{image_id:06d}.jpg"})
        for _ in range(rng.integers(2, 12)):
            # Log-uniform sides spread objects over COCO's small (<32^2), medium and large ranges.
            w, h = np.exp(rng.uniform(np.log(8), np.log(400), 2))
            x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
            polygon = ellipse_polygon(x, y, w, h)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": int(rng.integers(1, NUM_CATEGORIES + 1)),
                "bbox": [float(x), float(y), float(w), float(h)],
                "area": float(pycoco_mask.area(polygon_rle(polygon))),
                "segmentation": [polygon],
                "iscrowd": int(rng.random() < 0.01),
            })
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, NUM_CATEGORIES + 1)]
    return {"images": images, "annotations": annotations, "categories": categories}


def make_detections(gt, rng, with_masks):
    dets = []

    def add(image_id, category_id, box, score):
        det = {"image_id": image_id, "category_id": category_id, "bbox": list(box), "score": float(score)}
        if with_masks:
            det["segmentation"] = polygon_rle(ellipse_polygon(*box))
        dets.append(det)

    for ann in gt["annotations"]:
        if rng.random() < 0.1:
            continue  # missed
        x, y, w, h = ann["bbox"]
        for _ in range(2 if rng.random() < 0.15 else 1):
            dx, dy = rng.normal(0.0, 0.07, 2) * (w, h)
            sw, sh = np.exp(rng.normal(0.0, 0.08, 2))
            category = ann["category_id"] if rng.random() < 0.95 else int(rng.integers(1, NUM_CATEGORIES + 1))
            add(ann["image_id"], category, clip_box(x + dx, y + dy, w * sw, h * sh), rng.beta(4, 2))
    for img in gt["images"]:
        for _ in range(rng.poisson(4)):
            w, h = np.exp(rng.uniform(np.log(8), np.log(300), 2))
            box = clip_box(rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h), w, h)
            add(img["id"], int(rng.integers(1, NUM_CATEGORIES + 1)), box, rng.beta(2, 4))
    return dets


def timed(gt, dets, iou_type, backend):
    start = time.perf_counter()
    result = coco_metrics(gt, dets, (iou_type,), backend=backend)
    return time.perf_counter() - start, result


def ap_difference(a, b):
    """Largest |a - b| over the metric keys; NaN on both sides agrees, NaN on one side is infinitely off."""
    diffs = []
    for key in a:
        if math.isnan(a[key]) or math.isnan(b[key]):
            diffs.append(0.0 if math.isnan(a[key]) and math.isnan(b[key]) else math.inf)
        else:
            diffs.append(abs(a[key] - b[key]))
    return max(diffs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None, help="ground-truth images (default 3000, --quick 500)")
    parser.add_argument("--quick", action="store_true", help="500 images: a check in about a minute")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per backend and type; the best counts")
    parser.add_argument("--no-segm", action="store_true", help="time box AP only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    num_images = args.images or (500 if args.quick else 3000)
    iou_types = ("bbox",) if args.no_segm else ("bbox", "segm")

    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    gt = make_ground_truth(num_images, rng)
    dets = make_detections(gt, rng, with_masks="segm" in iou_types)
    print(
        f"data: {len(gt['images'])} images, {len(gt['annotations'])} objects, {len(dets)} detections, "
        f"{NUM_CATEGORIES} categories (generated in {time.perf_counter() - start:.1f}s)"
    )

    best = {}
    results = {}
    for iou_type in iou_types:
        for backend in ("faster", "pycocotools"):
            best[iou_type, backend] = math.inf
        for _ in range(args.repeats):
            for backend in ("faster", "pycocotools"):  # alternate: a slow phase of the machine hits both
                seconds, result = timed(gt, dets, iou_type, backend)
                best[iou_type, backend] = min(best[iou_type, backend], seconds)
                results[iou_type, backend] = result

    summary = {"images": num_images, "annotations": len(gt["annotations"]), "detections": len(dets)}
    max_diff = 0.0
    for iou_type in iou_types:
        faster_s, reference_s = best[iou_type, "faster"], best[iou_type, "pycocotools"]
        diff = ap_difference(results[iou_type, "faster"], results[iou_type, "pycocotools"])
        max_diff = max(max_diff, diff)
        scores = "  ".join(f"{k.split('/')[1]} {v:.2f}" for k, v in results[iou_type, "faster"].items())
        print(f"{iou_type}: faster-coco-eval {faster_s:.2f}s  pycocotools {reference_s:.2f}s  "
              f"speedup {reference_s / faster_s:.1f}x  max |AP diff| {diff:.2e}")
        print(f"  {scores}")
        summary[f"{iou_type}_faster_s"] = round(faster_s, 4)
        summary[f"{iou_type}_pycocotools_s"] = round(reference_s, 4)
        summary[f"{iou_type}_speedup"] = round(reference_s / faster_s, 3)

    faster_total = sum(best[t, "faster"] for t in iou_types)
    reference_total = sum(best[t, "pycocotools"] for t in iou_types)
    print(f"total ({' + '.join(iou_types)}, best of {args.repeats}): faster-coco-eval {faster_total:.2f}s, "
          f"pycocotools {reference_total:.2f}s, speedup {reference_total / faster_total:.1f}x")
    summary.update({
        "faster_s": round(faster_total, 4),
        "pycocotools_s": round(reference_total, 4),
        "speedup": round(reference_total / faster_total, 3),
        "max_ap_diff": max_diff,
        "iou_types": list(iou_types),
        "repeats": args.repeats,
    })
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
