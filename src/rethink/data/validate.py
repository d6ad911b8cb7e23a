"""Validation of a COCO-format detection dataset, run before any training.

A bad input is named precisely before hours are spent on it. Every problem either stops the run
with a `UserError` whose one-line message names the file and the offending id or key, or is fixed
and counted under a warning kind; warnings are summarized, never printed per image.

The file on disk is never modified: fixes are applied to the returned `DatasetCheck.coco` only.

Policies
- Box partly outside its image: clipped to [0, width] x [0, height] and counted as `bbox_clipped`.
  Annotation tools let a drag overshoot the border or round outward by a pixel; the object is still
  there. torchvision's references and detectron2 clip boxes to the image when they load them, so
  clipping here changes nothing for training, and evaluation scores against the same clipped box.
- Box entirely outside its image, or with no area once clipped: refused. There is nothing to learn
  from it, and the usual cause (the annotation belongs to another image, or boxes were written as
  [x1, y1, x2, y2] instead of [x, y, width, height]) is a bug that a silent drop would hide.
  So no annotation is ever dropped: `coco` holds every annotation of the file.
- Crowd annotations (iscrowd=1) are kept and counted. Training ignores them, as torchvision's
  references and detectron2 do (a crowd region is not one object to regress a box to), and COCO
  evaluation needs them: detections on a crowd region are ignored rather than counted as false
  positives. A missing `iscrowd` is set to 0, the COCO default, so later code can read it directly.
- Images without any annotation: counted (`images_without_annotations`), not an error. They stay in
  `coco` for evaluation; training skips them, as it skips images whose only annotations are crowd
  regions (detectron2's rule), so the usable training images are those with at least one non-crowd
  annotation: `usable_image_ids`.
- A missing `area` is set to the (clipped) box area and counted: COCO evaluation reads `area` to
  sort objects into small/medium/large and fails without it.
"""

from __future__ import annotations

import json
import math
import os
import warnings as pywarnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from rethink.errors import UserError

# Decoding every pixel catches truncated and corrupt files, but costs about 5-10 ms per
# COCO-sized JPEG: a few seconds for a small dataset, minutes for COCO's 118k training images.
# Above this many images the default is to read headers only (existence, format, size).
FULL_DECODE_MAX_IMAGES = 20000

# What each warning kind means, for the summary. Kinds not listed here are shown by their key.
WARNING_TEXT = {
    "images_without_annotations": "images without annotations (kept for evaluation, skipped in training)",
    "images_with_only_crowd_annotations": "images whose only annotations are crowd regions (skipped in training)",
    "bbox_clipped": "boxes partly outside their image, clipped to it",
    "area_missing": "annotations without 'area', set to the box area",
    "duplicate_file_names": "images sharing their file_name with an earlier image",
    "duplicate_category_names": "categories sharing their name with an earlier category",
}


@dataclass(frozen=True)
class DatasetCheck:
    """The outcome of `check_coco`: the validated dataset and what was found in it."""

    annotations_path: Path
    images_dir: Path
    coco: dict  # the dataset dict with the documented fixes applied (clipped boxes, filled iscrowd/area)
    num_images: int
    num_annotations: int
    num_categories: int
    images_without_annotations: int
    warnings: dict[str, int]  # warning kind -> count
    role: str = "train"
    num_crowd_annotations: int = 0
    # Images with at least one non-crowd annotation, in file order: the images training uses.
    usable_image_ids: tuple[int, ...] = ()
    images_decoded: bool = False  # True: every image fully decoded; False: headers only

    @property
    def num_usable_images(self) -> int:
        return len(self.usable_image_ids)

    def summary(self) -> str:
        image_check = "fully decoded" if self.images_decoded else "headers read (not fully decoded)"
        lines = [
            f"{self.role} set: {self.annotations_path} (images in {self.images_dir})",
            f"  {self.num_images} images ({self.num_usable_images} usable for training), "
            f"{self.num_annotations} annotations ({self.num_crowd_annotations} crowd), "
            f"{self.num_categories} categories; image files: {image_check}",
        ]
        if self.warnings:
            parts = [f"{WARNING_TEXT.get(kind, kind)}: {count}" for kind, count in sorted(self.warnings.items())]
            lines.append("  warnings: " + "; ".join(parts))
        else:
            lines.append("  warnings: none")
        return "\n".join(lines)


