"""COCO AP scoring: ground truth + detections in COCO format -> a flat dict of AP numbers.

The numbers are the standard COCOeval summary (AP@[.5:.95], AP50, AP75, APs/m/l at 100 detections
per image), named and scaled as detectron2 does: `bbox/AP`, `segm/AP75` ..., 0-100.

faster-coco-eval computes them (C++ matching and accumulation); pycocotools, the reference
implementation, runs the very same inputs with `backend="pycocotools"` so that tests and
benchmarks can check the two agree.

Rules at the edges:
- Every image of the ground truth is scored, with or without detections; detections on images
  the ground truth does not list are dropped (an evaluation subset scores only its own images).
- No detections at all: each AP is 0.0, since a model that finds nothing has zero precision
  wherever there is something to find. (detectron2 reports NaN here; a 0.0 keeps early
  from-scratch training curves plottable and comparable.)
- A metric COCOeval reports as -1 is NaN: -1 means "undefined", e.g. APs on a dataset without
  small objects, and a -1 averaged into a curve or a table would be a silent lie.
- The caller's ground truth and detections are never modified: both libraries write into the
  annotation dicts they are given, so each evaluation works on fresh per-annotation copies.
"""

import contextlib
import io
import math

import numpy as np
import pycocotools.mask as pycoco_mask
from faster_coco_eval import COCO as FasterCOCO
from faster_coco_eval import COCOeval_faster
from pycocotools.coco import COCO as PyCOCO
from pycocotools.cocoeval import COCOeval as PyCOCOeval

from rethink.errors import UserError

IOU_TYPES = ("bbox", "segm")
BACKENDS = ("faster", "pycocotools")
# The first six entries of COCOeval.stats, in order.
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# COCOeval's default area ranges (pixels^2, both ends inclusive), needed to know which APs are
# defined when there are no detections and the evaluators are not run at all.
_AREA_RANGES = ((0, 1e5**2), (0, 32**2), (32**2, 96**2), (96**2, 1e5**2))
_AREA_RANGE_OF_METRIC = (0, 0, 0, 1, 2, 3)


def coco_metrics(
    gt: dict,
    detections: list[dict],
    iou_types: tuple[str, ...] = ("bbox",),
    backend: str = "faster",
    per_category: bool = False,
) -> dict[str, float]:
    """Score `detections` against the COCO ground truth `gt`.

    `gt` is a COCO annotations dict (images, annotations, categories). `detections` are COCO
    results: image_id, category_id, score, and `bbox` [x, y, w, h] for "bbox" or `segmentation`
    (an RLE with str counts, see `masks_to_rle`) for "segm".
    Returns {"bbox/AP": 38.2, "bbox/AP50": ..., "segm/APl": ...} on a 0-100 scale; NaN where
    COCOeval reports the metric as undefined (-1). With `per_category`, also each category's AP@[.5:.95]
    as `bbox/AP-<category name>` (detectron2's naming), NaN for a category without ground truth.
    """
    if isinstance(iou_types, str):
        iou_types = (iou_types,)  # a lone "segm" would otherwise be read letter by letter
    for iou_type in iou_types:
        if iou_type not in IOU_TYPES:
            raise UserError(f"unknown evaluation type {iou_type!r}; choose from {', '.join(IOU_TYPES)}")
    if backend not in BACKENDS:
        raise UserError(f"unknown COCO evaluation backend {backend!r}; choose from {', '.join(BACKENDS)}")
    for key in ("images", "annotations", "categories"):
        if key not in gt:
            raise UserError(f"ground truth has no {key!r} list; it must be a COCO annotations dict")

    image_ids = {img["id"] for img in gt["images"]}
    kept = [d for d in detections if d["image_id"] in image_ids]

    results = {}
    for iou_type in iou_types:
        gt_copy = _ground_truth_for(gt, iou_type)
        if not kept:
            stats, per_cat = _stats_without_detections(gt_copy), _per_category_without_detections(gt_copy)
        else:
            dets = _detections_for(kept, iou_type)
            if backend == "faster":
                stats, per_cat = _faster_stats(gt_copy, dets, iou_type)
            else:
                stats, per_cat = _pycocotools_stats(gt_copy, dets, iou_type)
        for name, value in zip(METRIC_NAMES, stats):
            results[f"{iou_type}/{name}"] = float(value) * 100.0 if value >= 0 else math.nan
        if per_category:
            names = {cat["id"]: cat.get("name", str(cat["id"])) for cat in gt["categories"]}
            for cat_id, value in per_cat.items():
                results[f"{iou_type}/AP-{names[cat_id]}"] = float(value) * 100.0 if value >= 0 else math.nan
    return results


def _per_category_ap(evaluator) -> dict[int, float]:
    """Each category's AP@[.5:.95] from COCOeval's accumulated precision, -1 where undefined.

    precision has axes (IoU threshold, recall threshold, category, area range, max detections); -1 marks
    entries without ground truth. A category's AP is the mean over its defined entries at area "all" and the
    largest max-detections setting, as COCOeval's summary does for the AP over all categories.
    """
    precision = evaluator.eval["precision"]
    area_all = list(evaluator.params.areaRngLbl).index("all")
    out = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, k, area_all, -1]
        defined = values[values > -1]
        out[int(cat_id)] = float(np.mean(defined)) if defined.size else -1.0
    return out


