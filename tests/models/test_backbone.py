import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from rethink.config import DataConfig, ModelConfig
from rethink.errors import UserError
from rethink.models import backbone as bb
from rethink.models.detector import backbone_body, build_detector, init_from_source

TINY = dict(backbone="tiny", tiny_widths=(8, 16, 16, 32), fpn_channels=16, box_head_conv_dim=16,
            box_head_num_conv=4, box_head_fc_dim=32, mask_head_conv_dim=16, mask_head_num_conv=4)
DATA = DataConfig(min_size_train=(64,), max_size=64, min_size_test=64)


def test_gn_group_rule():
    assert bb.gn_groups(256) == 32 and bb.gn_groups(64) == 32 and bb.gn_groups(2048) == 32
    assert bb.gn_groups(16) == 8 and bb.gn_groups(8) == 4 and bb.gn_groups(48) == 24
    assert bb.gn_groups(3) == 1


@pytest.mark.parametrize("norm,expected", [("gn", {"GroupNorm"}), ("bn", {"BatchNorm2d"}),
                                           ("frozen_bn", {"FrozenBatchNorm2d"})])
def test_norm_everywhere(norm, expected):
    """Stem, blocks, shortcuts, FPN, box head and mask head all use the chosen norm."""
    model = build_detector(ModelConfig(detector="mask_rcnn", norm=norm, **TINY), DATA, 3)
    assert bb.norm_layer_types(model) == expected
    for part in (model.backbone.body, model.backbone.fpn, model.roi_heads.box_head, model.roi_heads.mask_head):
        assert bb.norm_layer_types(part) == expected, part
    shortcut = model.backbone.body.layer2[0].downsample[1]
    assert type(shortcut).__name__ == next(iter(expected))


def test_resnet50_gn_matches_paper_layout():
    model = build_detector(ModelConfig(detector="mask_rcnn", backbone="resnet50", norm="gn"), DataConfig(), 80)
    gns = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert gns and all(m.num_groups == 32 for m in gns)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())  # freeze_at 0
    head = model.roi_heads.box_head  # 4conv1fc
    assert sum(isinstance(m, nn.Conv2d) for m in head.modules()) == 4
    assert sum(isinstance(m, nn.Linear) for m in head.modules()) == 1
    # RoIAlign as in Detectron: 2x2 samples per bin unless the config asks otherwise
    assert model.roi_heads.box_roi_pool.sampling_ratio == 2 and model.roi_heads.mask_roi_pool.sampling_ratio == 2
    adaptive = build_detector(ModelConfig(detector="mask_rcnn", roi_sampling_ratio=0, **TINY), DATA, 3)
    assert adaptive.roi_heads.box_roi_pool.sampling_ratio == 0 and adaptive.roi_heads.mask_roi_pool.sampling_ratio == 0


def test_freeze_at():
    model = build_detector(ModelConfig(freeze_at=2, **TINY), DATA, 2)
    body = model.backbone.body
    assert not body.conv1.weight.requires_grad and not any(p.requires_grad for p in body.layer1.parameters())
    assert all(p.requires_grad for p in body.layer2.parameters())


def test_random_init_is_msra_without_zero_gamma():
    torch.manual_seed(0)
    model = build_detector(ModelConfig(**TINY), DATA, 2)
    conv = model.backbone.body.layer3[0].conv1
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.25)
    for m in model.modules():
        if isinstance(m, nn.GroupNorm):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)  # including each block's last norm
    assert model.roi_heads.box_predictor.cls_score.weight.std().item() == pytest.approx(0.01, rel=0.2)


def _save_body(tmp_path: Path, seed: int, fmt: str) -> tuple[Path, dict]:
    torch.manual_seed(seed)
    source, _ = bb.build_resnet("tiny", "gn", (8, 16, 16, 32), (1, 1, 1, 1), num_classes=5)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    path = tmp_path / f"w.{fmt}"
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save({"model": state}, path)
    return path, state


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_arms_differ_only_in_the_backbone(tmp_path, fmt):
    path, state = _save_body(tmp_path, 123, fmt)
    cfg = ModelConfig(**TINY)
    torch.manual_seed(0)
    random_arm = build_detector(cfg, DATA, 2)
    torch.manual_seed(0)
    pretrained_arm = build_detector(cfg, DATA, 2)
    report = init_from_source(pretrained_arm, str(path), cfg)
    assert sorted(report["ignored_classifier"]) == ["fc.bias", "fc.weight"] and report["unexpected"] == []
    body_keys = set(backbone_body(pretrained_arm).state_dict())
    for key, value in pretrained_arm.state_dict().items():
        other = random_arm.state_dict()[key]
        short = key.removeprefix("backbone.body.")
        if short in body_keys and key.startswith("backbone.body."):
            assert torch.equal(value, state[short]), key
        else:
            assert torch.equal(value, other), key  # FPN, RPN, heads: identical in both arms


