import copy
import json
import math

import numpy as np
import pycocotools.mask as pycoco_mask
import pytest

from rethink.engine.coco_eval import coco_metrics, masks_to_rle
from rethink.errors import UserError

H, W = 160, 200
CATEGORY_IDS = (1, 2, 5)  # not 0..K-1 on purpose: nothing may assume contiguous ids
KEYS = [f"{t}/{m}" for t in ("bbox", "segm") for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")]


def ellipse_mask(x, y, w, h):
    """A filled ellipse inscribed in the box, so a box and its mask describe the same object."""
    yy, xx = np.mgrid[0:H, 0:W]
    cx, cy = x + w / 2.0, y + h / 2.0
    return ((xx + 0.5 - cx) / (w / 2.0)) ** 2 + ((yy + 0.5 - cy) / (h / 2.0)) ** 2 <= 1.0


def object_annotation(ann_id, image_id, category_id, box, iscrowd=0):
    mask = ellipse_mask(*box)
    rle = masks_to_rle(mask[None])[0]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": rle,
        "area": float(pycoco_mask.area(rle)),
        "bbox": [float(v) for v in pycoco_mask.toBbox(rle)],
        "iscrowd": iscrowd,
    }


# Boxes [x, y, w, h] per image: small (< 32^2 px), medium and large (> 96^2 px) objects.
OBJECTS = {
    10: [(1, (10, 12, 20, 18)), (2, (60, 40, 50, 45)), (5, (30, 20, 140, 120))],
    11: [(1, (5, 5, 25, 25)), (1, (120, 90, 60, 50)), (2, (40, 30, 22, 14))],
    12: [(5, (20, 20, 110, 100)), (5, (140, 100, 40, 40)), (2, (150, 10, 18, 28))],
    13: [(2, (70, 60, 64, 70))],
}


def make_gt(without_small=False):
    images = [{"id": i, "width": W, "height": H, "file_name": f"{i}.png"} for i in (10, 11, 12, 13, 14)]
    annotations = []
    for image_id, objects in OBJECTS.items():
        for category_id, box in objects:
            ann = object_annotation(len(annotations), image_id, category_id, box)
            if without_small and ann["area"] < 32**2:
                continue
            annotations.append(ann)
    # Annotation ids start at 0 above: both libraries read id 0 as "unmatched", so this
    # checks that scoring does not depend on the ids the data happens to carry.
    annotations.append(object_annotation(len(annotations), 13, 1, (0, 100, 80, 55), iscrowd=1))
    categories = [{"id": c, "name": f"class{c}"} for c in CATEGORY_IDS]
    # Image 14 has no objects: a detection there is a false positive.
    return {"images": images, "annotations": annotations, "categories": categories}


def detection(image_id, category_id, box, score):
    x, y, w, h = box
    return {
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [float(x), float(y), float(w), float(h)],
        "score": float(score),
        "segmentation": masks_to_rle(ellipse_mask(x, y, w, h)[None])[0],
    }


def make_detections(gt, seed=0):
    """Jittered hits (some missed, some duplicated), false positives, random scores."""
    rng = np.random.default_rng(seed)
    dets = []
    for ann in gt["annotations"]:
        if ann["iscrowd"] or rng.random() < 0.15:
            continue
        x, y, w, h = ann["bbox"]
        for _ in range(1 if rng.random() < 0.8 else 2):
            jx, jy = rng.normal(0, 0.08, 2) * (w, h)
            sw, sh = np.exp(rng.normal(0, 0.1, 2))
            box = (x + jx, y + jy, max(w * sw, 2.0), max(h * sh, 2.0))
            category = ann["category_id"] if rng.random() < 0.9 else int(rng.choice(CATEGORY_IDS))
            dets.append(detection(ann["image_id"], category, box, rng.random()))
    for _ in range(12):
        w, h = rng.uniform(8, 90, 2)
        box = (rng.uniform(0, W - w), rng.uniform(0, H - h), w, h)
        image_id = int(rng.choice([img["id"] for img in gt["images"]]))
        dets.append(detection(image_id, int(rng.choice(CATEGORY_IDS)), box, rng.random()))
    return dets


