"""The paper presets encode the recipe of ../shared/PAPER.md (Detectron, Mask R-CNN, FPN)."""

import pytest

from rethink import schedule
from rethink.config import load_config, total_iters, drop_iters
from rethink.configs import bundled_dir

PRESETS = sorted((bundled_dir() / "paper").glob("mask_rcnn_*.yaml"))


def test_all_four_presets_exist():
    names = {p.stem for p in PRESETS}
    assert names == {f"mask_rcnn_{b}_FPN_{n}" for b in ("R50", "R101") for n in ("gn", "syncbn")}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_matches_the_paper_recipe(path):
    cfg = load_config(path)
    m, d, s = cfg.model, cfg.data, cfg.solver
    assert m.detector == "mask_rcnn"
    assert m.backbone == ("resnet50" if "R50" in path.stem else "resnet101")
    assert m.norm == ("gn" if path.stem.endswith("gn") else "syncbn")
    assert m.gn_groups == 32
    assert m.freeze_at == 0  # no frozen stages in either arm
    assert (m.box_head_num_conv, m.box_head_fc_dim) == (4, 1024)  # 4conv1fc
    assert m.mask_head_num_conv == 4
    assert s.base_lr == 0.02 and s.batch_size == 16 and schedule.scaled_lr(s.base_lr, s.batch_size) == 0.02
    assert s.iters_1x == 90_000
    assert (s.momentum, s.weight_decay, s.weight_decay_norm) == (0.9, 1e-4, 0.0)
    assert (s.warmup_iters, s.warmup_factor) == (1000, 0.001)  # detectron2's warm-up
    assert d.min_size_train == (800,) and d.min_size_test == 800 and d.hflip_prob == 0.5  # flip only
    assert cfg.init == "random"
    # 2x: 180k iterations, drops at the last 60k and 20k
    assert total_iters(cfg) == 180_000 and drop_iters(cfg) == (120_000, 160_000)