def test_weights_that_do_not_fit(tmp_path):
    cfg = ModelConfig(**TINY)
    model = build_detector(cfg, DATA, 2)
    path, state = _save_body(tmp_path, 0, "safetensors")
    del state["layer4.0.conv1.weight"]
    save_file(state, str(tmp_path / "missing.safetensors"))
    with pytest.raises(UserError, match="missing 1 keys, e.g. layer4.0.conv1.weight"):
        init_from_source(model, str(tmp_path / "missing.safetensors"), cfg)
    state["layer4.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    save_file(state, str(tmp_path / "shape.safetensors"))
    with pytest.raises(UserError, match="layer4.0.conv1.weight has shape"):
        init_from_source(model, str(tmp_path / "shape.safetensors"), cfg)
    with pytest.raises(UserError, match="not found"):
        init_from_source(model, str(tmp_path / "nope.safetensors"), cfg)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="not a readable safetensors file"):
        init_from_source(model, str(tmp_path / "junk.safetensors"), cfg)


class _Payload:
    """Unpickling this would run os.system; weights_only=True must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"conv1.weight": _Payload(marker)}, f)
    model = build_detector(ModelConfig(**TINY), DATA, 2)
    with pytest.raises(UserError, match="refused to load"):
        init_from_source(model, str(path), ModelConfig(**TINY))
    assert not marker.exists()


def test_imagenet_without_network_says_how_to_pass_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError, match="pass the file instead"):
        bb.imagenet_state_dict("resnet50", "gn")
    with pytest.raises(UserError, match="tiny"):
        bb.imagenet_state_dict("tiny", "gn")


def test_syncbn_on_cpu_is_a_clear_error(tmp_path):
    from conftest import tiny_config_dict
    from rethink.config import config_from_dict
    from rethink.engine.loop import resolve_device

    cfg = config_from_dict(tiny_config_dict(tmp_path), ["model.norm=syncbn", "device=cpu"])
    with pytest.raises(UserError, match="syncbn needs CUDA"):
        resolve_device(cfg.device, cfg.model.norm)


def test_timm_backbone_with_explicit_norm():
    pytest.importorskip("timm")
    model = build_detector(ModelConfig(backbone="timm:resnet18", norm="gn", fpn_channels=32, box_head_conv_dim=16,
                                       box_head_fc_dim=32), DATA, 2)
    assert bb.norm_layer_types(model) == {"GroupNorm"}
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 64, 64)])
    assert set(out[0]) == {"boxes", "labels", "scores"}


def test_batchnorm_statistics_into_a_gn_body_are_refused_unless_allowed(tmp_path):
    torch.manual_seed(3)
    bn_body, _ = bb.build_resnet("tiny", "bn", TINY["tiny_widths"], (1, 1, 1, 1))
    path = tmp_path / "bn_trained.safetensors"
    save_file({k: v.contiguous() for k, v in bn_body.state_dict().items()}, str(path))
    cfg = ModelConfig(**TINY)
    model = build_detector(cfg, DATA, 2)
    with pytest.raises(UserError, match=r"bn_trained.safetensors: holds BatchNorm running statistics \(24 keys"):
        init_from_source(model, str(path), cfg)
    report = init_from_source(model, str(path), cfg, allow_bn_stats=True)
    assert report["loaded"] == len(backbone_body(model).state_dict())
    assert {k.rsplit(".", 1)[1] for k in report["unexpected"]} == {"running_mean", "running_var", "num_batches_tracked"}
    # a BN body keeps its statistics: nothing to refuse
    bn_cfg = ModelConfig(**TINY, norm="bn")
    assert init_from_source(build_detector(bn_cfg, DATA, 2), str(path), bn_cfg)["unexpected"] == []


def test_imagenet_weights_name_must_say_where_they_come_from(tmp_path):
    from conftest import tiny_config_dict
    from rethink.config import config_from_dict

    with pytest.raises(UserError, match="imagenet_weights: 'resnet50_gn' must be timm:<model name>"):
        config_from_dict(tiny_config_dict(tmp_path), ["imagenet_weights=resnet50_gn"])
    with pytest.raises(UserError, match="torchvision has no weights 'NoSuch_Weights.V9'"):
        bb.imagenet_state_dict("resnet50", "bn", "torchvision:NoSuch_Weights.V9")