def _load_coco_json(annotations: Path) -> dict:
    """The annotation file as JSON, with the three top-level lists a COCO detection file has."""
    src = str(annotations)
    coco = _load_json(annotations)
    if not isinstance(coco, dict):
        _fail(f"{src}: the top level must be a JSON object with keys 'images', 'annotations', 'categories'; "
              f"got {_json_type(coco)}")
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            _fail(f"{src}: missing top-level key '{key}' (a COCO file needs 'images', 'annotations', 'categories')")
        if not isinstance(coco[key], list):
            _fail(f"{src}: '{key}' must be a list, got {_json_type(coco[key])}")
    return coco


def check_coco(
    images_dir: Path,
    annotations: Path,
    *,
    role: str = "train",
    require_masks: bool = False,
    decode_images: bool | None = None,
) -> DatasetCheck:
    """Validate a COCO detection dataset; raise `UserError` on the first problem that cannot be fixed.

    `decode_images`: True decodes every image fully (finds truncated files), False reads headers
    only, None decides by size (full decode up to FULL_DECODE_MAX_IMAGES images).
    """
    images_dir = Path(images_dir)
    annotations = Path(annotations)
    src = str(annotations)
    warnings: Counter = Counter()

    coco = _load_coco_json(annotations)

    # Everything inside the JSON is checked before any image file is opened: those checks are fast,
    # and a structural error is better reported before a long scan of the image folder.
    category_ids = _check_categories(coco["categories"], src, role, warnings)
    images_by_id = _check_images(coco["images"], src, role, warnings)
    annotated, usable, num_crowd = _check_annotations(
        coco["annotations"], src, role, images_by_id, category_ids, require_masks, warnings
    )

    if decode_images is None:
        decode_images = len(images_by_id) <= FULL_DECODE_MAX_IMAGES
    _check_image_files(images_dir, coco["images"], src, role, decode_images)

    without = sum(1 for image_id in images_by_id if image_id not in annotated)
    if without:
        warnings["images_without_annotations"] = without
    only_crowd = sum(1 for image_id in annotated if image_id not in usable)
    if only_crowd:
        warnings["images_with_only_crowd_annotations"] = only_crowd

    return DatasetCheck(
        annotations_path=annotations,
        images_dir=images_dir,
        coco=coco,
        num_images=len(images_by_id),
        num_annotations=len(coco["annotations"]),
        num_categories=len(category_ids),
        images_without_annotations=without,
        warnings=dict(warnings),
        role=role,
        num_crowd_annotations=num_crowd,
        usable_image_ids=tuple(image["id"] for image in coco["images"] if image["id"] in usable),
        images_decoded=decode_images,
    )


def check_pair(train: "DatasetCheck", val: "DatasetCheck") -> None:
    """A training and a validation set that can be compared: the same categories (ids and names), and a val set
    with something to find (without annotations every AP is undefined, and a run would train for nothing)."""
    train_cats = {c["id"]: c.get("name") for c in train.coco["categories"]}
    val_cats = {c["id"]: c.get("name") for c in val.coco["categories"]}
    if set(train_cats) != set(val_cats):
        only = sorted(set(train_cats) ^ set(val_cats))
        raise UserError(f"{val.annotations_path}: categories differ from the training set's "
                        f"({train.annotations_path}): category id {only[0]} is in only one of them")
    for cat_id, name in sorted(train_cats.items()):
        if val_cats[cat_id] != name:
            raise UserError(f"{val.annotations_path}: category id {cat_id} is '{val_cats[cat_id]}' here and '{name}' "
                            f"in {train.annotations_path}; the two sets must use the same ids for the same categories")
    if val.num_annotations == val.num_crowd_annotations:
        raise UserError(f"{val.annotations_path}: the validation set has no (non-crowd) annotations, so there is "
                        "nothing to evaluate against; use a labelled validation set")


