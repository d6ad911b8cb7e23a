"""Pre-training's images: labelled ImageFolder splits and unlabelled image sets, decoded once or read on demand.

Every image is brought to `image_size` x `image_size` once (shorter side resized, centre square kept). Small sets
(such as the bundled source set of 32x32 images) are decoded once into one uint8 tensor in memory
(`data.cache_images`), which takes data loading almost out of the training time; larger ones are read per batch.
Supervised pre-training augments whole uint8 batches (`augment`); self-supervised pre-training draws lightly's
views per image (engine/selfsup.py).
"""

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from rethink.config import PretrainConfig
from rethink.errors import UserError, reason

# The most objects a COCO file gives the probe set (ObjectCrops): about 60 MiB at 64 px.
MAX_PROBE_OBJECTS = 5000
# data.cache_images=auto decodes into memory when all images together take at most this many bytes.
CACHE_AUTO_BYTES = 4 * 2**30
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def use_cache(setting: str, nbytes: int) -> bool:
    """data.cache_images: yes, no, or auto (decode into memory when the images fit in CACHE_AUTO_BYTES)."""
    return setting == "yes" or (setting == "auto" and nbytes <= CACHE_AUTO_BYTES)


def read_image(path, size: int) -> np.ndarray:
    """One image as (size, size, 3) uint8: shorter side resized to `size`, the centre square kept."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                w, h = im.size
                scale = size / min(w, h)
                im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
                left, top = (im.width - size) // 2, (im.height - size) // 2
                im = im.crop((left, top, left + size, top + size))
            return np.array(im, dtype=np.uint8)  # a writable copy: torch.from_numpy wants one
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable image ({reason(e)})") from None


def decode_images(paths, size: int, desc: str, progress: bool = False) -> torch.Tensor:
    """Decode every image into one (N, 3, size, size) uint8 tensor (about 3 KiB per 32x32 image)."""
    images = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    array = images.numpy()  # shares memory: each image is written in place, channels-first, no second copy
    for i, path in enumerate(tqdm(paths, desc=desc, unit="img", disable=not progress, mininterval=1.0, leave=False)):
        array[i] = read_image(path, size).transpose(2, 0, 1)
    return images


class DecodedImages:
    """Images as uint8 (3, size, size): decoded once into one tensor in memory (`decode_all`), or read on demand."""

    def __init__(self, paths: list, size: int, desc: str):
        self.paths, self.size, self.desc = paths, size, desc
        self.images: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def nbytes(self) -> int:
        return len(self) * 3 * self.size * self.size

    def decode_all(self, progress: bool = False) -> None:
        self.images = decode_images(self.paths, self.size, self.desc, progress)


class ImageSet(DecodedImages, torch.utils.data.Dataset):
    """One ImageFolder split as uint8 (3, size, size) images, decoded once into memory or read on demand.

    As a Dataset (the on-demand path) an item is the sampler's (index, flip) pair and comes back as
    (image, label, flip), so DataLoader workers only decode; the augmentation happens on the whole batch.
    """

    def __init__(self, root: str, size: int, key: str, classes: list[str] | None = None):
        from torchvision.datasets import ImageFolder

        if not Path(root).is_dir():
            raise UserError(f"{key}: folder {root} not found")
        try:
            folder = ImageFolder(root, loader=lambda p: p)  # the loader is never called: we decode ourselves
        except (FileNotFoundError, RuntimeError) as e:
            raise UserError(f"{key}: {root} is not an ImageFolder ({reason(e)})") from None
        if classes is not None and folder.classes != classes:
            extra = sorted(set(folder.classes) ^ set(classes))
            raise UserError(f"{key}: {root} has other class folders than data.train (differ: {', '.join(extra[:5])})")
        super().__init__([p for p, _ in folder.samples], size, f"decode {Path(root).name}")
        self.root = root
        self.classes = folder.classes
        self.labels = torch.tensor([c for _, c in folder.samples], dtype=torch.int64)

    def __getitem__(self, item):
        index, flip = item
        image = torch.from_numpy(read_image(self.paths[index], self.size)).permute(2, 0, 1)
        return image, self.labels[index], flip


class UnlabelledImages(DecodedImages):
    """Training images without labels (self-supervised pre-training), decoded once into memory or read per batch."""

    def __init__(self, paths: list[Path], size: int):
        super().__init__(paths, size, "decode train")

    def batch(self, index: list[int]) -> torch.Tensor:
        if self.images is not None:
            return self.images[torch.tensor(index)]
        return torch.stack([torch.from_numpy(read_image(self.paths[i], self.size)).permute(2, 0, 1) for i in index])


class ObjectCrops:
    """A detection set's objects as a labelled classification set: every non-crowd box of a COCO file, squared,
    widened by `context` on each side and resized to (3, size, size) uint8, labelled with its category.

    The quality signal of a self-supervised pre-training on the target's own images: the kNN accuracy of its
    features on the target's own objects (its val split), which every detection user has labels for.
    """

    def __init__(self, annotations: str, images_dir: str, size: int, key: str, context: float = 0.15,
                 max_objects: int = MAX_PROBE_OBJECTS):
        from rethink.data.validate import check_coco

        if not images_dir:
            raise UserError(f"{key}_images: a COCO file as {key} needs the folder its images are in")
        check = check_coco(Path(images_dir), Path(annotations), role="val", decode_images=False)
        coco = check.coco
        files = {im["id"]: im["file_name"] for im in coco["images"]}
        self.classes = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
        index = {c["id"]: i for i, c in enumerate(sorted(coco["categories"], key=lambda c: c["id"]))}
        # sorted by image: one image open at a time
        boxes = sorted((a for a in coco["annotations"] if not a.get("iscrowd", 0)), key=lambda a: (a["image_id"], a["id"]))
        if len({a["category_id"] for a in boxes}) < 2 or len(boxes) < 4:
            raise UserError(f"{key}: {annotations} needs 4+ boxes of 2+ categories for the probe accuracies")
        if len(boxes) > max_objects:  # a fixed random subset: COCO's 860k boxes would not fit in memory
            keep = np.random.default_rng(0).choice(len(boxes), max_objects, replace=False)
            boxes = [boxes[i] for i in sorted(keep)]
        crops = torch.empty((len(boxes), 3, size, size), dtype=torch.uint8)
        opened = {}
        for i, a in enumerate(boxes):
            path = Path(images_dir) / files[a["image_id"]]
            if path not in opened:
                opened = {path: _open_rgb(path)}
            x, y, w, h = a["bbox"]
            side = max(w, h) * (1 + 2 * context)
            cx, cy = x + w / 2, y + h / 2
            crop = opened[path].crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2),
                                      round(cy + side / 2))).resize((size, size), Image.BILINEAR)
            crops[i] = torch.from_numpy(np.array(crop, dtype=np.uint8)).permute(2, 0, 1)
        self.images = crops
        self.labels = torch.tensor([index[a["category_id"]] for a in boxes])

    def __len__(self) -> int:
        return len(self.labels)

    def decode_all(self, progress: bool = False) -> None:
        """Already in memory: the crops are cut when the set is made."""


def _open_rgb(path: Path):
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable image ({reason(e)})") from None


def labelled_probe(val: str, val_images: str, size: int):
    """The labelled set a self-supervised pre-training's kNN accuracy is measured on (data.val): an ImageFolder,
    or a COCO annotations file whose boxes are cropped (ObjectCrops)."""
    if val.endswith(".json"):
        return ObjectCrops(val, val_images, size, "data.val")
    return ImageSet(val, size, "data.val")


def list_images(cfg: PretrainConfig) -> list[Path]:
    """The training images: every image file under a folder (sorted, nested folders included), or the images a
    COCO file lists (its annotations unused). Errors name the path."""
    d = cfg.data
    train = Path(d.train)
    if train.suffix == ".json":
        if not train.is_file():
            raise UserError(f"data.train: {train} not found")
        try:
            coco = json.loads(train.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"data.train: {train} is not a readable COCO file ({e})") from None
        entries = coco.get("images") if isinstance(coco, dict) else None
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "file_name" in e for e in entries):
            raise UserError(f"data.train: {train} has no `images` list with file_name entries")
        folder = Path(d.train_images)
        if not folder.is_dir():
            raise UserError(f"data.train_images: folder {folder} not found")
        paths = [folder / e["file_name"] for e in entries]  # in the file's order
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise UserError(f"data.train_images: {missing[0]} not found ({len(missing)} of the images {train} lists)")
        where = f"{train} (images in {folder})"
    elif train.is_dir():
        paths = sorted(p for p in train.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        where = str(train)
    else:
        raise UserError(f"data.train: {train} not found")
    if not paths:
        raise UserError(f"data.train: {where} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if len(paths) < cfg.solver.batch_size:
        raise UserError(f"data.train: {where} holds {len(paths)} images, fewer than one batch "
                        f"(solver.batch_size={cfg.solver.batch_size})")
    return paths


def collate_items(items):
    images, labels, flips = zip(*items)
    return torch.stack(images), torch.stack(labels), torch.tensor(flips, dtype=torch.bool)


def augment(images: torch.Tensor, flips: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random crop (from the batch padded by `padding` black pixels) and horizontal flip, on uint8 (N, C, H, W).

    torchvision's RandomCrop(padding=p) + RandomHorizontalFlip per image, done as one gather for the whole batch:
    each output pixel reads padded[row + dy, col + dx] (columns reversed for flipped images): faster than advanced
    indexing with broadcast row/column grids and than a per-image loop (benchmarks/README.md, design measurements).
    """
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    width = w + 2 * padding
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    cols = dx[:, None] + torch.arange(w)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    rows = dy[:, None] + torch.arange(h)
    flat = (rows[:, :, None] * width + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, -1).gather(2, flat).view(n, c, h, w)


def load_splits(cfg: PretrainConfig, progress: bool = False) -> tuple[ImageSet, ImageSet, bool]:
    """Both splits with the same classes; decoded into memory when the cache applies (a broken image fails here,
    before training, instead of in the middle of it)."""
    d = cfg.data
    train_set = ImageSet(d.train, d.image_size, "data.train")
    val_set = ImageSet(d.val, d.image_size, "data.val", classes=train_set.classes)
    if len(train_set.classes) < 2:
        raise UserError(f"data.train: {d.train} has {len(train_set.classes)} class folder; classification needs 2+")
    cached = use_cache(d.cache_images, train_set.nbytes() + val_set.nbytes())
    if cached:
        train_set.decode_all(progress)
        val_set.decode_all(progress)
    return train_set, val_set, cached