def assert_close(a, b, tol=1e-4):
    assert a.keys() == b.keys()
    for key in a:
        if math.isnan(a[key]) or math.isnan(b[key]):
            assert math.isnan(a[key]) and math.isnan(b[key]), key
        else:
            assert abs(a[key] - b[key]) <= tol, (key, a[key], b[key])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faster_backend_agrees_with_pycocotools(seed):
    gt = make_gt()
    dets = make_detections(gt, seed)
    faster = coco_metrics(gt, dets, ("bbox", "segm"), backend="faster")
    reference = coco_metrics(gt, dets, ("bbox", "segm"), backend="pycocotools")
    assert list(faster) == KEYS
    assert_close(faster, reference)
    # The data is meant to give partial scores; 0 or 100 would make the comparison toothless.
    for key in ("bbox/AP", "segm/AP", "bbox/AP75"):
        assert 5.0 < faster[key] < 95.0, (key, faster[key])


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_perfect_detections_score_100(backend):
    gt = make_gt()
    dets = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0,
         "segmentation": a["segmentation"]}
        for a in gt["annotations"]
        if not a["iscrowd"]
    ]
    result = coco_metrics(gt, dets, ("bbox", "segm"), backend=backend)
    assert result == pytest.approx({key: 100.0 for key in KEYS}, abs=1e-9)


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_no_detections_score_zero(backend):
    gt = make_gt()
    assert coco_metrics(gt, [], ("bbox", "segm"), backend=backend) == {key: 0.0 for key in KEYS}
    # Detections on images outside the ground truth are not scored: the same as none at all.
    elsewhere = [detection(999, 1, (10, 10, 30, 30), 0.9)]
    assert coco_metrics(gt, elsewhere, ("bbox",), backend=backend) == {key: 0.0 for key in KEYS[:6]}


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_undefined_metric_is_nan(backend):
    gt = make_gt(without_small=True)
    for dets in (make_detections(gt, seed=3), []):
        result = coco_metrics(gt, dets, ("bbox", "segm"), backend=backend)
        for iou_type in ("bbox", "segm"):
            # No small ground truth: COCOeval says -1 for APs, which must not pass for a score.
            assert math.isnan(result[f"{iou_type}/APs"])
            for metric in ("AP", "AP50", "AP75", "APm", "APl"):
                assert 0.0 <= result[f"{iou_type}/{metric}"] <= 100.0
    empty_gt = {"images": gt["images"], "annotations": [], "categories": gt["categories"]}
    result = coco_metrics(empty_gt, make_detections(gt, seed=3), ("bbox",), backend=backend)
    assert all(math.isnan(v) for v in result.values())


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_hand_computed_ap(backend):
    # One object; a false positive outranks the exact hit. Precision is 1/2 once recall reaches 1,
    # and COCO's interpolated precision is 1/2 at every recall threshold: AP = 50 at every IoU.
    box = (40, 30, 120, 110)  # a large object: the ellipse covers more than 96^2 px
    gt = {
        "images": [{"id": 1, "width": W, "height": H}],
        "annotations": [object_annotation(7, 1, 2, box)],
        "categories": [{"id": 2, "name": "thing"}],
    }
    dets = [detection(1, 2, (0, 0, 20, 20), 0.9), detection(1, 2, gt["annotations"][0]["bbox"], 0.8)]
    result = coco_metrics(gt, dets, ("bbox",), backend=backend)
    assert result["bbox/AP"] == pytest.approx(50.0)
    assert result["bbox/AP50"] == pytest.approx(50.0)
    assert result["bbox/AP75"] == pytest.approx(50.0)
    # The false positive is small: COCOeval ignores it when scoring large objects, so APl is perfect.
    assert result["bbox/APl"] == pytest.approx(100.0)
    assert math.isnan(result["bbox/APs"]) and math.isnan(result["bbox/APm"])


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_inputs_are_not_modified_and_nothing_is_printed(backend, capsys):
    gt = make_gt()
    dets = make_detections(gt, seed=4)
    gt_before, dets_before = copy.deepcopy(gt), copy.deepcopy(dets)
    first = coco_metrics(gt, dets, ("bbox", "segm"), backend=backend)
    assert gt == gt_before
    assert dets == dets_before
    # Evaluating again on the same objects gives the same numbers: no state leaks between calls.
    assert coco_metrics(gt, dets, ("bbox", "segm"), backend=backend) == first
    captured = capsys.readouterr()
    assert captured.out == ""


def test_unknown_type_or_backend_is_a_user_error():
    gt = make_gt()
    with pytest.raises(UserError, match="keypoints"):
        coco_metrics(gt, [], ("keypoints",))
    with pytest.raises(UserError, match="torchmetrics"):
        coco_metrics(gt, [], ("bbox",), backend="torchmetrics")
    no_masks = [{k: v for k, v in d.items() if k != "segmentation"} for d in make_detections(gt)]
    with pytest.raises(UserError, match="segmentation"):
        coco_metrics(gt, no_masks, ("segm",))