def check_train_size(check: DatasetCheck, train_size) -> int:
    """Number of training images a run uses: all usable ones for "full", else `train_size`.

    Usable images have at least one non-crowd annotation; training skips the others.
    """
    src = check.annotations_path
    if isinstance(train_size, bool) or not (train_size == "full" or isinstance(train_size, int)):
        _fail(f"{src}: train_size must be \"full\" or a positive number of images, got {train_size!r}")
    if train_size != "full" and train_size <= 0:
        _fail(f"{src}: train_size must be a positive number of images, got {train_size}")
    available = check.num_usable_images
    if available == 0:
        _fail(f"{src}: the {check.role} set has no usable training images: none of its {check.num_images} "
              "images has a non-crowd annotation")
    if train_size == "full":
        return available
    if train_size > available:
        _fail(f"{src}: train_size {train_size} is larger than the {available} usable training images of the "
              f"{check.role} set (images with at least one non-crowd annotation)")
    return train_size


# ---------------------------------------------------------------------------------------------
# helpers


def _fail(message: str):
    # The CLI prints the message as one line; a newline inside a file name or a value must not break it.
    raise UserError(message.replace("\r", "\\r").replace("\n", "\\n"))


def _short(value, limit: int = 60) -> str:
    """repr of a value, cut so that a huge polygon or string cannot flood the message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


_NUMBER_TYPES = {int, float}  # exact types: JSON true/false load as bool, which is not a coordinate


def _is_int(value) -> bool:
    # JSON true/false load as bool, a subclass of int: an id of `true` is a bug, not the id 1.
    return type(value) is int


def _all_finite_numbers(values: list) -> bool:
    """True if every value is an int or a finite float; fast enough for millions of polygon coordinates."""
    if not set(map(type, values)) <= _NUMBER_TYPES:
        return False
    try:
        # One pass in C: a NaN or an infinity anywhere makes the sum non-finite.
        return math.isfinite(sum(values))
    except OverflowError:
        return False  # an integer too large for a float is no pixel coordinate either


def _is_finite_number(value) -> bool:
    if type(value) is int:
        return True  # also huge ints, on which math.isfinite would overflow
    return type(value) is float and math.isfinite(value)


def _missing_data_hint(path: Path) -> str:
    """What to do about a missing annotation file: the bundled configs point at the benchmark, which is generated
    on demand; any other config at the user's own files."""
    parts = path.parts
    if "target" in parts and any("benchmark" in part for part in parts):
        root = Path(*parts[:parts.index("target")])
        return (f"the bundled benchmark is not generated yet: run `rethink data synth --out {root}`, or point "
                "data.train/data.val at your own COCO files (see docs/own-data.md)")
    return "set data.train.annotations / data.val.annotations to your COCO JSON files (--set KEY=PATH)"


