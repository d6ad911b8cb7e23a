"""Dataset validation: a valid COCO set passes with the right counts; each broken input is named precisely."""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from rethink.data import validate
from rethink.data.validate import check_coco, check_train_size
from rethink.errors import UserError

# ---------------------------------------------------------------------------------------------
# a small valid dataset on disk

IMAGES = [
    # id, file_name, width, height
    (1, "a.png", 64, 48),
    (2, "b.png", 80, 60),
    (3, "sub/c.png", 50, 40),  # file names may contain subfolders
    (4, "d.jpg", 32, 32),  # no annotation
    (5, "e.png", 40, 30),  # only a crowd annotation
]


@dataclass
class Dataset:
    root: Path
    images_dir: Path
    ann_path: Path


def _write_image(path: Path, width: int, height: int, seed: int) -> None:
    # Noise, so that the compressed data is long and cutting the file truncates pixel data.
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (as in the crowd annotations of COCO itself): column-major runs, zeros first."""
    flat = mask.flatten(order="F").astype(np.int64)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0] + runs
    return {"size": list(mask.shape), "counts": runs}


def _compressed_counts(mask: np.ndarray) -> str:
    return mask_utils.encode(np.asfortranarray(mask))["counts"].decode("ascii")


def _valid_coco() -> dict:
    mask_b = np.zeros((60, 80), dtype=np.uint8)
    mask_b[10:30, 20:50] = 1
    rle_b = {"size": [60, 80], "counts": _compressed_counts(mask_b)}
    mask_e = np.zeros((30, 40), dtype=np.uint8)
    mask_e[5:25, 0:12] = 1
    return {
        "info": {"description": "test set"},
        "images": [{"id": i, "file_name": f, "width": w, "height": h} for i, f, w, h in IMAGES],
        "categories": [
            {"id": 1, "name": "cat", "supercategory": "animal"},
            {"id": 2, "name": "dog"},
            {"id": 5, "name": "bird"},  # category ids need not be contiguous (COCO's are not)
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [4, 5, 20, 10], "area": 200.0, "iscrowd": 0,
             "segmentation": [[4, 5, 24, 5, 24, 15, 4, 15]]},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [30.5, 10.25, 12.0, 8.5], "area": 80.0,
             "iscrowd": 0, "segmentation": [[30.5, 10.25, 42.5, 10.25, 36.0, 18.75]]},
            {"id": 12, "image_id": 2, "category_id": 5, "bbox": [20, 10, 30, 20], "area": 600, "iscrowd": 0,
             "segmentation": rle_b},
            {"id": 13, "image_id": 5, "category_id": 1, "bbox": [0, 5, 12, 20], "area": 240, "iscrowd": 1,
             "segmentation": _uncompressed_rle(mask_e)},
            {"id": 14, "image_id": 3, "category_id": 2, "bbox": [1, 1, 48, 38], "area": 1800, "iscrowd": 0,
             "segmentation": [[1, 1, 49, 1, 49, 39, 1, 39], [10, 10, 20, 10, 15, 20]]},
        ],
    }


@pytest.fixture
def dataset(tmp_path) -> Dataset:
    root = tmp_path / "data"
    images_dir = root / "images"
    for seed, (_, name, width, height) in enumerate(IMAGES):
        _write_image(images_dir / name, width, height, seed)
    ann_path = root / "annotations.json"
    ann_path.write_text(json.dumps(_valid_coco()))
    return Dataset(root, images_dir, ann_path)


def _check(ds: Dataset, **kwargs):
    return check_coco(ds.images_dir, ds.ann_path, **kwargs)


def _edit(change):
    """A mutation that loads the annotation file, applies `change(coco)` and writes it back."""

    def mutate(ds: Dataset) -> None:
        coco = json.loads(ds.ann_path.read_text())
        change(coco)
        ds.ann_path.write_text(json.dumps(coco))

    return mutate


def _ann(coco: dict, ann_id: int) -> dict:
    return next(a for a in coco["annotations"] if a["id"] == ann_id)


def _img(coco: dict, image_id: int) -> dict:
    return next(i for i in coco["images"] if i["id"] == image_id)


def _set_ann(ann_id: int, **values):
    return _edit(lambda coco: _ann(coco, ann_id).update(values))


def _set_img(image_id: int, **values):
    return _edit(lambda coco: _img(coco, image_id).update(values))


def _tree_hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# the valid dataset


def test_valid_dataset_passes_with_counts(dataset):
    check = _check(dataset)
    assert check.num_images == 5
    assert check.num_annotations == 5
    assert check.num_categories == 3
    assert check.num_crowd_annotations == 1
    assert check.images_without_annotations == 1
    assert check.usable_image_ids == (1, 2, 3)
    assert check.num_usable_images == 3
    assert check.warnings == {"images_without_annotations": 1, "images_with_only_crowd_annotations": 1}
    assert check.images_decoded is True  # 5 images: the default decodes every pixel
    assert check.role == "train"
    assert check.annotations_path == dataset.ann_path
    assert check.images_dir == dataset.images_dir
    # Nothing needed fixing, so the returned dict equals the file's content.
    assert check.coco == _valid_coco()


def test_summary_names_counts_and_warnings(dataset):
    text = _check(dataset, role="val").summary()
    assert text.startswith(f"val set: {dataset.ann_path}")
    assert "5 images (3 usable for training), 5 annotations (1 crowd), 3 categories" in text
    assert "images without annotations (kept for evaluation, skipped in training): 1" in text
    assert "images whose only annotations are crowd regions (skipped in training): 1" in text
    assert len(text.splitlines()) == 3


def test_missing_iscrowd_is_set_to_zero_without_warning(dataset):
    _edit(lambda coco: [a.pop("iscrowd") for a in coco["annotations"] if a["id"] != 13])(dataset)
    check = _check(dataset)
    assert [a["iscrowd"] for a in check.coco["annotations"]] == [0, 0, 0, 1, 0]
    assert "iscrowd" not in " ".join(check.warnings)


def test_box_only_dataset_passes_without_require_masks(dataset):
    _edit(lambda coco: [a.pop("segmentation") for a in coco["annotations"]])(dataset)
    _set_ann(10, segmentation=[])(dataset)  # many exporters write [] for "no mask"
    check = _check(dataset)
    assert check.num_annotations == 5


# ---------------------------------------------------------------------------------------------
# the clip policy and the untouched files


def test_boxes_partly_outside_are_clipped_and_counted(dataset):
    _set_ann(10, bbox=[60, 40, 10, 20])(dataset)  # image 1 is 64x48: overshoots right and bottom
    _set_ann(11, bbox=[-3.5, -2, 10, 10])(dataset)  # starts left of and above the image
    _edit(lambda coco: _ann(coco, 11).pop("area"))(dataset)
    check = _check(dataset)
    anns = {a["id"]: a for a in check.coco["annotations"]}
    assert anns[10]["bbox"] == [60, 40, 4, 8]
    assert anns[11]["bbox"] == [0, 0, 6.5, 8]
    assert anns[10]["area"] == 200.0  # a given area is kept (it is the mask area in COCO)
    assert anns[11]["area"] == 52.0  # a missing one is the clipped box's
    assert check.warnings["bbox_clipped"] == 2
    assert check.warnings["area_missing"] == 1
    assert anns[12]["bbox"] == [20, 10, 30, 20]  # boxes inside are left as they are
    assert "boxes partly outside their image, clipped to it: 2" in check.summary()


def test_box_touching_the_border_is_not_clipped(dataset):
    _set_ann(10, bbox=[0, 0, 64, 48])(dataset)
    check = _check(dataset)
    assert check.coco["annotations"][0]["bbox"] == [0, 0, 64, 48]
    assert "bbox_clipped" not in check.warnings


def test_checking_never_modifies_files(dataset):
    _set_ann(10, bbox=[60, 40, 10, 20])(dataset)  # a box the check clips
    _edit(lambda coco: [a.pop("iscrowd") for a in coco["annotations"]])(dataset)  # and fills
    before = _tree_hashes(dataset.root)
    check = _check(dataset, decode_images=True)
    assert check.warnings["bbox_clipped"] == 1
    assert _tree_hashes(dataset.root) == before


# ---------------------------------------------------------------------------------------------
# broken inputs: each is refused with one line naming the file and the id or key


def _write_text(text):
    return lambda ds: ds.ann_path.write_text(text)


def _remove_key(key):
    return _edit(lambda coco: coco.pop(key))


def _del_ann_key(ann_id, key):
    return _edit(lambda coco: _ann(coco, ann_id).pop(key))


def _del_category_name(ds):
    _edit(lambda coco: coco["categories"][1].pop("name"))(ds)


def _no_images(ds):
    _edit(lambda coco: coco.update(images=[], annotations=[]))(ds)


def _rle_counts(ann_id, change):
    return _edit(lambda coco: _ann(coco, ann_id)["segmentation"].update(counts=change(_ann(coco, ann_id))))


def _remove_image_file(ds):
    (ds.images_dir / "b.png").unlink()


def _dotdot_file_name(ds):
    # The file exists, so the refusal is for leaving the folder, not for a missing file.
    _write_image(ds.root / "a.png", 64, 48, seed=0)
    _set_img(1, file_name="../a.png")(ds)


def _absolute_file_name(ds):
    _set_img(1, file_name=str((ds.images_dir / "a.png").resolve()))(ds)


def _symlink_outside(ds):
    _write_image(ds.root / "outside.png", 64, 48, seed=0)
    os.symlink(ds.root / "outside.png", ds.images_dir / "link.png")
    _set_img(1, file_name="link.png")(ds)


def _not_an_image(ds):
    (ds.images_dir / "a.png").write_text("this is not a picture\n")


def _truncate(name):
    def mutate(ds):
        path = ds.images_dir / name
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    return mutate


def _remove_images_dir(ds):
    for path in sorted(ds.images_dir.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    ds.images_dir.rmdir()


BROKEN = [
    # (case id, mutation, check_coco kwargs, substrings the message must contain)
    ("file-missing", lambda ds: ds.ann_path.unlink(), {}, ["annotations.json: annotation file not found"]),
    ("not-json", _write_text('{"images": [\n  {"id": 1,}\n]}'), {},
     ["annotations.json: not valid JSON", "line 2 column 12"]),
    ("empty-file", _write_text(""), {}, ["annotations.json: not valid JSON", "line 1 column 1"]),
    ("top-level-list", _write_text("[]"), {}, ["annotations.json: the top level must be a JSON object", "a list"]),
    ("no-images-key", _remove_key("images"), {}, ["annotations.json: missing top-level key 'images'"]),
    ("no-annotations-key", _remove_key("annotations"), {}, ["annotations.json: missing top-level key 'annotations'"]),
    ("no-categories-key", _remove_key("categories"), {}, ["annotations.json: missing top-level key 'categories'"]),
    ("annotations-not-list", _edit(lambda c: c.update(annotations={"id": 1})), {},
     ["annotations.json: 'annotations' must be a list, got an object"]),
    ("image-not-object", _edit(lambda c: c["images"].append("f.png")), {},
     ["annotations.json: train images[5]: must be an object, got a string"]),
    ("image-id-string", _edit(lambda c: c["images"][0].update(id="1")), {},
     ["annotations.json: train images[0]: 'id' must be an integer, got '1'"]),
    ("image-id-missing", _edit(lambda c: c["images"][2].pop("id")), {}, ["annotations.json: train images[2]: missing 'id'"]),
    ("duplicate-image-id", _set_img(2, id=1), {},
     ["annotations.json: train image id 1: duplicate image id (images[0] and images[1])"]),
    ("width-zero", _set_img(2, width=0), {}, ["annotations.json: train image id 2: 'width' must be a positive integer", "got 0"]),
    ("height-float", _set_img(2, height=60.0), {}, ["annotations.json: train image id 2: 'height' must be a positive integer", "got 60.0"]),
    ("file-name-not-string", _set_img(3, file_name=3), {}, ["annotations.json: train image id 3: 'file_name' must be a non-empty string"]),
    ("category-name-missing", _del_category_name, {}, ["annotations.json: train category id 2: missing 'name'"]),
    ("category-name-empty", _edit(lambda c: c["categories"][0].update(name=" ")), {},
     ["annotations.json: train category id 1: 'name' must be a non-empty string"]),
    ("duplicate-category-id", _edit(lambda c: c["categories"][2].update(id=1)), {},
     ["annotations.json: train category id 1: duplicate category id (categories[0] and categories[2])"]),
    ("no-categories", _edit(lambda c: c.update(categories=[])), {}, ["annotations.json: 'categories' is empty"]),
    ("no-images", _no_images, {}, ["annotations.json: 'images' is empty: the train set has no images"]),
    ("no-images-val-role", _no_images, {"role": "val"}, ["annotations.json: 'images' is empty: the val set has no images"]),
    ("duplicate-annotation-id", _set_ann(11, id=10), {},
     ["annotations.json: train annotation id 10: duplicate annotation id (annotations[0] and annotations[1])"]),
    ("annotation-id-missing", _del_ann_key(14, "id"), {}, ["annotations.json: train annotations[4]: missing 'id'"]),
    ("annotation-id-bool", _set_ann(14, id=True), {}, ["annotations.json: train annotations[4]: 'id' must be an integer, got True"]),
    ("unknown-image-id", _set_ann(11, image_id=99), {},
     ["annotations.json: train annotation id 11: image_id 99 is not the id of any image"]),
    ("unknown-category-id", _set_ann(14, category_id=7), {},
     ["annotations.json: train annotation id 14: category_id 7 is not the id of any category"]),
    ("bbox-missing", _del_ann_key(12, "bbox"), {}, ["annotations.json: train annotation id 12: missing 'bbox'"]),
    ("bbox-three-numbers", _set_ann(10, bbox=[1, 2, 3]), {},
     ["annotations.json: train annotation id 10: 'bbox' must be a list of 4 numbers", "got [1, 2, 3]"]),
    ("bbox-strings", _set_ann(10, bbox=["1", "2", "3", "4"]), {},
     ["annotations.json: train annotation id 10: 'bbox' must be a list of 4 numbers"]),
    ("bbox-zero-width", _set_ann(10, bbox=[4, 5, 0, 10]), {},
     ["annotations.json: train annotation id 10: bbox has non-positive width (w=0)"]),
    ("bbox-negative-height", _set_ann(10, bbox=[4, 5, 3, -2.5]), {},
     ["annotations.json: train annotation id 10: bbox has non-positive height (h=-2.5)"]),
    ("bbox-nan", _set_ann(11, bbox=[float("nan"), 1, 2, 3]), {},
     ["annotations.json: train annotation id 11: bbox has a non-finite coordinate", "nan"]),
    ("bbox-infinite", _set_ann(11, bbox=[1, 1, float("inf"), 3]), {},
     ["annotations.json: train annotation id 11: bbox has a non-finite coordinate", "inf"]),
    ("bbox-entirely-outside", _set_ann(10, bbox=[100, 100, 5, 5]), {},
     ["annotations.json: train annotation id 10: bbox [100, 100, 5, 5] lies entirely outside its image", "64x48"]),
    ("bbox-no-area-after-clip", _set_ann(10, bbox=[64, 0, 5, 5]), {},
     ["annotations.json: train annotation id 10: bbox [64, 0, 5, 5] lies entirely outside its image"]),
    ("iscrowd-two", _set_ann(12, iscrowd=2), {}, ["annotations.json: train annotation id 12: 'iscrowd' must be 0 or 1, got 2"]),
    ("area-negative", _set_ann(12, area=-1), {},
     ["annotations.json: train annotation id 12: 'area' must be a non-negative number, got -1"]),
    ("polygon-odd-length", _set_ann(10, segmentation=[[1, 2, 3, 4, 5, 6, 7]]), {},
     ["annotations.json: train annotation id 10: segmentation[0] must hold an even number (>= 6)", "got 7"]),
    ("polygon-too-short", _set_ann(14, segmentation=[[1, 1, 9, 9, 1, 9], [1, 2, 3, 4]]), {},
     ["annotations.json: train annotation id 14: segmentation[1] must hold an even number (>= 6)", "got 4"]),
    ("polygon-flat", _set_ann(10, segmentation=[4, 5, 24, 5, 24, 15]), {},
     ["annotations.json: train annotation id 10: 'segmentation' must be a list of polygons", "flat list"]),
    ("polygon-nan", _set_ann(10, segmentation=[[4, 5, 24, float("nan"), 24, 15]]), {},
     ["annotations.json: train annotation id 10: segmentation[0] has a coordinate that is not a finite number"]),
    ("segmentation-string", _set_ann(10, segmentation="mask.png"), {},
     ["annotations.json: train annotation id 10: 'segmentation' must be a list of polygons or an RLE object"]),
    ("rle-size-mismatch", _edit(lambda c: _ann(c, 12)["segmentation"].update(size=[80, 60])), {},
     ["annotations.json: train annotation id 12: RLE segmentation 'size' is [80, 60]", "[height, width] = [60, 80]"]),
    ("rle-counts-missing", _edit(lambda c: _ann(c, 12)["segmentation"].pop("counts")), {},
     ["annotations.json: train annotation id 12: RLE segmentation is missing 'counts'"]),
    ("rle-counts-garbage", _rle_counts(12, lambda a: "not RLE at all"), {},
     ["annotations.json: train annotation id 12: RLE segmentation 'counts' is not a valid compressed RLE string"]),
    ("rle-string-wrong-area", _rle_counts(12, lambda a: _compressed_counts(np.ones((10, 10), np.uint8))), {},
     ["annotations.json: train annotation id 12: RLE segmentation runs cover 100 pixels", "60x80 = 4800"]),
    ("rle-list-too-long", _rle_counts(13, lambda a: a["segmentation"]["counts"] + [5]), {},
     ["annotations.json: train annotation id 13: RLE segmentation runs cover 1205 pixels", "30x40 = 1200"]),
    ("rle-negative-run", _rle_counts(13, lambda a: [1300, -100]), {},
     ["annotations.json: train annotation id 13: RLE segmentation 'counts' has a negative run length"]),
    ("masks-required", _del_ann_key(14, "segmentation"), {"require_masks": True},
     ["annotations.json: train annotation id 14: has no 'segmentation', but this run trains masks"]),
    ("images-folder-missing", _remove_images_dir, {}, ["images: images folder not found", "annotations.json"]),
    ("image-file-missing", _remove_image_file, {},
     ["images/b.png: train image id 2: image file not found", "annotations.json"]),
    ("file-name-dotdot", _dotdot_file_name, {},
     ["images/../a.png: train image id 1: file_name '../a.png' leaves the images folder"]),
    ("file-name-absolute", _absolute_file_name, {}, ["a.png: train image id 1: file_name", "is an absolute path"]),
    ("symlink-outside", _symlink_outside, {},
     ["images/link.png: train image id 1: file_name 'link.png' is a link to", "outside.png, outside the images folder"]),
    ("not-an-image", _not_an_image, {}, ["images/a.png: train image id 1: not an image file"]),
    ("truncated-png", _truncate("b.png"), {"decode_images": True}, ["images/b.png: train image id 2: image cannot be decoded"]),
    ("truncated-jpeg", _truncate("d.jpg"), {"decode_images": True}, ["images/d.jpg: train image id 4: image cannot be decoded"]),
    ("size-mismatch", _set_img(1, width=65), {},
     ["images/a.png: train image id 1: image is 64x48 pixels, but the annotations declare width x height = 65x48"]),
    ("size-swapped", _set_img(1, width=48, height=64), {}, ["images/a.png: train image id 1", "width and height swapped"]),
]


@pytest.mark.parametrize("mutate, kwargs, expected", [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN])
def test_broken_input_is_refused_with_one_precise_line(dataset, mutate, kwargs, expected):
    mutate(dataset)
    with pytest.raises(UserError) as info:
        _check(dataset, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for part in expected:
        assert part in message


def test_broken_corpus_is_large_and_distinct():
    assert len(BROKEN) >= 22
    assert len({case[0] for case in BROKEN}) == len(BROKEN)


def test_newline_in_a_file_name_stays_on_one_line(dataset):
    _set_img(1, file_name="a\nb.png")(dataset)
    with pytest.raises(UserError) as info:
        _check(dataset)
    assert "\n" not in str(info.value)
    assert "a\\nb.png" in str(info.value)


def test_truncated_image_passes_a_header_only_check(dataset):
    # Documented trade-off: reading headers finds missing, foreign and wrongly sized files, not truncation.
    _truncate("b.png")(dataset)
    check = _check(dataset, decode_images=False)
    assert check.images_decoded is False
    assert check.num_images == 5


def test_default_decodes_small_sets_and_reads_headers_of_large_ones(dataset, monkeypatch):
    _truncate("b.png")(dataset)
    with pytest.raises(UserError, match="b.png: train image id 2: image cannot be decoded"):
        _check(dataset)
    monkeypatch.setattr(validate, "FULL_DECODE_MAX_IMAGES", 4)  # the set has 5 images
    assert _check(dataset).images_decoded is False


def test_symlinked_images_folder_is_allowed(dataset, tmp_path):
    # A link to a shared copy of the images is a normal layout; only files leaving it are refused.
    link = tmp_path / "linked_images"
    os.symlink(dataset.images_dir, link)
    check = check_coco(link, dataset.ann_path)
    assert check.num_images == 5


# ---------------------------------------------------------------------------------------------
# compressed RLE strings


def test_rle_string_decoder_matches_pycocotools():
    rng = np.random.default_rng(0)
    for height, width, density in [(7, 5, 0.5), (31, 17, 0.1), (64, 48, 0.9), (3, 3, 0.0), (4, 4, 1.0)]:
        mask = np.asfortranarray((rng.random((height, width)) < density).astype(np.uint8))
        rle = mask_utils.encode(mask)
        counts = validate._decode_rle_string(rle["counts"].decode("ascii"))
        assert sum(counts) == height * width
        # Rebuild the mask from the runs (column-major, zeros first) and compare pixel by pixel.
        values = np.repeat(np.arange(len(counts)) % 2, counts).astype(np.uint8)
        assert np.array_equal(values.reshape((height, width), order="F"), mask)
        assert sum(counts[1::2]) == int(mask_utils.area(rle))


@pytest.mark.parametrize("text", ["0P", "\x7f", " "])
def test_rle_string_decoder_refuses_malformed_strings(text):
    # "0P" ends inside a run ('P' = 48 + 32 carries the continuation bit); the others are outside the alphabet.
    assert validate._decode_rle_string(text) is None


# ---------------------------------------------------------------------------------------------
# train_size


def test_train_size_full_is_the_usable_images(dataset):
    check = _check(dataset)
    assert check_train_size(check, "full") == 3


def test_train_size_number_within_range(dataset):
    check = _check(dataset)
    assert check_train_size(check, 1) == 1
    assert check_train_size(check, 3) == 3


def test_train_size_larger_than_available_names_both_numbers(dataset):
    check = _check(dataset)
    with pytest.raises(UserError) as info:
        check_train_size(check, 4)
    message = str(info.value)
    assert message.startswith(str(dataset.ann_path))
    assert "train_size 4 is larger than the 3 usable training images" in message


@pytest.mark.parametrize("bad", [0, -5])
def test_train_size_non_positive(dataset, bad):
    check = _check(dataset)
    with pytest.raises(UserError, match=f"train_size must be a positive number of images, got {bad}"):
        check_train_size(check, bad)


@pytest.mark.parametrize("bad", ["half", "100", True, 2.5, None])
def test_train_size_wrong_type(dataset, bad):
    check = _check(dataset)
    with pytest.raises(UserError) as info:
        check_train_size(check, bad)
    assert f'train_size must be "full" or a positive number of images, got {bad!r}' in str(info.value)


def test_train_size_on_a_set_without_usable_images(dataset):
    # Only the crowd annotation is left: images exist, but none can be trained on.
    _edit(lambda coco: coco.update(annotations=[_ann(coco, 13)]))(dataset)
    check = _check(dataset)
    assert check.num_usable_images == 0
    with pytest.raises(UserError) as info:
        check_train_size(check, "full")
    assert "annotations.json: the train set has no usable training images: none of its 5 images" in str(info.value)


def test_first_bad_image_in_file_order_is_reported(dataset):
    # Images are checked in parallel; the error must still be that of the first bad image in the file.
    _remove_image_file(dataset)  # image id 2
    _not_an_image(dataset)  # image id 1
    with pytest.raises(UserError, match=r"images/a\.png: train image id 1: not an image file"):
        _check(dataset)


# ---------------------------------------------------------------------------------------------
# through the command line: one line on stderr, exit code 2, no traceback


def _write_config(ds: Dataset, path: Path) -> Path:
    split = f"{{images: {ds.images_dir}, annotations: {ds.ann_path}}}"
    path.write_text(f"data:\n  train: {split}\n  val: {split}\n")
    return path


def test_check_data_command_reports_a_valid_dataset(dataset, tmp_path, capsys):
    from rethink.cli import main

    assert main(["check-data", str(_write_config(dataset, tmp_path / "run.yaml"))]) == 0
    out = capsys.readouterr().out
    assert "[train] train set:" in out and "[val] val set:" in out
    assert "[train] data.train_size=full: 3 training images" in out


def _unchanged(ds: Dataset) -> None:
    pass


@pytest.mark.parametrize("mutate, overrides, expected", [
    (_set_ann(10, bbox=[4, 5, 0, 10]), [], "annotations.json: train annotation id 10: bbox has non-positive width (w=0)"),
    (_remove_image_file, [], "images/b.png: train image id 2: image file not found"),
    (_unchanged, ["--set", "data.train_size=4"], "train_size 4 is larger than the 3 usable training images"),
], ids=["bad-box", "missing-image", "train-size-too-large"])
def test_check_data_command_fails_with_one_line(dataset, tmp_path, capsys, mutate, overrides, expected):
    from rethink.cli import main

    mutate(dataset)
    assert main(["check-data", str(_write_config(dataset, tmp_path / "run.yaml")), *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rethink: error: ")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert expected in err
