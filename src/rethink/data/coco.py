"""COCO-format detection data: dataset, nested subsets, and the infinite, seeded, resumable sampler.

Sample order and flips are a pure function of (seed, position in the stream): a run resumed at iteration k,
a run forked from a trunk at iteration k, and a run split over N processes all see the same images in the
same order as one uninterrupted run.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from rethink.config import RunConfig
from rethink.data.validate import DatasetCheck, check_coco, check_pair, check_train_size

# Decoded images are kept in memory when they fit in this budget (small datasets, like the bundled benchmark).
CACHE_BUDGET_BYTES = 2 * 2**30


def subset_image_ids(check: DatasetCheck, train_size, subset_seed: int) -> list[int]:
    """The first `train_size` images of a seeded permutation of the usable training images.

    The permutation does not depend on train_size, so 500 images lie inside 1500, inside the full set.
    Images without (non-crowd) annotations are left out of training, as torchvision's references and
    detectron2 do.
    """
    ids = sorted(check.usable_image_ids)
    order = np.random.default_rng(subset_seed).permutation(len(ids))
    ids = [ids[i] for i in order]
    return ids if train_size == "full" else ids[:train_size]


def val_image_ids(check: DatasetCheck, val_size) -> list[int]:
    ids = sorted(img["id"] for img in check.coco["images"])
    return ids if val_size == "full" else ids[:val_size]


class CocoDetection(torch.utils.data.Dataset):
    """Images as float tensors in [0, 1] and torchvision-style targets (boxes xyxy, labels 1..K, masks).

    Items are addressed by `(index, flip)` pairs from the sampler, or by a plain index (no flip).
    """

    def __init__(self, check: DatasetCheck, image_ids, with_masks: bool, cache: str = "auto", train: bool = True):
        self.images_dir = Path(check.images_dir)
        self.with_masks = with_masks
        self.train = train
        coco = check.coco
        self.cat_ids = sorted(c["id"] for c in coco["categories"])
        self.cat_to_label = {c: i + 1 for i, c in enumerate(self.cat_ids)}
        images = {img["id"]: img for img in coco["images"]}
        self.images = [images[i] for i in image_ids]
        anns = {i: [] for i in image_ids}
        for ann in coco["annotations"]:
            if ann["image_id"] in anns and not (train and ann.get("iscrowd", 0)):
                anns[ann["image_id"]].append(ann)
        self.anns = [anns[i] for i in image_ids]
        pixels = sum(img["width"] * img["height"] * 3 for img in self.images)
        self.cache_enabled = cache in ("yes", True) or (cache == "auto" and pixels <= CACHE_BUDGET_BYTES)
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self):
        return len(self.images)

    def label_to_category(self) -> list[int]:
        return [0] + self.cat_ids

    def _load_uint8(self, index: int) -> torch.Tensor:
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        info = self.images[index]
        with Image.open(self.images_dir / info["file_name"]) as im:
            array = np.asarray(im.convert("RGB"))
        image = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
        if self.cache_enabled:
            self._cache[index] = image
        return image

    def fill_cache(self) -> None:
        """Decode every image once (before worker processes fork, so they share the memory)."""
        if self.cache_enabled:
            for i in range(len(self)):
                self._load_uint8(i)

    def target(self, index: int) -> dict:
        info = self.images[index]
        h, w = info["height"], info["width"]
        anns = self.anns[index]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        boxes[:, 0::2].clamp_(0, w)
        boxes[:, 1::2].clamp_(0, h)
        target = {
            "boxes": boxes,
            "labels": torch.tensor([self.cat_to_label[a["category_id"]] for a in anns], dtype=torch.int64),
            "image_id": info["id"],
            "iscrowd": torch.tensor([a.get("iscrowd", 0) for a in anns], dtype=torch.int64),
        }
        if self.with_masks:
            masks = np.zeros((len(anns), h, w), dtype=np.uint8)
            for i, a in enumerate(anns):
                masks[i] = annotation_mask(a["segmentation"], h, w)
            target["masks"] = torch.from_numpy(masks)
        return target

    def __getitem__(self, key):
        index, flip = key if isinstance(key, tuple) else (key, False)
        image = self._load_uint8(index).float().div_(255.0)
        target = self.target(index)
        if flip:
            image = image.flip(-1)
            w = image.shape[-1]
            boxes = target["boxes"].clone()
            boxes[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
            target["boxes"] = boxes
            if "masks" in target:
                target["masks"] = target["masks"].flip(-1)
        return image, target


def annotation_mask(segmentation, h: int, w: int) -> np.ndarray:
    """Polygons or RLE (compressed or not) -> a binary HxW mask, with pycocotools."""
    if isinstance(segmentation, list):
        rles = mask_utils.frPyObjects(segmentation, h, w)
        rle = mask_utils.merge(rles)
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, h, w)
    else:
        rle = segmentation
    return mask_utils.decode(rle)


def collate(batch):
    # Detection batches are lists: torchvision's models take images of different sizes.
    return tuple(zip(*batch))


def load_datasets(cfg: RunConfig):
    """Validate both splits (clear errors before any training) and build the datasets."""
    d = cfg.data
    with_masks = cfg.model.detector == "mask_rcnn"
    train_check = check_coco(Path(d.train.images), Path(d.train.annotations), role="train", require_masks=with_masks)
    val_check = check_coco(Path(d.val.images), Path(d.val.annotations), role="val", require_masks=with_masks)
    check_train_size(train_check, d.train_size)
    check_pair(train_check, val_check)
    train_ids = subset_image_ids(train_check, d.train_size, d.subset_seed)
    train_set = CocoDetection(train_check, train_ids, with_masks, d.cache_images, train=True)
    val_set = CocoDetection(val_check, val_image_ids(val_check, d.val_size), with_masks, d.cache_images, train=False)
    return train_set, val_set, train_check, val_check
