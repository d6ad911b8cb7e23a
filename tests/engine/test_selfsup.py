"""Self-supervised pre-training (MoCo v2, DenseCL): learning, unlabelled inputs, the kNN and collapse signals,
resume after SIGKILL, bad inputs. Real tiny models on generated images."""

import json
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import run_cli, write_config
from rethink.config import pretrain_config_from_dict
from rethink.engine.pretrain import pretrain
from rethink.data.images import ObjectCrops, list_images
from rethink.engine.selfsup import probe_accuracies
from rethink.errors import Interrupted, UserError
from rethink.fileio import read_json, read_jsonl

WIDTHS = (16, 16, 32, 32)


def make_labelled_folder(root, per_class: int = 8, size: int = 32, seed: int = 0):
    """A labelled ImageFolder for the kNN signal: a bright square or a bright disc on noise, one folder each."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for name in ("square", "disc"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.normal(100, 20, (size, size, 3))
            cy, cx = rng.integers(size // 4, 3 * size // 4, size=2)
            r = size // 5
            shape = (abs(yy - cy) <= r) & (abs(xx - cx) <= r) if name == "square" else (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            pixels[shape] = rng.integers(150, 256, 3)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / name / f"{i:03d}.png")


def ssl_dict(train, method: str = "moco_v2", **keys) -> dict:
    cfg = {
        "method": method,
        "model": {"backbone": "tiny", "norm": "gn", "gn_groups": 8, "tiny_widths": list(WIDTHS),
                  "tiny_depths": [1, 1, 1, 1]},
        "data": {"train": str(train), "image_size": 64},
        "solver": {"iters": 60, "batch_size": 8, "base_lr": 1.0, "warmup_iters": 3},
        # mild views, a fast key encoder, negatives from the batch: learns within 60 iterations of 24 images
        "ssl": {"memory_bank_size": 0, "momentum": 0.9, "min_scale": 0.8, "cj_strength": 0.0, "proj_hidden_dim": 32,
                "proj_dim": 16},
        "seed": 0, "eval_period": 20, "log_period": 5, "checkpoint_period": 20, "threads": 1, "deterministic": True,
    }
    for key, value in keys.items():
        section, _, name = key.partition("__")
        if name:
            cfg[section][name] = value
        else:
            cfg[section] = value
    return cfg


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("labelled")
    make_labelled_folder(root)
    return root


def coco_train(coco_data) -> dict:
    """The target's own training images, through its COCO file (annotations unused)."""
    return {"train": str(coco_data / "train" / "annotations.json"), "train_images": str(coco_data / "train" / "images")}


@pytest.fixture(scope="module")
def moco_reference(coco_data, labelled, tmp_path_factory):
    cfg = ssl_dict("", data={**coco_train(coco_data), "image_size": 64, "val": str(labelled)})
    out = tmp_path_factory.mktemp("moco") / "run"
    return cfg, out, pretrain(pretrain_config_from_dict(cfg), out, progress=False)


@pytest.fixture(scope="module")
def bank_reference(coco_data, tmp_path_factory):
    """MoCo v2 with a memory bank of past keys. On 24 images of a tiny GroupNorm backbone, whose random-init
    embeddings are nearly alike, the negatives carry no gradient that spreads them: it collapses (a real one)."""
    cfg = ssl_dict("", data={**coco_train(coco_data), "image_size": 64},
                   ssl={"memory_bank_size": 8, "momentum": 0.9, "min_scale": 0.8, "cj_strength": 0.0,
                        "proj_hidden_dim": 32, "proj_dim": 16})
    out = tmp_path_factory.mktemp("bank") / "run"
    return cfg, out, pretrain(pretrain_config_from_dict(cfg), out, progress=False)


def train_losses(out) -> list[float]:
    return [r["loss"] for r in read_jsonl(out / "metrics.jsonl") if r["type"] == "train"]