def _per_category_without_detections(gt: dict) -> dict[int, float]:
    """0 for a category with non-crowd ground truth (nothing found), -1 (undefined) for one without."""
    present = {ann["category_id"] for ann in gt["annotations"] if not ann["iscrowd"]}
    return {cat["id"]: (0.0 if cat["id"] in present else -1.0) for cat in sorted(gt["categories"], key=lambda c: c["id"])}


def masks_to_rle(masks: np.ndarray) -> list[dict]:
    """(N, H, W) binary masks -> N COCO RLEs {"size": [H, W], "counts": str}, ready for JSON."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (N, H, W), got {masks.shape}")
    if masks.shape[0] == 0:
        return []
    # The RLE encoder walks memory column by column: it needs an (H, W, N) Fortran-ordered uint8 array.
    fortran = np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))
    rles = pycoco_mask.encode(fortran)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")  # bytes are not JSON-serialisable
    return rles


def _ground_truth_for(gt: dict, iou_type: str) -> dict:
    """A copy of `gt` the evaluators may write into, with annotation ids renumbered from 1.

    Both libraries mark a detection as unmatched with annotation id 0, so a ground-truth box
    numbered 0 could never be matched; ids only serve matching here, so renumbering is safe
    and also removes any duplicate ids.
    """
    annotations = []
    for new_id, ann in enumerate(gt["annotations"], start=1):
        if "area" not in ann or "bbox" not in ann:
            raise UserError(f"ground-truth annotation id {ann.get('id')} lacks 'area' or 'bbox'")
        if iou_type == "segm" and "segmentation" not in ann:
            raise UserError(f"ground-truth annotation id {ann.get('id')} has no 'segmentation' for mask AP")
        own = dict(ann)
        own["id"] = new_id
        # pycocotools reads iscrowd unconditionally when computing mask IoU.
        own["iscrowd"] = int(ann.get("iscrowd", 0))
        annotations.append(own)
    if iou_type == "segm":
        for img in gt["images"]:
            if "height" not in img or "width" not in img:
                raise UserError(f"ground-truth image id {img.get('id')} lacks 'height'/'width', needed for mask AP")
    return {
        "images": [dict(img) for img in gt["images"]],
        "annotations": annotations,
        "categories": [dict(cat) for cat in gt["categories"]],
    }


def _detections_for(detections: list[dict], iou_type: str) -> list[dict]:
    """Fresh result dicts holding only what `iou_type` needs.

    For masks the box is left out on purpose: given a box, both libraries take the box area as
    the detection's area, which would sort masks into small/medium/large by their boxes.
    """
    out = []
    for i, det in enumerate(detections):
        item = {"image_id": det["image_id"], "category_id": det["category_id"], "score": float(det["score"])}
        if iou_type == "bbox":
            if "bbox" not in det:
                raise UserError(f"detection {i} has no 'bbox'")
            item["bbox"] = [float(v) for v in det["bbox"]]
        else:
            if "segmentation" not in det:
                raise UserError(f"detection {i} has no 'segmentation'; mask AP needs a mask per detection")
            item["segmentation"] = det["segmentation"]
        out.append(item)
    return out


def _faster_stats(gt: dict, detections: list[dict], iou_type: str) -> list[float]:
    def quiet(*args, **kwargs):
        pass

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = FasterCOCO(gt, print_function=quiet)
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval_faster(coco_gt, coco_dt, iouType=iou_type, print_function=quiet)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return list(evaluator.stats[: len(METRIC_NAMES)]), _per_category_ap(evaluator)


def _pycocotools_stats(gt: dict, detections: list[dict], iou_type: str) -> list[float]:
    # pycocotools reports progress with print(); the captured text is dropped.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = PyCOCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(detections)
        evaluator = PyCOCOeval(coco_gt, coco_dt, iouType=iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return list(evaluator.stats[: len(METRIC_NAMES)]), _per_category_ap(evaluator)


def _stats_without_detections(gt: dict) -> list[float]:
    """COCOeval's summary when there is nothing to match, computed directly.

    (pycocotools cannot load an empty result list.) Precision is 0 for every category with a
    non-crowd ground truth in the area range and undefined otherwise; an area range's AP is
    the mean over the defined categories, so it is 0 if any category is defined there, else -1.
    """
    category_ids = {cat["id"] for cat in gt["categories"]}
    image_ids = {img["id"] for img in gt["images"]}
    areas = [
        ann["area"]
        for ann in gt["annotations"]
        if not ann["iscrowd"] and ann["category_id"] in category_ids and ann["image_id"] in image_ids
    ]
    stats = []
    for range_index in _AREA_RANGE_OF_METRIC:
        low, high = _AREA_RANGES[range_index]
        stats.append(0.0 if any(low <= area <= high for area in areas) else -1.0)
    return stats