def _load_json(path: Path):
    src = str(path)
    if not path.exists():
        _fail(f"{src}: annotation file not found; {_missing_data_hint(path)}")
    if not path.is_file():
        _fail(f"{src}: is not a file (expected a COCO annotation .json file)")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        _fail(f"{src}: cannot be read: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        _fail(f"{src}: is not UTF-8 text (invalid byte at offset {exc.start}); is it really a JSON file?")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"{src}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")


def _label(kind: str, role: str, entry, index: int) -> str:
    """How an entry is named in messages: by its id when it has a valid one, else by its position."""
    if isinstance(entry, dict) and _is_int(entry.get("id")):
        return f"{role} {kind} id {entry['id']}"
    return f"{role} {kind}s[{index}]"


def _check_entry(entry, index: int, where: str, keys: tuple, kind: str, first_index: dict) -> None:
    """An entry of a COCO list: an object with `keys`, an integer id not seen before (first_index: id -> position,
    updated here)."""
    if not isinstance(entry, dict):
        _fail(f"{where}: must be an object, got {_json_type(entry)}")
    for key in keys:
        if key not in entry:
            _fail(f"{where}: missing '{key}'")
    if not _is_int(entry["id"]):
        _fail(f"{where}: 'id' must be an integer, got {_short(entry['id'])}")
    if entry["id"] in first_index:
        plural = "categories" if kind == "category" else kind + "s"
        _fail(f"{where}: duplicate {kind} id ({plural}[{first_index[entry['id']]}] and {plural}[{index}])")
    first_index[entry["id"]] = index


def _check_categories(categories: list, src: str, role: str, warnings: Counter) -> set[int]:
    if not categories:
        _fail(f"{src}: 'categories' is empty: a detection dataset needs at least one category")
    first_index: dict[int, int] = {}
    names: set[str] = set()
    for index, cat in enumerate(categories):
        where = f"{src}: {_label('category', role, cat, index)}"
        _check_entry(cat, index, where, ("id",), "category", first_index)
        if "name" not in cat:
            _fail(f"{where}: missing 'name'")
        if not isinstance(cat["name"], str) or not cat["name"].strip():
            _fail(f"{where}: 'name' must be a non-empty string, got {_short(cat['name'])}")
        if cat["name"] in names:
            warnings["duplicate_category_names"] += 1
        names.add(cat["name"])
    return set(first_index)


def _check_images(images: list, src: str, role: str, warnings: Counter) -> dict[int, dict]:
    if not images:
        _fail(f"{src}: 'images' is empty: the {role} set has no images")
    by_id: dict[int, dict] = {}
    first_index: dict[int, int] = {}
    file_names: set[str] = set()
    for index, image in enumerate(images):
        where = f"{src}: {_label('image', role, image, index)}"
        _check_entry(image, index, where, ("id", "file_name", "width", "height"), "image", first_index)
        if not isinstance(image["file_name"], str) or not image["file_name"]:
            _fail(f"{where}: 'file_name' must be a non-empty string, got {_short(image['file_name'])}")
        for key in ("width", "height"):
            value = image[key]
            if not _is_int(value) or value <= 0:
                _fail(f"{where}: '{key}' must be a positive integer (pixels), got {_short(value)}")
        if image["file_name"] in file_names:
            warnings["duplicate_file_names"] += 1
        file_names.add(image["file_name"])
        by_id[image["id"]] = image
    return by_id


def _check_annotations(
    annotations: list,
    src: str,
    role: str,
    images_by_id: dict[int, dict],
    category_ids: set[int],
    require_masks: bool,
    warnings: Counter,
) -> tuple[set[int], set[int], int]:
    """Check every annotation, clip boxes in place; return (annotated ids, usable ids, crowd count)."""
    seen: dict[int, int] = {}
    annotated: set[int] = set()
    usable: set[int] = set()
    num_crowd = 0
    for index, ann in enumerate(annotations):
        where = f"{src}: {_label('annotation', role, ann, index)}"
        image = _check_annotation_ids(ann, index, where, seen, images_by_id, category_ids)
        image_id = ann["image_id"]
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1) or not isinstance(crowd, int):  # bool true/false is accepted as 1/0
            _fail(f"{where}: 'iscrowd' must be 0 or 1, got {_short(crowd)}")
        ann["iscrowd"] = int(crowd)

        _check_bbox(ann, image, where, warnings)

        if "area" in ann:
            if not _is_finite_number(ann["area"]) or ann["area"] < 0:
                _fail(f"{where}: 'area' must be a non-negative number, got {_short(ann['area'])}")
        else:
            ann["area"] = ann["bbox"][2] * ann["bbox"][3]
            warnings["area_missing"] += 1

        segmentation = ann.get("segmentation")
        has_mask = segmentation is not None and segmentation != []
        if has_mask:
            _check_segmentation(segmentation, image, where)
        elif require_masks:
            _fail(f"{where}: has no 'segmentation', but this run trains masks (every annotation needs a "
                  "polygon or RLE mask; train a box-only model or add the masks)")

        annotated.add(image_id)
        if ann["iscrowd"]:
            num_crowd += 1
        else:
            usable.add(image_id)
    return annotated, usable, num_crowd


def _check_annotation_ids(ann, index: int, where: str, seen: dict, images_by_id: dict, category_ids: set) -> dict:
    """An annotation's own id (unique), its image and its category (both existing); returns its image."""
    _check_entry(ann, index, where, ("id", "image_id", "category_id", "bbox"), "annotation", seen)
    image_id = ann["image_id"]
    if not _is_int(image_id):
        _fail(f"{where}: 'image_id' must be an integer, got {_short(image_id)}")
    image = images_by_id.get(image_id)
    if image is None:
        _fail(f"{where}: image_id {image_id} is not the id of any image in 'images'")
    if not _is_int(ann["category_id"]):
        _fail(f"{where}: 'category_id' must be an integer, got {_short(ann['category_id'])}")
    if ann["category_id"] not in category_ids:
        _fail(f"{where}: category_id {ann['category_id']} is not the id of any category in 'categories'")
    return image


