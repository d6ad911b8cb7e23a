"""`rethink init-study`: a study file for one's own COCO set, scaled to its size and the hardware; --quick runs."""

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from conftest import make_coco
from rethink.cli import main
from rethink.errors import UserError
from rethink.study.design import describe, design, find_splits
from rethink.study.plan import load_plan


@pytest.fixture(scope="module")
def own_set(tmp_path_factory) -> Path:
    """A generated COCO set of 300 images of 128 px (240 train, 60 val), as a user's own folder."""
    root = tmp_path_factory.mktemp("own") / "coco"
    make_coco(root, n_train=240, n_val=60, size=128, seed=3)
    return root


def tiny_preset_weights(path: Path) -> Path:
    """A backbone file that fits the tiny preset (tiny/faster_rcnn_gn.yaml: widths 16-128, 8 GN groups)."""
    from rethink.models import backbone as bb

    torch.manual_seed(5)
    body, _ = bb.build_resnet("tiny", "gn", (16, 32, 64, 128), (1, 1, 1, 1), 8)
    save_file({k: v.contiguous() for k, v in body.state_dict().items()}, str(path))
    return path


def test_the_matrix_is_scaled_to_the_set_and_the_hardware(own_set):
    ds = describe(*find_splits(own_set, None, None, None))
    assert (ds.train_images, ds.val_images, ds.categories, ds.has_masks) == (240, 60, 2, True)
    assert ds.median_short == 128 and ds.median_ratio == 1.0
    cpu = design(ds, "cpu", None, quick=False)
    # the paper's 1x in epochs: 90k x 16 / 118,287 = 12.17 epochs; 240 images at batch 2
    assert cpu.iters_1x == round(90_000 * 16 / 118_287 * 240 / 2) == 1461
    assert (cpu.base, cpu.detector, cpu.size, cpu.max_size) == ("tiny/faster_rcnn_gn.yaml", "faster_rcnn", 128, 128)
    assert cpu.anchors == (16, 32, 64, 128, 256)  # the tiny preset's 8-128 at 64 px, scaled to 128 px
    assert cpu.schedules == ("1x", "2x", "4x") and cpu.subsets == (24,) and cpu.pretrained == "pretrain"
    assert cpu.warmup_iters == 100 and cpu.eval_period == 365
    gpu = design(ds, "cuda", None, quick=False)
    assert (gpu.base, gpu.detector, gpu.batch_size) == ("paper/mask_rcnn_R50_FPN_gn.yaml", "mask_rcnn", 16)
    assert gpu.size == 224  # 128 px x 800/480, to a multiple of 32
    assert gpu.iters_1x == round(90_000 * 16 / 118_287 * 240 / 16) == 183
    assert gpu.schedules == ("1x", "2x", "3x", "6x") and gpu.subsets == (24, 72) and gpu.pretrained == "imagenet"
    assert gpu.warmup_iters == 18  # at most a tenth of 1x: below the first LR drop


def test_other_coco_layouts_are_found(tmp_path, own_set):
    import shutil

    coco17 = tmp_path / "coco17"
    (coco17 / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        shutil.copytree(own_set / split / "images", coco17 / f"{split}2017")
        shutil.copy(own_set / split / "annotations.json", coco17 / "annotations" / f"instances_{split}2017.json")
    train, val = find_splits(coco17, None, None, None)
    assert train.images.endswith("train2017") and val.annotations.endswith("instances_val2017.json")
    roboflow = tmp_path / "roboflow"
    for split, name in (("train", "train"), ("val", "valid")):
        shutil.copytree(own_set / split / "images", roboflow / name)
        shutil.copy(own_set / split / "annotations.json", roboflow / name / "_annotations.coco.json")
    train, val = find_splits(roboflow, None, None, None)
    assert train.images.endswith("train") and val.images.endswith("valid")
    with pytest.raises(UserError, match="needs its validation set too: pass --val"):
        find_splits(own_set / "train" / "annotations.json", None, None, None)
    train, val = find_splits(own_set / "train" / "annotations.json", str(own_set / "val" / "annotations.json"),
                             None, None)
    assert train.images.endswith("train/images") and val.images.endswith("val/images")
    with pytest.raises(UserError, match="no COCO layout found"):
        find_splits(tmp_path, None, None, None)


def test_init_study_quick_writes_a_study_plan_accepts(own_set, tmp_path, capsys):
    """The quick study; tests/test_docs.py runs it end to end (own-data.md's worked example)."""
    weights = tiny_preset_weights(tmp_path / "mine.safetensors")
    study = tmp_path / "mine.yaml"
    code = main(["init-study", str(own_set), "--out", str(study), "--device", "cpu", "--quick",
                 "--pretrained", str(weights)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "study written for 240 training images at 128 px on cpu" in printed and "cost: about" in printed
    text = yaml.safe_load(study.read_text())
    assert text["base"] == "tiny/faster_rcnn_gn.yaml" and text["set"]["solver.iters_1x"] == 12
    assert text["set"]["data.min_size_train"] == [128] and text["set"]["data.val_size"] == 16
    plan = load_plan(study)  # what `rethink plan` reads
    assert {r.init_label for r in plan.runs} == {"random", "mine"}
    assert {(r.schedule, str(r.train_size)) for r in plan.runs} == {("1x", "full"), ("2x", "full"), ("2x", "24")}
    assert [r.fork_iter for r in plan.runs if r.trunk] == [8, 8]  # 1x forks from 2x at its first LR drop
