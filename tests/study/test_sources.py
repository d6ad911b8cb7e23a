"""A study with several pre-trained sources: a self-supervised step on the target's own training images."""

import pytest
import yaml

from conftest import tiny_config_dict, write_config
from rethink.errors import UserError
from rethink.fileio import read_json
from rethink.study.plan import load_plan
from rethink.pipeline import run_pretrain_steps

SSL = {
    "method": "moco_v2",
    "model": {"backbone": "tiny", "norm": "gn", "gn_groups": 8, "tiny_widths": [8, 16, 16, 32]},
    "data": {"train": "set/by/the/study", "image_size": 64},
    "solver": {"iters": 4, "batch_size": 8, "base_lr": 1.0, "warmup_iters": 1},
    "ssl": {"memory_bank_size": 16, "proj_hidden_dim": 16, "proj_dim": 8},
    "eval_period": 0, "log_period": 2, "checkpoint_period": 4, "threads": 1, "deterministic": True,
}


def write_study(tmp_path, coco_data, step: dict):
    write_config(tmp_path / "base.yaml", tiny_config_dict(coco_data))
    write_config(tmp_path / "ssl.yaml", SSL)
    study = {"name": "sources", "base": "base.yaml", "pretrain": {"moco_target": step},
             "matrix": {"init": ["random", "moco_target"], "solver.schedule": ["1x"], "seed": [0]}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_a_step_pretrains_on_the_targets_train_split_in_place(coco_data, tmp_path):
    path = write_study(tmp_path, coco_data, {"config": "ssl.yaml", "train_on": "target", "probe_on": "target",
                                             "set": {"label": "MoCo v2 on the target's images"}})
    study = load_plan(path, pretrain_dir=tmp_path / "out" / "pretrain")
    assert {r.init_label for r in study.runs} == {"random", "moco_target"}
    run_pretrain_steps(study, tmp_path / "out", progress=False)
    record = read_json(tmp_path / "out" / "pretrain" / "moco_target" / "pretrain.json")
    assert record["label"] == "MoCo v2 on the target's images" and record["method"] == "moco_v2"
    assert record["train_images"] == 24  # the COCO file's images, read where they are
    assert record["config"]["data"]["train"] == str(coco_data / "train" / "annotations.json")
    assert record["config"]["data"]["train_images"] == str(coco_data / "train" / "images")
    # probed on the target's own training objects: 2 classes of boxes, cropped from the training images
    assert record["config"]["data"]["val"] == str(coco_data / "train" / "annotations.json")
    assert record["config"]["data"]["val_images"] == str(coco_data / "train" / "images")
    assert 0 <= record["probe_top1_init"] <= 100 and 0 <= record["probe_top1"] <= 100
    pretrained = next(r for r in study.runs if r.init_label == "moco_target")
    assert pretrained.config.init == str(tmp_path / "out" / "pretrain" / "moco_target" / "backbone.safetensors")


@pytest.mark.parametrize("step, message", [
    ({"config": "ssl.yaml", "train_on": 3}, "pretrain.moco_target.train_on: expected `target` or an image folder"),
    ({"config": "ssl.yaml", "trian_on": "target"}, "pretrain.moco_target: unknown key trian_on"),
    ({"train_on": "target"}, "pretrain.moco_target: a mapping needs `config`"),
    ({"config": "ssl.yaml", "probe_on": "val"}, "pretrain.moco_target.probe_on: expected `target`"),
])
def test_a_bad_step_names_its_key(coco_data, tmp_path, step, message):
    with pytest.raises(UserError, match=message):
        load_plan(write_study(tmp_path, coco_data, step))


def test_the_data_check_reads_where_the_step_trains(coco_data, tmp_path):
    """The step's config names a folder that does not exist; `train_on: target` replaces it, and the check
    before any run looks at what the step will read."""
    from rethink.pipeline import check_pretrain_data

    study = load_plan(write_study(tmp_path, coco_data, {"config": "ssl.yaml", "train_on": "target"}))
    check_pretrain_data(study, tmp_path / "out")
    bad = load_plan(write_study(tmp_path, coco_data, {"config": "ssl.yaml", "train_on": str(tmp_path / "nowhere")}))
    with pytest.raises(UserError, match="nowhere not found"):
        check_pretrain_data(bad, tmp_path / "out")