def _check_bbox(ann: dict, image: dict, where: str, warnings: Counter) -> None:
    bbox = ann["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(type(v) in (int, float) for v in bbox):
        _fail(f"{where}: 'bbox' must be a list of 4 numbers [x, y, width, height], got {_short(bbox)}")
    if not all(_is_finite_number(v) for v in bbox):
        _fail(f"{where}: bbox has a non-finite coordinate (NaN or infinity): {_short(bbox)}")
    x, y, w, h = bbox
    if w <= 0:
        _fail(f"{where}: bbox has non-positive width (w={w})")
    if h <= 0:
        _fail(f"{where}: bbox has non-positive height (h={h})")
    width, height = image["width"], image["height"]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, width), min(y + h, height)
    if x1 <= x0 or y1 <= y0:
        _fail(f"{where}: bbox {_short(bbox)} lies entirely outside its image (image id {image['id']} is "
              f"{width}x{height}; boxes are [x, y, width, height] in pixels)")
    if (x0, y0, x1, y1) != (x, y, x + w, y + h):
        ann["bbox"] = [x0, y0, x1 - x0, y1 - y0]
        warnings["bbox_clipped"] += 1


def _check_segmentation(segmentation, image: dict, where: str) -> None:
    if isinstance(segmentation, list):
        if set(map(type, segmentation)) <= _NUMBER_TYPES:
            _fail(f"{where}: 'segmentation' must be a list of polygons [[x1, y1, x2, y2, ...], ...], "
                  "got a flat list of numbers (wrap the polygon in a list)")
        for j, polygon in enumerate(segmentation):
            if not isinstance(polygon, list):
                _fail(f"{where}: segmentation[{j}] must be a polygon (a list of numbers), got {_json_type(polygon)}")
            if len(polygon) < 6 or len(polygon) % 2:
                _fail(f"{where}: segmentation[{j}] must hold an even number (>= 6) of coordinates "
                      f"x1, y1, x2, y2, ... (at least 3 points), got {len(polygon)}")
            if not _all_finite_numbers(polygon):
                _fail(f"{where}: segmentation[{j}] has a coordinate that is not a finite number")
        return
    if isinstance(segmentation, dict):
        _check_rle(segmentation, image, where)
        return
    _fail(f"{where}: 'segmentation' must be a list of polygons or an RLE object "
          f"{{'size': [height, width], 'counts': ...}}, got {_json_type(segmentation)}")


def _check_rle(rle: dict, image: dict, where: str) -> None:
    height, width = image["height"], image["width"]
    size = rle.get("size")
    if "size" not in rle or "counts" not in rle:
        missing = "size" if "size" not in rle else "counts"
        _fail(f"{where}: RLE segmentation is missing '{missing}' (expected {{'size': [height, width], 'counts': ...}})")
    if size != [height, width] or not all(_is_int(v) for v in size):
        _fail(f"{where}: RLE segmentation 'size' is {_short(size)}, but image id {image['id']} is "
              f"[height, width] = [{height}, {width}]")
    counts = rle["counts"]
    if isinstance(counts, str):
        decoded = _decode_rle_string(counts)
        if decoded is None:
            _fail(f"{where}: RLE segmentation 'counts' is not a valid compressed RLE string")
    elif isinstance(counts, list):
        if not all(_is_int(v) for v in counts):
            _fail(f"{where}: RLE segmentation 'counts' must be a list of integers or a compressed string")
        decoded = counts
    else:
        _fail(f"{where}: RLE segmentation 'counts' must be a list of integers or a compressed string, "
              f"got {_json_type(counts)}")
    # pycocotools writes runs without bounds checks: runs that do not cover the image exactly would
    # corrupt memory or give a wrong mask later, so they are refused here.
    if any(v < 0 for v in decoded):
        _fail(f"{where}: RLE segmentation 'counts' has a negative run length")
    if sum(decoded) != height * width:
        _fail(f"{where}: RLE segmentation runs cover {sum(decoded)} pixels, but the image has "
              f"{height}x{width} = {height * width}")