@pytest.mark.learning
def test_moco_v2_loss_falls_and_the_record_counts_its_cost(moco_reference):
    _, out, record = moco_reference
    losses = train_losses(out)
    assert len(losses) == 12 and losses[-1] < losses[0] - 0.8
    assert record["method"] == "moco_v2" and record["label"] == "MoCo v2 on coco0"
    assert record["train_images"] == 24 and record["images_seen"] == 60 * 8
    assert record["pixels_seen"] == 60 * 8 * 2 * 64 * 64  # both views of every image go through an encoder
    assert record["epochs"] == pytest.approx(20.0)
    assert all(0 <= record[k] <= 100 for k in ("knn_top1", "knn_top1_init", "probe_top1", "probe_top1_init"))
    assert record["collapsed"] is False and record["embedding_std"] > 0.1
    evals = [r for r in read_jsonl(out / "metrics.jsonl") if r["type"] == "eval"]
    assert [r["iter"] for r in evals] == [20, 40, 60] and evals[-1]["knn_top1"] == record["knn_top1"]
    assert evals[-1]["probe_top1"] == record["probe_top1"]
    body = load_file(str(out / "backbone.safetensors"))
    assert "conv1.weight" in body and not any(k.startswith(("head", "fc", "backbone.")) for k in body)


@pytest.mark.learning
def test_densecl_loss_falls_with_its_dense_term(coco_data, tmp_path):
    out = tmp_path / "densecl"
    record = pretrain(pretrain_config_from_dict(ssl_dict("", "densecl", data={**coco_train(coco_data),
                                                                              "image_size": 64})), out, progress=False)
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if r["type"] == "train"]
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.5
    assert rows[-1]["loss_dense"] < rows[0]["loss_dense"] - 0.5
    assert rows[-1]["loss"] == pytest.approx(0.5 * rows[-1]["loss_global"] + 0.5 * rows[-1]["loss_dense"])
    # no labelled set: the loss is the signal
    assert record["method"] == "densecl" and record["knn_top1"] is None and record["probe_top1"] is None
    assert record["loss"] == rows[-1]["loss"]