# pycocotools' decode trips a numpy 2 deprecation inside the library; not ours to fix.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_masks_to_rle_round_trip():
    rng = np.random.default_rng(5)
    masks = rng.random((3, 7, 11)) < 0.4  # not square: a transposed encoding would not decode back
    masks[1] = False
    rles = masks_to_rle(masks)
    assert len(rles) == 3
    json.dumps(rles)
    for mask, rle in zip(masks, rles):
        assert isinstance(rle["counts"], str)
        assert rle["size"] == [7, 11]
        np.testing.assert_array_equal(pycoco_mask.decode(rle), mask.astype(np.uint8))
        assert pycoco_mask.area(rle) == mask.sum()
    assert masks_to_rle(np.zeros((0, 7, 11), dtype=np.uint8)) == []


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_per_category_ap_is_each_category_evaluated_alone(backend):
    gt = make_gt()
    dets = make_detections(gt, seed=3)
    both = coco_metrics(gt, dets, iou_types=("bbox", "segm"), backend=backend, per_category=True)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    for cat_id in CATEGORY_IDS:
        alone_gt = {**gt, "annotations": [a for a in gt["annotations"] if a["category_id"] == cat_id],
                    "categories": [c for c in gt["categories"] if c["id"] == cat_id]}
        alone = coco_metrics(alone_gt, [d for d in dets if d["category_id"] == cat_id],
                             iou_types=("bbox", "segm"), backend=backend)
        for iou_type in ("bbox", "segm"):
            assert both[f"{iou_type}/AP-{names[cat_id]}"] == pytest.approx(alone[f"{iou_type}/AP"], abs=1e-9)
    # the summary AP is the mean of the categories' APs
    mean = np.mean([both[f"bbox/AP-{names[c]}"] for c in CATEGORY_IDS])
    assert both["bbox/AP"] == pytest.approx(mean, abs=1e-9)
    assert "bbox/AP-" + names[CATEGORY_IDS[0]] not in coco_metrics(gt, dets, backend=backend)
    empty = coco_metrics(gt, [], backend=backend, per_category=True)
    assert all(empty[f"bbox/AP-{names[c]}"] == 0.0 for c in CATEGORY_IDS)


def _faster_coco_eval_ap(annotations_path, results_path, iou_type: str) -> float:
    """faster-coco-eval's AP of a results file, on the files alone (as a user checks a submission)."""
    from faster_coco_eval import COCO, COCOeval_faster

    coco_gt = COCO(str(annotations_path))
    coco_dt = coco_gt.loadRes(str(results_path))
    evaluator = COCOeval_faster(coco_gt, coco_dt, iouType=iou_type, print_function=lambda *a, **k: None)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return float(evaluator.stats[0]) * 100.0


@pytest.mark.parametrize("detector", ["faster_rcnn", "mask_rcnn"])
def test_eval_writes_coco_results_whose_ap_it_prints(coco_data, tmp_path, detector, capsys):
    from conftest import tiny_config_dict, write_config
    from rethink.cli import main

    cfg = tiny_config_dict(coco_data)
    cfg["model"]["detector"] = detector
    config = write_config(tmp_path / "c.yaml", cfg)
    overrides = ["solver.iters_1x=8", "eval_period=0", "checkpoint_period=8"]
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--no-progress", "--set", *overrides]) == 0
    capsys.readouterr()
    predictions = tmp_path / "out" / "coco_instances_results.json"
    assert main(["eval", str(config), "--weights", str(tmp_path / "run" / "checkpoints" / "iter_0000008.pt"),
                 "--predictions", str(predictions), "--set", *overrides]) == 0
    printed = json.loads(capsys.readouterr().out)
    results = json.loads(predictions.read_text())
    gt = json.loads((coco_data / "val" / "annotations.json").read_text())
    image_ids, cat_ids = {i["id"] for i in gt["images"]}, {c["id"] for c in gt["categories"]}
    assert results and all(r["image_id"] in image_ids and r["category_id"] in cat_ids for r in results)
    assert all(len(r["bbox"]) == 4 and r["bbox"][2] >= 0 and r["bbox"][3] >= 0 and 0 <= r["score"] <= 1
               for r in results)
    iou_types = ["bbox"] + (["segm"] if detector == "mask_rcnn" else [])
    if detector == "mask_rcnn":
        sizes = {i["id"]: [i["height"], i["width"]] for i in gt["images"]}
        assert all(r["segmentation"]["size"] == sizes[r["image_id"]] and isinstance(r["segmentation"]["counts"], str)
                   for r in results)
    else:
        assert all("segmentation" not in r for r in results)
    for iou_type in iou_types:
        assert printed[f"{iou_type}/AP"] == pytest.approx(
            _faster_coco_eval_ap(coco_data / "val" / "annotations.json", predictions, iou_type), abs=1e-9)
        assert {f"{iou_type}/AP-rect", f"{iou_type}/AP-ellipse"} <= set(printed)