def _decode_rle_string(text: str) -> list[int] | None:
    """Run lengths of pycocotools' compressed RLE string (rleFrString in maskApi.c); None if malformed.

    Each run is a little-endian sequence of 6-bit digits stored as chr(48 + digit): 5 value bits and
    a continuation bit; the last digit's bit 4 is the sign. From the third run on, runs are stored
    as the difference to the run two places earlier.
    """
    counts: list[int] = []
    pos, n = 0, len(text)
    while pos < n:
        value, shift, more = 0, 0, True
        while more:
            if pos >= n:
                return None  # the string ends inside a run
            digit = ord(text[pos]) - 48
            if not 0 <= digit < 64:
                return None
            value |= (digit & 0x1F) << shift
            more = digit & 0x20
            pos += 1
            shift += 5
            if not more and digit & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def _check_image_files(images_dir: Path, images: list, src: str, role: str, decode: bool) -> None:
    if not images_dir.exists():
        _fail(f"{images_dir}: images folder not found (images of {src})")
    if not images_dir.is_dir():
        _fail(f"{images_dir}: is not a folder (expected the images of {src})")
    # The folder itself may be a symlink (e.g. to a shared copy of COCO); what must stay inside it
    # is each image once every link is resolved, so a crafted file_name cannot read elsewhere.
    root = os.path.realpath(images_dir)

    def check_one(image: dict) -> None:
        _check_image_file(images_dir, root, image, src, role, decode)

    # Threads overlap file reads (slow on network file systems) and decoding (PIL releases the GIL
    # while decoding). map() yields in file order, so the error reported is always that of the
    # first bad image in the file, whatever order the threads finish in.
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    with pywarnings.catch_warnings():
        # Very large images (aerial, pathology) make PIL warn once per file; the size is checked
        # against the declared one anyway, and the output stays one summary, not a line per image.
        pywarnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            for _ in pool.map(check_one, images):
                pass
        finally:
            # On the first error, do not wait for the rest of the folder to be scanned.
            pool.shutdown(wait=True, cancel_futures=True)


def _check_image_file(images_dir: Path, root: str, image: dict, src: str, role: str, decode: bool) -> None:
    name = image["file_name"]
    path = os.path.join(images_dir, name)
    where = f"{path}: {role} image id {image['id']}"
    if os.path.isabs(name):
        _fail(f"{where}: file_name {_short(name)} is an absolute path; file names are relative to the "
              f"images folder {images_dir}")
    if not _inside(os.path.normpath(os.path.join(root, name)), root):
        _fail(f"{where}: file_name {_short(name)} leaves the images folder {images_dir}")
    if not os.path.lexists(path):
        _fail(f"{where}: image file not found (file_name {_short(name)} in {src})")
    real = os.path.realpath(path)
    if not _inside(real, root):
        _fail(f"{where}: file_name {_short(name)} is a link to {real}, outside the images folder {images_dir}")
    if not os.path.isfile(real):
        _fail(f"{where}: is not a file (file_name {_short(name)} in {src})")
    size = _read_image(path, decode, where)
    declared = (image["width"], image["height"])
    if size != declared:
        hint = (" (width and height swapped: check the EXIF orientation or the annotation tool)"
                if size == declared[::-1] else "")
        _fail(f"{where}: image is {size[0]}x{size[1]} pixels, but the annotations declare "
              f"width x height = {declared[0]}x{declared[1]}{hint}")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _read_image(path: str, decode: bool, where: str) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            size = im.size
            if decode:
                im.load()  # decodes every pixel: a truncated or corrupt file fails here
    except Image.UnidentifiedImageError:
        _fail(f"{where}: not an image file that can be read (unknown or corrupt format)")
    except Exception as exc:  # PIL's decoders raise many exception types for corrupt data
        reason = str(exc) or type(exc).__name__
        _fail(f"{where}: image cannot be {'decoded' if decode else 'read'}: {reason}")
    return size