def test_resume_gives_the_uninterrupted_result(bank_reference, tmp_path):
    cfg, ref_out, record = bank_reference
    out = tmp_path / "run"
    config = pretrain_config_from_dict(cfg)
    with pytest.raises(Interrupted, match="iteration 13"):
        pretrain(config, out, progress=False, stop_at=13)
    resumed = pretrain(config, out, progress=False)
    a, b = load_file(str(ref_out / "backbone.safetensors")), load_file(str(out / "backbone.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["loss"] == record["loss"] and resumed["embedding_std"] == record["embedding_std"]
    assert train_losses(out) == train_losses(ref_out)


def test_killed_at_random_moments_resumes_bit_identical(moco_reference, tmp_path):
    """With the kNN signal (its random-init baseline is computed once, before iteration 1, and checkpointed)."""
    cfg, ref_out, record = moco_reference
    cfg = {**cfg, "checkpoint_period": 3}  # resume-free key: the reference's results stand
    config = write_config(tmp_path / "moco.yaml", cfg)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "rethink", "pretrain", str(config), "--out", str(out), "--no-progress"]
    rng = random.Random(7)
    kills = 0
    while kills < 4:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 4.0))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    assert kills >= 2, "the run finished too fast to be killed"
    result = run_cli("pretrain", config, "--out", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    again = read_json(out / "pretrain.json")
    assert again["knn_top1"] == record["knn_top1"] and again["knn_top1_init"] == record["knn_top1_init"]
    assert again["probe_top1"] == record["probe_top1"] and again["probe_top1_init"] == record["probe_top1_init"]
    assert again["loss"] == record["loss"]
    a, b = load_file(str(ref_out / "backbone.safetensors")), load_file(str(out / "backbone.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert train_losses(out) == train_losses(ref_out)


def test_a_folder_of_the_same_images_trains_exactly_as_the_coco_file(coco_data, tmp_path):
    """Flat and nested folders are read in sorted order, a COCO file in its own order: here the same order."""
    flat = tmp_path / "flat"
    nested = tmp_path / "nested" / "any_label"
    for folder in (flat, nested):
        folder.mkdir(parents=True)
        for p in sorted((coco_data / "train" / "images").glob("*.png")):
            (folder / p.name).write_bytes(p.read_bytes())
    (tmp_path / "nested" / "notes.txt").write_text("not an image")
    short = {"solver": {"iters": 6, "batch_size": 8, "base_lr": 1.0, "warmup_iters": 3}, "eval_period": 0,
             "checkpoint_period": 6}
    runs = {}
    for name, data in (("coco", coco_train(coco_data)), ("flat", {"train": str(flat)}),
                       ("nested", {"train": str(tmp_path / "nested")})):
        cfg = pretrain_config_from_dict(ssl_dict("", data={**data, "image_size": 64}, **short))
        assert len(list_images(cfg)) == 24
        pretrain(cfg, tmp_path / name, progress=False)
        runs[name] = load_file(str(tmp_path / name / "backbone.safetensors"))
    for name in ("flat", "nested"):
        assert all(torch.equal(runs["coco"][k], runs[name][k]) for k in runs["coco"]), name


def test_a_collapsed_representation_is_reported(bank_reference, tmp_path):
    cfg, out, record = bank_reference
    assert record["collapsed"] is True and record["embedding_std"] < 0.1 and record["collapse_iter"] <= 30
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if r["type"] == "train"]
    assert rows[0]["embedding_std"] > 0.1 and rows[-1]["embedding_std"] == record["embedding_std"]
    result = run_cli("pretrain", write_config(tmp_path / "bank.yaml", cfg), "--out", tmp_path / "run", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert f"warning: the embeddings have collapsed" in result.stderr and "COLLAPSED at iteration" in result.stdout


@pytest.mark.parametrize("case", ["empty", "unreadable", "too_few", "method", "no_images_folder", "probe_images"])
def test_bad_input_is_one_line_naming_the_path_or_key(case, coco_data, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    data = {"train": str(folder), "image_size": 64}
    extra = {}
    if case == "unreadable":
        for i in range(10):
            Image.new("RGB", (64, 64), (i * 20, 0, 0)).save(folder / f"{i}.png")
        (folder / "5.png").write_bytes(b"not a png at all")
    elif case == "too_few":
        for i in range(3):
            Image.new("RGB", (64, 64)).save(folder / f"{i}.png")
    elif case == "method":
        extra["method"] = "simclr_v9"
    elif case == "no_images_folder":
        data = {"train": str(coco_data / "train" / "annotations.json"), "train_images": str(tmp_path / "nowhere"),
                "image_size": 64}
    elif case == "probe_images":  # a COCO file as the probe set, without its images folder
        for i in range(10):
            Image.new("RGB", (64, 64), (i * 20, 0, 0)).save(folder / f"{i}.png")
        data["val"] = str(coco_data / "val" / "annotations.json")
    cfg = ssl_dict("", data=data, **extra)
    config = write_config(tmp_path / "bad.yaml", cfg)
    out = tmp_path / "run"
    result = run_cli("pretrain", config, "--out", out, "--no-progress")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    expected = {"empty": f"{folder} holds no images", "unreadable": str(folder / "5.png"),
                "too_few": "holds 3 images, fewer than one batch (solver.batch_size=8)", "method": "method: 'simclr_v9'",
                "no_images_folder": str(tmp_path / "nowhere"),
                "probe_images": "data.val_images: a COCO file as data.val needs the folder its images are in"}[case]
    assert expected in lines[0]
    assert not (out / "checkpoints").exists()  # refused before any training


def test_unknown_ssl_key_names_the_key(tmp_path):
    with pytest.raises(UserError, match="ssl.tempreature: unknown key"):
        pretrain_config_from_dict(ssl_dict(tmp_path, ssl={"tempreature": 0.1}))


def test_the_target_objects_become_a_labelled_probe_set(coco_data):
    """data.val as a COCO file: every non-crowd box, squared and widened by 15% a side, labelled by its category."""
    annotations = coco_data / "val" / "annotations.json"
    coco = json.loads(annotations.read_text())
    crops = ObjectCrops(str(annotations), str(coco_data / "val" / "images"), 32, "data.val")
    boxes = sorted((a for a in coco["annotations"] if not a.get("iscrowd", 0)), key=lambda a: (a["image_id"], a["id"]))
    names = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
    assert crops.classes == names and len(crops) == len(boxes) and crops.images.shape == (len(boxes), 3, 32, 32)
    assert [crops.classes[i] for i in crops.labels.tolist()] == [
        next(c["name"] for c in coco["categories"] if c["id"] == a["category_id"]) for a in boxes]
    # the first crop is the first box's square, cut from its image and resized
    a = boxes[0]
    file_name = next(im["file_name"] for im in coco["images"] if im["id"] == a["image_id"])
    x, y, w, h = a["bbox"]
    side = max(w, h) * 1.3
    with Image.open(coco_data / "val" / "images" / file_name) as im:
        expected = im.convert("RGB").crop((round(x + w / 2 - side / 2), round(y + h / 2 - side / 2),
                                           round(x + w / 2 + side / 2), round(y + h / 2 + side / 2)))
        expected = np.array(expected.resize((32, 32), Image.BILINEAR))
    assert np.array_equal(crops.images[0].permute(1, 2, 0).numpy(), expected)


def test_probe_accuracies_on_planted_features():
    """Two-fold kNN and linear probe: perfect on separable classes, chance on labels unrelated to the features, and
    the linear probe finds a direction the cosine kNN cannot (a class told apart by one small coordinate)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 4
    separable = torch.nn.functional.one_hot(labels, 4).float() * 5 + torch.randn(200, 4, generator=g) * 0.3
    assert probe_accuracies(separable, labels, 4, k=5, t=0.1) == {"knn_top1": 100.0, "probe_top1": 100.0}
    noise = torch.randn(200, 8, generator=g)
    chance = probe_accuracies(noise, labels, 4, k=5, t=0.1)
    assert 10 <= chance["knn_top1"] <= 40 and 10 <= chance["probe_top1"] <= 40
    two = labels % 2
    hidden = torch.randn(200, 8, generator=g) * 3  # large nuisance coordinates rule the cosine neighbours
    hidden[:, 0] = two.float() * 0.6 + torch.randn(200, generator=g) * 0.05
    found = probe_accuracies(hidden, two, 2, k=5, t=0.1)
    assert found["probe_top1"] >= 95 and found["knn_top1"] <= 75


def test_collapse_is_a_fall_of_the_spread_not_a_low_start():
    from rethink.engine.selfsup import track_collapse

    def run(spreads, last=None):
        c = {"collapsed": False, "collapse_iter": None, "embedding_std": None, "peak_std": 0.0}
        for i, spread in enumerate(spreads, start=1):
            c = track_collapse(c, spread, 10 * i, 0.1, last or 10 * len(spreads))
        return c

    assert run([0.02, 0.05, 0.3, 0.4])["collapsed"] is False  # starts alike, then spreads: learning
    fell = run([0.3, 0.4, 0.05, 0.01])
    assert fell["collapsed"] is True and fell["collapse_iter"] == 30 and fell["peak_std"] == 0.4
    assert run([0.3, 0.05, 0.3])["collapsed"] is False  # spread again by the end: not passed on
    never = run([0.02, 0.03, 0.04])
    assert never["collapsed"] is True and never["collapse_iter"] == 30  # never spread: reported at the end
