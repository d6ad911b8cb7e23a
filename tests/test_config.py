import dataclasses
from pathlib import Path

import pytest
import yaml

import rethink
from conftest import tiny_config_dict
from rethink.config import RunConfig, config_from_dict, dump_yaml, load_config, to_dict
from rethink.configs import bundled_dir, bundled_names, find_config
from rethink.config import load_pretrain_config
from rethink.study.plan import load_plan
from rethink.errors import UserError


def test_defaults_are_the_paper_recipe():
    cfg = RunConfig()
    assert cfg.model.norm == "gn" and cfg.model.freeze_at == 0 and cfg.model.gn_groups == 32
    assert cfg.solver.base_lr == 0.02 and cfg.solver.batch_size == 16 and cfg.solver.iters_1x == 90_000
    assert cfg.solver.momentum == 0.9 and cfg.solver.weight_decay == 1e-4 and cfg.solver.weight_decay_norm == 0.0
    assert cfg.init == "random"


def test_overrides_and_roundtrip(tmp_path):
    cfg = config_from_dict(tiny_config_dict(tmp_path), ["solver.schedule=2x", "init=/w.safetensors", "seed=3"])
    assert cfg.solver.schedule == "2x" and cfg.init == "/w.safetensors" and cfg.seed == 3
    again = config_from_dict(yaml.safe_load(dump_yaml(cfg)))
    assert again == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1


@pytest.mark.parametrize("override,message", [
    ("model.nrom=gn", "model.nrom: unknown key"),
    ("model.norm=layernorm", "model.norm: 'layernorm'"),
    ("solver.base_lr=-0.1", "solver.base_lr"),
    ("solver.base_lr=fast", "solver.base_lr: expected a number"),
    ("solver.schedule=long", "solver.schedule: 'long'"),
    ("solver.warmup_iters=100", "solver.warmup_iters"),
    ("model.backbone=vgg16", "model.backbone: 'vgg16'"),
    ("data.train_size=0", "data.train_size"),
    ("data.train_size=some", "data.train_size"),
    ("model.anchor_sizes=[8,16]", "model.anchor_sizes"),
    ("model.roi_sampling_ratio=-1", "model.roi_sampling_ratio"),
    ("eval_period=-1", "eval_period"),
    ("seed=1.5", "seed: expected an integer"),
    ("deterministic=maybe", "deterministic: expected true or false"),
    ("solver=3", "solver: expected a mapping"),
])
def test_bad_values_name_the_key(tmp_path, override, message):
    with pytest.raises(UserError) as e:
        config_from_dict(tiny_config_dict(tmp_path), [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model: [unclosed\n")
    with pytest.raises(UserError, match="bad.yaml: not valid YAML"):
        load_config(p)
    p.write_text("!!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_every_shipped_config_loads():
    names = bundled_names()
    assert {"tiny/faster_rcnn_gn.yaml", "tiny/pretrain.yaml", "studies/demo.yaml", "studies/demo_quick.yaml",
            "paper/mask_rcnn_R50_FPN_gn.yaml"} <= set(names)
    for name in names:
        if name.startswith("studies/"):
            continue
        if name.split("/")[-1].startswith("pretrain"):  # pre-training configs: their own kind
            from rethink.config import load_pretrain_config

            assert load_pretrain_config(find_config(name)).model.norm == "gn"
            continue
        cfg = load_config(find_config(name))
        assert to_dict(cfg)["model"]["norm"] in ("gn", "syncbn")


def test_bundled_configs_are_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = find_config("tiny/faster_rcnn_gn.yaml")
    assert found == bundled_dir() / "tiny" / "faster_rcnn_gn.yaml" and found.is_file()
    # the bundled folder is the package's own, not the checkout's root
    assert found.parent.parent == Path(rethink.__file__).parent / "configs"
    for name in bundled_names():
        if name.startswith("studies/"):
            study = load_plan(find_config(name))
            assert study.runs
        elif name.endswith("pretrain.yaml"):
            assert load_pretrain_config(find_config(name)).solver.iters > 0
    # a file of the same name on disk wins over the bundled one
    (tmp_path / "tiny").mkdir()
    own = tmp_path / "tiny" / "faster_rcnn_gn.yaml"
    own.write_text(yaml.safe_dump(tiny_config_dict(tmp_path)))
    assert find_config("tiny/faster_rcnn_gn.yaml") == Path("tiny/faster_rcnn_gn.yaml")
    with pytest.raises(UserError, match=r"tiny/nope.yaml: config file not found.*tiny/faster_rcnn_gn.yaml"):
        find_config("tiny/nope.yaml")
    with pytest.raises(UserError, match="not a file"):
        find_config("tiny")


def test_a_resume_may_change_what_cannot_change_the_result(tmp_path):
    """threads, workers, log period, device and checkpointing do not block a resume; every other key does,
    and all of them are named with both values."""
    from rethink.config import check_run_dir

    cfg = config_from_dict(tiny_config_dict(tmp_path))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(dump_yaml(cfg))
    free = ["threads=2", "data.num_workers=2", "log_period=7", "device=cpu", "checkpoint_period=3",
            "keep_checkpoints=5", "data.cache_images=no"]
    check_run_dir(tmp_path / "run", config_from_dict(tiny_config_dict(tmp_path), free))
    changed = ["seed=1", "solver.base_lr=0.1", "model.fpn_channels=8", "data.max_size=96", "eval_period=2"]
    with pytest.raises(UserError) as info:
        check_run_dir(tmp_path / "run", config_from_dict(tiny_config_dict(tmp_path), changed + free))
    message = str(info.value)
    for key in ("seed: 0 there, 1 now", "solver.base_lr: 0.16 there, 0.1 now", "model.fpn_channels: 16 there, 8 now",
                "data.max_size: 64 there, 96 now", "eval_period: 4 there, 2 now"):
        assert key in message, message
    assert "threads" not in message and "log_period" not in message


def test_a_schedule_written_as_a_number_says_how_to_write_it(tmp_path):
    with pytest.raises(UserError, match=r"solver.schedule: 2.5 is not a schedule; .* 2.5x"):
        config_from_dict(tiny_config_dict(tmp_path), ["solver.schedule=2.5"])
    with pytest.raises(UserError, match=r"solver.schedule: 3 is not a schedule; .* 3x"):
        config_from_dict(tiny_config_dict(tmp_path), ["solver.schedule=3"])


def test_imagenet_init_of_the_tiny_backbone_is_refused_in_the_config(tmp_path):
    with pytest.raises(UserError, match="init: imagenet has no weights for the `tiny` backbone"):
        config_from_dict(tiny_config_dict(tmp_path), ["init=imagenet"])
