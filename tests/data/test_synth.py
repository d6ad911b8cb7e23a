import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from rethink.data import synth
from rethink.errors import UserError

TINY = synth.SCALES["tiny"]


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    manifest = synth.write_benchmark(out, seed=0, scale="tiny", progress=False, workers=1)
    return out, manifest


def test_same_seed_is_byte_identical_whatever_the_worker_count(bench, tmp_path):
    out, manifest = bench
    again = synth.write_benchmark(tmp_path / "b", seed=0, scale="tiny", progress=False, workers=2)
    assert again == manifest
    reference = file_hashes(out)
    assert file_hashes(tmp_path / "b") == reference
    # 20 classes x (12 + 4) source images, 40 + 16 target images, 2 annotation files, the manifest.
    assert len(reference) == 20 * 16 + 40 + 16 + 2 + 1


def test_another_seed_differs(bench, tmp_path):
    out, manifest = bench
    other = synth.write_benchmark(tmp_path / "c", seed=1, scale="tiny", progress=False, workers=1)
    a, b = file_hashes(out), file_hashes(tmp_path / "c")
    assert a.keys() == b.keys()
    images = [k for k in a if k.endswith(".png")]
    # Every single image changes with the seed, not just some.
    assert all(a[k] != b[k] for k in images)
    assert other["source"]["sha256"] != manifest["source"]["sha256"]
    assert other["target"]["sha256"] != manifest["target"]["sha256"]


def test_images_are_distinct_and_each_regenerates_alone(bench):
    out, _ = bench
    hashes = file_hashes(out)
    pngs = [h for k, h in hashes.items() if k.endswith(".png")]
    assert len(set(pngs)) == len(pngs)
    # An image depends only on (seed, split, class, index): drawing it alone gives the file's pixels.
    on_disk = np.asarray(Image.open(out / "source/val/star/00003.png").convert("RGB"))
    star = synth.SOURCE_CLASSES.index("star")
    assert np.array_equal(on_disk, synth.source_image(0, 1, star, 3, TINY))
    on_disk = np.asarray(Image.open(out / "target/train/images/000007.png").convert("RGB"))
    pixels, objects = synth.target_image(0, 2, 7, TINY)
    assert np.array_equal(on_disk, pixels)
    coco = json.loads((out / "target/train/annotations.json").read_text())
    assert len([a for a in coco["annotations"] if a["image_id"] == 8]) == len(objects)


def test_source_loads_as_imagefolder(bench):
    from torchvision.datasets import ImageFolder

    out, manifest = bench
    classes = list(synth.SOURCE_CLASSES[:20])
    train = ImageFolder(str(out / manifest["source"]["train"]))
    val = ImageFolder(str(out / manifest["source"]["val"]))
    assert train.classes == sorted(classes) == val.classes
    assert len(train) == 240 and len(val) == 80
    assert manifest["source"]["classes"] == classes
    assert manifest["source"]["num_images"] == {"train": 240, "val": 80}
    assert (manifest["counts"]["source_classes"], manifest["counts"]["source_train"]) == (20, 240)
    counts = np.bincount([label for _, label in train.samples], minlength=20)
    assert counts.tolist() == [12] * 20
    img, label = train[0]
    assert img.size == (32, 32) and img.mode == "RGB"


