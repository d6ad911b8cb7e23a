"""Real tiny pre-training runs on a generated ImageFolder: learning, the weights file, skip, resume, config errors."""

import math
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import REPO
from rethink.config import DataConfig, ModelConfig, load_pretrain_config, pretrain_config_from_dict
from rethink.data.images import augment, read_image
from rethink.engine.pretrain import pretrain
from rethink.schedule import cosine_lr
from rethink.errors import Interrupted, UserError
from rethink.fileio import read_jsonl
from rethink.models.detector import backbone_body, build_detector, init_from_source

COLORS = {"blue": (30, 40, 220), "green": (40, 200, 50), "red": (220, 40, 30), "yellow": (230, 220, 40)}
WIDTHS, DEPTHS = (8, 8, 16, 16), (1, 1, 1, 1)


def make_image_folder(root, per_class: int, size: int = 16, seed: int = 0):
    """A coloured square on grey at a random place, one folder per colour: trivially separable classes.

    Not solid-colour images: GroupNorm normalizes a uniform image's channels to the same values whatever the colour.
    """
    rng = np.random.default_rng(seed)
    for name, color in COLORS.items():
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((size, size, 3), 128.0) + rng.normal(0, 8, (size, size, 3))
            y, x = rng.integers(0, size // 2, size=2)
            pixels[y:y + size // 2, x:x + size // 2] = color
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")


def config_dict(data_root, **solver) -> dict:
    return {
        "model": {"backbone": "tiny", "norm": "gn", "tiny_widths": list(WIDTHS), "tiny_depths": list(DEPTHS)},
        # 16 px files brought to 64 px: at 32 px res5 would be 1x1, where GroupNorm over 2 channels per group
        # outputs +-1 whatever its input and passes no gradient back; 64 px leaves res5 2x2.
        "data": {"train": str(data_root / "train"), "val": str(data_root / "val"), "image_size": 64,
                 "crop_padding": 2},
        "solver": {"iters": 40, "batch_size": 16, "base_lr": 1.6, "warmup_iters": 3, "weight_decay": 1e-4,
                   **solver},
        "seed": 0, "eval_period": 10, "log_period": 5, "checkpoint_period": 10, "threads": 1, "deterministic": True,
    }


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    make_image_folder(root / "train", per_class=16, seed=0)
    make_image_folder(root / "val", per_class=8, seed=1)
    return root


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory):
    """One uninterrupted run that the other tests compare against."""
    out = tmp_path_factory.mktemp("pretrain") / "run"
    cfg = pretrain_config_from_dict(config_dict(data_root))
    return cfg, out, pretrain(cfg, out, progress=False)


@pytest.mark.learning
def test_learns_and_records_its_cost(reference):
    cfg, out, record = reference
    assert record["top1"] >= 75.0  # chance is 25%
    assert record["classes"] == ["blue", "green", "red", "yellow"]
    assert record["iters"] == 40 and record["images_seen"] == 40 * 16
    assert record["pixels_seen"] == 40 * 16 * 64 * 64
    assert record["train_images"] == 64 and record["val_images"] == 32
    assert record["wall_time_s"] >= record["train_time_s"] >= record["data_time_s"] > 0
    assert record["img_per_s"] == pytest.approx(record["images_seen"] / record["train_time_s"])
    assert record["config"]["model"]["tiny_widths"] == list(WIDTHS)
    rows = read_jsonl(out / "metrics.jsonl")
    train_rows = [r for r in rows if r["type"] == "train"]
    eval_rows = [r for r in rows if r["type"] == "eval"]
    assert [r["iter"] for r in train_rows] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert [r["iter"] for r in eval_rows] == [10, 20, 30, 40]
    assert eval_rows[-1]["top1"] == record["top1"]
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    # only the newest checkpoint is kept
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["iter_0000040.pt"]


def test_weights_are_the_body_and_load_into_a_detector(reference):
    cfg, out, record = reference
    weights = out / "backbone.safetensors"
    state = load_file(str(weights))
    model_cfg = ModelConfig(backbone="tiny", norm="gn", tiny_widths=WIDTHS, tiny_depths=DEPTHS, fpn_channels=16,
                            box_head_conv_dim=16, box_head_num_conv=1, box_head_fc_dim=32)
    torch.manual_seed(0)
    detector = build_detector(model_cfg, DataConfig(min_size_train=(64,), max_size=64, min_size_test=64), 2)
    body = backbone_body(detector)
    assert set(state) == set(body.state_dict())
    assert not any(k.startswith("fc.") for k in state)
    report = init_from_source(detector, str(weights), model_cfg)
    assert report["loaded"] == len(state) and report["unexpected"] == [] and report["ignored_classifier"] == []
    for key, value in body.state_dict().items():
        assert torch.equal(value, state[key]), key
    with safe_open(str(weights), "pt") as f:
        meta = f.metadata()
    assert meta["backbone"] == "tiny" and meta["norm"] == "gn" and meta["tiny_widths"] == "8,8,16,16"


def test_finished_run_is_not_trained_again(reference):
    cfg, out, record = reference
    weights = out / "backbone.safetensors"
    before = os.stat(weights).st_mtime_ns
    again = pretrain(cfg, out, progress=False)
    assert again == record
    assert os.stat(weights).st_mtime_ns == before


def test_resume_gives_the_uninterrupted_result(reference, data_root, tmp_path):
    cfg, ref_out, record = reference
    out = tmp_path / "run"
    with pytest.raises(Interrupted, match="iteration 13"):
        pretrain(cfg, out, progress=False, stop_at=13)
    assert not (out / "pretrain.json").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["iter_0000013.pt"]
    resumed = pretrain(cfg, out, progress=False)
    assert resumed["top1"] == record["top1"] and resumed["val_loss"] == record["val_loss"]
    assert resumed["images_seen"] == record["images_seen"] and resumed["pixels_seen"] == record["pixels_seen"]
    a, b = load_file(str(ref_out / "backbone.safetensors")), load_file(str(out / "backbone.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)

    def losses(run):
        return [(r["iter"], r.get("loss")) for r in read_jsonl(run / "metrics.jsonl")]

    assert losses(out) == losses(ref_out)  # no line lost or doubled by the stop


def test_killed_after_the_last_checkpoint_finishes_without_training(reference, tmp_path):
    """The worst moment for a SIGKILL: final checkpoint written, weights and record not yet."""
    cfg, ref_out, record = reference
    out = tmp_path / "run"
    shutil.copytree(ref_out, out)
    (out / "pretrain.json").unlink()
    (out / "backbone.safetensors").unlink()
    again = pretrain(cfg, out, progress=False)
    assert again["top1"] == record["top1"] and again["images_seen"] == record["images_seen"]
    assert again["train_time_s"] == record["train_time_s"]  # restored from the checkpoint: no iteration ran
    a, b = load_file(str(ref_out / "backbone.safetensors")), load_file(str(out / "backbone.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_reading_from_disk_matches_the_memory_cache(reference, data_root, tmp_path):
    """cache_images=no (DataLoader, per-image decoding) must train on exactly the same batches."""
    cfg, ref_out, record = reference
    data = config_dict(data_root)
    data["data"]["cache_images"] = "no"
    run = pretrain(pretrain_config_from_dict(data), tmp_path / "disk", progress=False)
    assert run["cached_images"] is False and record["cached_images"] is True
    assert run["top1"] == record["top1"] and run["val_loss"] == record["val_loss"]
    a, b = load_file(str(ref_out / "backbone.safetensors")), load_file(str(tmp_path / "disk" / "backbone.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_other_config_in_same_dir_is_refused(reference, data_root):
    cfg, out, _ = reference
    other = pretrain_config_from_dict(config_dict(data_root, iters=50))
    with pytest.raises(UserError, match="solver.iters"):
        pretrain(other, out, progress=False)


def test_config_errors_name_the_key(data_root, tmp_path):
    bad = config_dict(data_root)
    bad["solver"]["itrs"] = 5
    with pytest.raises(UserError, match=r"^solver\.itrs: unknown key"):
        pretrain_config_from_dict(bad)
    with pytest.raises(UserError, match=r"^model\.norm: 'frozen_bn'"):
        pretrain_config_from_dict(config_dict(data_root), ["model.norm=frozen_bn"])
    with pytest.raises(UserError, match=r"^solver\.warmup_iters"):
        pretrain_config_from_dict(config_dict(data_root), ["solver.warmup_iters=-1"])
    with pytest.raises(UserError, match=r"^data\.crop_padding"):
        pretrain_config_from_dict(config_dict(data_root), ["data.crop_padding=64"])
    with pytest.raises(UserError, match=r"^solver\.batch_size: expected an integer"):
        pretrain_config_from_dict(config_dict(data_root), ["solver.batch_size=big"])
    # data problems surface before anything trains, naming the key
    with pytest.raises(UserError, match=r"^data\.train: folder .* not found"):
        pretrain(pretrain_config_from_dict(config_dict(tmp_path / "nowhere")), tmp_path / "a", progress=False)
    make_image_folder(tmp_path / "three" / "train", per_class=2)
    (tmp_path / "three" / "val").mkdir()
    for name in ("blue", "green", "red"):
        (tmp_path / "three" / "val" / name).mkdir()
        Image.new("RGB", (16, 16)).save(tmp_path / "three" / "val" / name / "0.png")
    with pytest.raises(UserError, match=r"^data\.val: .* other class folders .*yellow"):
        pretrain(pretrain_config_from_dict(config_dict(tmp_path / "three")), tmp_path / "b", progress=False)
    assert not (tmp_path / "b").exists()


def test_bundled_config_loads_with_paths_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = load_pretrain_config(REPO / "src" / "rethink" / "configs" / "tiny" / "pretrain.yaml", ["solver.iters=200"])
    assert cfg.model.backbone == "tiny" and cfg.model.norm == "gn"
    assert cfg.model.tiny_widths == (16, 32, 64, 128) and cfg.model.tiny_depths == (1, 1, 1, 1)
    assert cfg.data.image_size == 32 and cfg.solver.iters == 200
    assert cfg.data.train == str(tmp_path / "runs" / "demo" / "benchmark" / "source" / "train")
    # YAML reads a bare no as false: stored as the word the docs use
    no_cache = load_pretrain_config(REPO / "src" / "rethink" / "configs" / "tiny" / "pretrain.yaml", ["data.cache_images=no"])
    assert no_cache.data.cache_images == "no"


def test_cosine_lr_values():
    assert cosine_lr(0, 0.4, 4, 104) == pytest.approx(0.1)
    assert cosine_lr(3, 0.4, 4, 104) == pytest.approx(0.4)
    assert cosine_lr(4, 0.4, 4, 104) == pytest.approx(0.4)  # the cosine starts at the full LR
    assert cosine_lr(54, 0.4, 4, 104) == pytest.approx(0.2)  # half way: half the LR
    assert cosine_lr(103, 0.4, 4, 104) == pytest.approx(0.4 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert cosine_lr(0, 0.4, 0, 10) == pytest.approx(0.4)


def test_augment_is_pad_crop_flip_per_image():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    flips = torch.tensor([True, False, True, False, False, True])
    out = augment(images, flips, 2, torch.Generator().manual_seed(3))
    # the same draws, applied one image at a time as torchvision's RandomCrop(padding=2) + flip would
    g = torch.Generator().manual_seed(3)
    dy, dx = torch.randint(0, 5, (6,), generator=g), torch.randint(0, 5, (6,), generator=g)
    padded = F.pad(images, (2, 2, 2, 2))
    for i in range(6):
        crop = padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8]
        assert torch.equal(out[i], crop.flip(2) if flips[i] else crop)
    assert torch.equal(augment(images, torch.zeros(6, dtype=torch.bool), 0, g), images)


def test_read_image_resizes_shorter_side_and_keeps_the_centre(tmp_path):
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :6] = (255, 0, 0)  # a red band at the left: outside the centre square
    pixels[:, 6:] = (0, 0, 255)
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    out = read_image(tmp_path / "wide.png", 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert (out[:, :, 2] == 255).all() and (out[:, :, 0] == 0).all()
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="broken.png: not a readable image"):
        read_image(tmp_path / "broken.png", 16)


def test_pretraining_writes_tensorboard_events(reference):
    from test_events import scalars

    _, out, record = reference
    got = scalars(out)
    evals = [r for r in read_jsonl(out / "metrics.jsonl") if r["type"] == "eval"]
    assert got["eval/top1"] == [(r["iter"], pytest.approx(r["top1"])) for r in evals]
    assert got["eval/top1"][-1][1] == pytest.approx(record["top1"])
    assert "train/loss" in got and "train/lr" in got


def test_a_nonfinite_loss_fails_the_run_as_detection_does(data_root, tmp_path):
    """The one policy on a non-finite loss (engine/loop.py fail_run): the run stops at that iteration, before the
    step, with a FAILED marker naming it and the loss; the same command then refuses to resume it."""
    from rethink.errors import RunFailed
    from rethink.fileio import read_json

    cfg = pretrain_config_from_dict(config_dict(data_root, base_lr=1e12, warmup_iters=0))
    out = tmp_path / "nan"
    with pytest.raises(RunFailed, match=r"non-finite loss at iteration \d+ \(loss=(nan|inf)\); lower solver.base_lr"):
        pretrain(cfg, out, progress=False)
    failed = read_json(out / "FAILED")
    assert failed["reason"] == "non-finite loss" and 0 <= failed["iter"] < 40 and set(failed["losses"]) == {"loss"}
    assert not (out / "pretrain.json").exists()
    with pytest.raises(RunFailed, match="failed earlier at iteration"):
        pretrain(cfg, out, progress=False)
