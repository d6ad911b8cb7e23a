"""Evaluation: run the detector on the validation images and score COCO AP (engine.coco_eval).

Under DDP every process runs its share of the images; detections are gathered and scored once.
"""

import time
from pathlib import Path

import numpy as np
import torch

from rethink.engine import distributed
from rethink.engine.coco_eval import coco_metrics, masks_to_rle
from rethink.fileio import atomic_write_json
from rethink.models.detector import set_mode_sizes


def detections_for_batch(outputs, image_ids, label_to_cat: list[int], with_masks: bool) -> list[dict]:
    """torchvision outputs (boxes xyxy in original image coordinates) -> COCO result dicts."""
    results = []
    for out, image_id in zip(outputs, image_ids):
        boxes = out["boxes"].float().cpu()
        if len(boxes) == 0:
            continue
        xywh = boxes.clone()
        xywh[:, 2:] -= xywh[:, :2]
        scores = out["scores"].float().cpu().tolist()
        labels = out["labels"].cpu().tolist()
        rles = None
        if with_masks:
            masks = (out["masks"][:, 0] > 0.5).cpu().numpy().astype(np.uint8)
            rles = masks_to_rle(masks)
        for i, (box, score, label) in enumerate(zip(xywh.tolist(), scores, labels)):
            det = {"image_id": int(image_id), "category_id": int(label_to_cat[label]), "bbox": box, "score": score}
            if rles is not None:
                det["segmentation"] = rles[i]
            results.append(det)
    return results


@torch.no_grad()
def evaluate(model, dataset, gt: dict, device, batch_size: int = 8, amp_dtype=None, num_workers: int = 0,
             per_category: bool = False, predictions: Path | None = None) -> dict:
    """COCO metrics (`bbox/AP`... and `segm/...` for Mask R-CNN) on `dataset`, plus inference speed.

    per_category: also each category's AP (`bbox/AP-<name>`). predictions: write the detections there as a COCO
    results file (detectron2's coco_instances_results.json: image_id, the dataset's category_id, bbox [x, y, w, h],
    score, and an RLE segmentation for Mask R-CNN), exactly what was scored.
    """
    was_training = model.training
    model.eval()
    set_mode_sizes(model, training=False)
    with_masks = dataset.with_masks
    world, rank = (torch.distributed.get_world_size(), distributed.rank()) if distributed.is_distributed() else (1, 0)
    indices = list(range(rank, len(dataset), world))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=torch.device(device).type == "cuda",  # with non_blocking copies below
        collate_fn=_collate,
        # its own generator: creating a DataLoader iterator must not draw from the global RNG that training uses
        generator=torch.Generator().manual_seed(0),
    )
    results = []
    images = 0
    start = time.perf_counter()
    label_to_cat = dataset.label_to_category()
    for batch_images, targets in loader:
        batch_images = [im.to(device, non_blocking=True) for im in batch_images]
        with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(batch_images)
        results += detections_for_batch(outputs, [t["image_id"] for t in targets], label_to_cat, with_masks)
        images += len(batch_images)
    elapsed = time.perf_counter() - start
    # with each shard's image count: eval/images then says how many images the ranks really ran
    gathered = distributed.all_gather_objects((results, images))
    metrics = None
    if distributed.is_main():
        all_results = [r for part, _ in gathered for r in part]
        ran = sum(n for _, n in gathered)
        ids = {img["id"] for img in dataset.images}
        scored_gt = gt if len(ids) == len(gt["images"]) else _restrict_gt(gt, ids)
        iou_types = ("bbox", "segm") if with_masks else ("bbox",)
        metrics = coco_metrics(scored_gt, all_results, iou_types=iou_types, per_category=per_category)
        if predictions is not None:
            atomic_write_json(predictions, all_results)
        metrics["eval/images"] = ran
        metrics["eval/img_per_s"] = ran / elapsed if elapsed > 0 else 0.0
    metrics = distributed.broadcast_object(metrics)
    if was_training:
        model.train()
        set_mode_sizes(model, training=True)
    return metrics


def _restrict_gt(gt: dict, ids: set) -> dict:
    """Ground truth limited to the evaluated images (data.val_size)."""
    return {
        **gt,
        "images": [img for img in gt["images"] if img["id"] in ids],
        "annotations": [a for a in gt["annotations"] if a["image_id"] in ids],
    }


def _collate(batch):
    return tuple(zip(*batch))