def test_source_statistics_match_the_images(bench):
    out, manifest = bench
    pixels = np.stack([np.asarray(Image.open(p)) for p in sorted((out / "source/train").rglob("*.png"))])
    pixels = pixels.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(manifest["source"]["mean_rgb"], pixels.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(manifest["source"]["std_rgb"], pixels.std(axis=0), atol=1e-6)
    # Random colours: the means are mid-grey-ish and the spread is wide, not a degenerate set.
    assert all(0.3 < m < 0.7 for m in manifest["source"]["mean_rgb"])
    assert all(s > 0.15 for s in manifest["source"]["std_rgb"])


@pytest.mark.parametrize("split, n_images", [("train", 40), ("val", 16)])
def test_target_annotations_load_in_both_coco_apis(bench, split, n_images):
    from faster_coco_eval import COCO as FasterCOCO
    from pycocotools.coco import COCO

    out, manifest = bench
    path = out / manifest["target"][split]["annotations"]
    for api in (COCO, FasterCOCO):
        coco = api(str(path))
        assert len(coco.getImgIds()) == n_images
        assert sorted(coco.getCatIds()) == [1, 2, 3, 4, 5]
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(synth.TARGET_CATEGORIES)
        assert len(coco.getAnnIds()) == manifest["target"]["num_annotations"][split]
    assert manifest["target"]["num_images"][split] == n_images
    assert manifest["counts"][f"target_{split}"] == n_images
    assert manifest["counts"][f"target_{split}_annotations"] == manifest["target"]["num_annotations"][split]


@pytest.mark.parametrize("split", ["train", "val"])
def test_target_masks_boxes_and_ids(bench, split):
    out, _ = bench
    coco = json.loads((out / "target" / split / "annotations.json").read_text())
    size = TINY.target_size
    image_ids = [im["id"] for im in coco["images"]]
    ann_ids = [a["id"] for a in coco["annotations"]]
    assert len(set(image_ids)) == len(image_ids) and min(image_ids) == 1
    assert len(set(ann_ids)) == len(ann_ids) and min(ann_ids) == 1

    for im in coco["images"]:
        with Image.open(out / "target" / split / "images" / im["file_name"]) as f:
            assert f.size == (im["width"], im["height"]) == (size, size)
    assert len(list((out / "target" / split / "images").glob("*.png"))) == len(coco["images"])

    per_image: dict[int, list[np.ndarray]] = {}
    for a in coco["annotations"]:
        assert a["iscrowd"] == 0 and 1 <= a["category_id"] <= len(synth.TARGET_CATEGORIES)
        assert a["image_id"] in image_ids
        m = mask_utils.decode(a["segmentation"]).astype(bool)
        assert m.shape == (size, size)
        ys, xs = np.nonzero(m)
        tight = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert a["bbox"] == [int(v) for v in tight]
        assert mask_utils.toBbox(a["segmentation"]).tolist() == a["bbox"]
        assert a["area"] == int(m.sum()) == int(mask_utils.area(a["segmentation"]))
        x, y, w, h = a["bbox"]
        assert x >= 0 and y >= 0 and x + w <= size and y + h <= size
        assert a["area"] >= TINY.min_visible_pixels
        per_image.setdefault(a["image_id"], []).append(m)

    # Masks are what is visible: objects of one image never claim the same pixel.
    for masks in per_image.values():
        assert np.sum(masks, axis=0).max() == 1
    # Several objects per image, within the scale's range, and every category occurs.
    counts = [len(per_image.get(i, [])) for i in image_ids]
    assert max(counts) <= TINY.objects_per_image[1] and np.mean(counts) >= 1.5
    if split == "train":
        assert {a["category_id"] for a in coco["annotations"]} == {1, 2, 3, 4, 5}


@pytest.mark.parametrize("crowded", [False, True])
def test_occlusion_cuts_masks_and_drops_hidden_objects(crowded):
    # The demo scale draws 1-2 objects on 64 px: occlusion is the exception there; test the mechanism at 2-3 objects.
    scale = dataclasses.replace(synth.SCALES["demo"], objects_per_image=(2, 3))
    if crowded:  # the mechanism at a harder setting: more objects and unannotated occluders
        scale = dataclasses.replace(scale, objects_per_image=(2, 6), occluders_per_image=(0, 2))
    cut = total = 0
    for i in range(20):
        _, objects = synth.target_image(0, 2, i, scale)
        for k, (_, visible, full) in enumerate(objects):
            area = int(visible.sum())
            # Never more than drawn, never hidden below the thresholds (such objects are not drawn).
            assert area <= full
            assert area >= scale.min_visible_fraction * full and area >= scale.min_visible_pixels
            cut += area < full
            for _, other, _ in objects[k + 1 :]:
                assert not (visible & other).any()
        total += len(objects)
    # Occlusion is common, not a corner case; and most attempted objects survive it.
    assert cut >= (10 if crowded else 5)
    assert total >= (2.5 if crowded else 1.5) * 20


def test_second_call_is_idempotent(bench):
    out, manifest = bench
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert synth.write_benchmark(out, seed=0, scale="tiny", progress=False) == manifest
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert json.loads((out / "benchmark.json").read_text()) == manifest


def test_killed_generation_is_redone(bench, tmp_path):
    out, _ = bench
    target = tmp_path / "k"
    shutil.copytree(out, target)
    # What a kill mid-way leaves: no manifest, the in-progress marker, partial and stale files.
    (target / "benchmark.json").unlink()
    (target / synth._IN_PROGRESS).write_text("{}")
    (target / "source/train/circle/00000.png").write_bytes(b"truncated")
    (target / "source/train/stale").mkdir()
    (target / "source/train/stale/00000.png").write_bytes(b"from another scale")
    synth.write_benchmark(target, seed=0, scale="tiny", progress=False, workers=1)
    assert file_hashes(target) == file_hashes(out)


def test_refuses_to_overwrite(bench, tmp_path):
    out, _ = bench
    with pytest.raises(UserError, match="benchmark.json: holds a benchmark with seed=0 scale=tiny"):
        synth.write_benchmark(out, seed=5, scale="tiny", progress=False)
    foreign = tmp_path / "foreign"
    (foreign / "source").mkdir(parents=True)
    (foreign / "source" / "mine.txt").write_text("user data")
    with pytest.raises(UserError, match="source: exists but"):
        synth.write_benchmark(foreign, seed=0, scale="tiny", progress=False)
    assert (foreign / "source" / "mine.txt").read_text() == "user data"


def test_bad_arguments(tmp_path):
    with pytest.raises(UserError, match="scale: unknown benchmark scale 'huge'; choose one of tiny, demo"):
        synth.write_benchmark(tmp_path, scale="huge")
    with pytest.raises(UserError, match="seed: must be a non-negative integer"):
        synth.write_benchmark(tmp_path, seed=-1, scale="tiny")
    assert not any(tmp_path.iterdir())


def test_scales():
    demo = synth.SCALES["demo"]
    assert (demo.source_train_images, demo.source_val_images) == (13000, 1300)
    assert (demo.target_train, demo.target_val, demo.target_size) == (2000, 300, 64)
    assert demo.num_classes == 13 and set(demo.source_classes) <= set(synth.SOURCE_CLASSES)


def test_demo_source_holds_none_of_the_target_objects_parts():
    # The target objects are built of discs, rings, squares, triangles, bars, crosses and stripes; the demo's source
    # shares the target's low-level statistics, not those parts (as ImageNet does not hold COCO's objects).
    parts = {"circle", "circle_outline", "square", "square_outline", "triangle", "triangle_outline", "concentric",
             "cross", "bars", "ellipse", "semicircle"}
    assert not parts & set(synth.SCALES["demo"].source_classes)
    # a source image of each class is drawn from the scale's own class list
    demo = synth.SCALES["demo"]
    for c in range(demo.num_classes):
        image = synth.source_image(0, 0, c, 0, demo)
        assert image.shape == (demo.source_size, demo.source_size, 3) and image.std() > 5
    assert (TINY.source_train_images, TINY.source_val_images, TINY.target_size) == (240, 80, 64)
    with pytest.raises(Exception):
        demo.target_train = 3  # frozen: the lead reads sizes, nobody edits them in place


def test_unlabelled_images_leave_the_benchmark_untouched_and_repeat_none_of_it(bench, tmp_path):
    out, manifest = bench
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    before = file_hashes(copy)
    record = synth.write_unlabelled(copy, 30, progress=False, workers=1)
    after = file_hashes(copy)
    assert {k: v for k, v in after.items() if not k.startswith("target/unlabelled/")} == before
    images = sorted((copy / "target" / "unlabelled" / "images").glob("*.png"))
    assert len(images) == 30 and record["count"] == 30 and record["scale"] == "tiny"
    assert Image.open(images[0]).size == (TINY.target_size, TINY.target_size)
    labelled = {v for k, v in before.items() if k.endswith(".png")}
    assert not labelled & {hashlib.sha256(p.read_bytes()).hexdigest() for p in images}
    # a second call reuses them; drawn elsewhere with other workers: the same bytes; another count: redrawn
    assert synth.write_unlabelled(copy, 30, progress=False) == record and file_hashes(copy) == after
    shutil.copytree(out, tmp_path / "c")
    assert synth.write_unlabelled(tmp_path / "c", 30, progress=False, workers=2) == record
    assert file_hashes(tmp_path / "c") == after
    assert synth.write_unlabelled(copy, 12, progress=False)["count"] == 12
    assert len(list((copy / "target" / "unlabelled" / "images").glob("*.png"))) == 12
    with pytest.raises(UserError, match="no benchmark.json"):
        synth.write_unlabelled(tmp_path / "empty", 5, progress=False)
