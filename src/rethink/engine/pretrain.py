"""Supervised classification pre-training of a backbone: the "ImageNet pre-training" arm, on any ImageFolder.

`rethink pretrain CONFIG --out DIR` trains `build_resnet(..., num_classes=K)` to classify the K classes of an
ImageFolder dataset and writes `DIR/backbone.safetensors`: the body keys only (conv1, bn1, layer1..layer4, no
classifier), which a detection config loads with `init: DIR/backbone.safetensors`. Its cost (images, pixels,
wall time) goes into `DIR/pretrain.json`, because the paper counts pre-training in the comparison.

The loop is written out like engine/train.py: iteration-based, a seeded infinite sampler, a checkpoint every
`checkpoint_period` iterations, SIGINT/SIGTERM save and stop, the same command resumes from the last checkpoint,
and a finished run is not trained again.

Data: every image is brought to `image_size` x `image_size` once (shorter side resized, centre square kept), and
the augmentation - random crop from the image padded by `crop_padding` black pixels, horizontal flip - is done on
whole uint8 batches. For small datasets (the bundled source set: 30k images of 32x32) everything is decoded once
into one tensor in memory: on a 2-core machine data loading then takes ~4% of the training time, against ~60% with
per-image PIL transforms in a DataLoader, and training runs ~2x faster (benchmarks/bench_pretrain.py). Larger
datasets are read per batch by DataLoader workers and augmented the same way. The batch of iteration k and its
augmentation depend only on (seed, k), so a resumed run sees exactly the batches the uninterrupted one would.

LR schedule: linear warm-up, then a cosine decay to zero at the last iteration. Cosine rather than steps because a
pre-training run has one length (no family of schedules that must share a trajectory, as detection's Nx do) and
cosine has no drop points to tune for each length. The LR is given for a batch of 256 and scaled linearly.
"""

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from rethink import config as cfgmod
from rethink import schedule as sched
from rethink.data.sampling import InfiniteSampler
from rethink.engine import checkpoint as ckpt
from rethink.engine.events import RunLog
from rethink.engine.train import _Signals, amp_dtype, resolve_device
from rethink.errors import Interrupted, RunFailed, UserError
from rethink.fileio import atomic_save_with, atomic_write_json, atomic_write_text, read_json, read_jsonl
from rethink.models import backbone as bb
from rethink.models.detector import IMAGE_MEAN, IMAGE_STD

BACKBONES = ("tiny",) + cfgmod.TORCHVISION_RESNETS
# GN and BN train from scratch in one process; frozen_bn cannot train, syncbn needs several processes.
NORMS = ("gn", "bn")
REFERENCE_BATCH = 256  # solver.base_lr is the LR for this batch (Goyal et al.'s ImageNet reference)
# data.cache_images=auto decodes into memory when all images together take at most this many bytes.
CACHE_AUTO_BYTES = 4 * 2**30
RECORD = "pretrain.json"
WEIGHTS = "backbone.safetensors"


@dataclass(frozen=True)
class PretrainModelConfig:
    backbone: str = "tiny"  # tiny | resnet18/34/50/101 (the detector's backbone names)
    norm: str = "gn"  # gn | bn; fine-tune with the same norm for a clean transfer
    gn_groups: int = 32  # upper bound, as model.gn_groups of a detection config
    tiny_widths: tuple[int, ...] = (16, 32, 64, 128)  # `tiny` backbone: channels of res2..res5
    tiny_depths: tuple[int, ...] = (1, 1, 1, 1)  # `tiny` backbone: BasicBlocks per stage


@dataclass(frozen=True)
class PretrainDataConfig:
    train: str = ""  # ImageFolder root: train/<class>/<image>
    val: str = ""  # ImageFolder root with the same class folders
    image_size: int = 32  # every image becomes image_size x image_size (shorter side resized, centre crop)
    crop_padding: int = 4  # random crop of image_size from the image padded by this many black pixels per side
    hflip_prob: float = 0.5
    num_workers: int = 0  # DataLoader workers, used when images are read from disk per batch
    # auto | yes | no: decode all images once into memory (auto: if they fit in 4 GiB). YAML reads a bare yes/no as
    # true/false, so booleans are accepted too and stored as yes/no.
    cache_images: str | bool = "auto"


@dataclass(frozen=True)
class PretrainSolverConfig:
    iters: int = 1000
    batch_size: int = 256
    base_lr: float = 0.1  # for a batch of 256; scaled linearly to batch_size
    momentum: float = 0.9
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0  # norm layers and biases
    warmup_iters: int = 100  # linear from ~0 to the full LR, then cosine to 0 at the last iteration
    label_smoothing: float = 0.0
    amp: bool = True  # mixed precision on CUDA; ignored on CPU


@dataclass(frozen=True)
class PretrainConfig:
    model: PretrainModelConfig = field(default_factory=PretrainModelConfig)
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    solver: PretrainSolverConfig = field(default_factory=PretrainSolverConfig)
    seed: int = 0
    eval_period: int = 0  # evaluate on val every N iterations (0: only at the end)
    log_period: int = 20
    checkpoint_period: int = 500
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch intra-op threads (0: torch's default)
    deterministic: bool = False  # bitwise-reproducible runs (resume gives exactly the uninterrupted result)


# ---------------------------------------------------------------------------------------------------------------
# config


def load_pretrain_config(path, overrides=()) -> PretrainConfig:
    """Read a pre-training YAML, apply `--set key=value` overrides, check types and values.

    Relative data paths are taken from the current directory and recorded absolute, so a run directory says
    exactly which images it was trained on.
    """
    return pretrain_config_from_dict(cfgmod.read_yaml(path), overrides)


def pretrain_config_from_dict(data: dict, overrides=()) -> PretrainConfig:
    data = cfgmod._deepcopy(data)
    for item in overrides:
        key, value = cfgmod.parse_override(item) if isinstance(item, str) else item
        cfgmod.set_key(data, key, value)
    cfg = cfgmod._from_dict(PretrainConfig, data)
    validate_pretrain(cfg)
    data_fields = {k: str(Path(getattr(cfg.data, k)).resolve()) for k in ("train", "val")}
    if isinstance(cfg.data.cache_images, bool):
        data_fields["cache_images"] = "yes" if cfg.data.cache_images else "no"
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **data_fields))


def validate_pretrain(cfg: PretrainConfig) -> None:
    """Impossible values fail here, with the key path, before any image is read."""
    m, d, s = cfg.model, cfg.data, cfg.solver
    if m.backbone not in BACKBONES:
        raise UserError(f"model.backbone: '{m.backbone}' is not one of {', '.join(BACKBONES)}")
    if m.norm not in NORMS:
        raise UserError(
            f"model.norm: '{m.norm}' is not one of {', '.join(NORMS)} (frozen_bn cannot learn; for a syncbn "
            "detector pre-train with bn, whose weights it loads)"
        )
    if m.gn_groups <= 0:
        raise UserError(f"model.gn_groups: {m.gn_groups} must be positive")
    if m.backbone == "tiny":
        if len(m.tiny_widths) != 4 or len(m.tiny_depths) != 4:
            raise UserError("model.tiny_widths / model.tiny_depths: need 4 values each (res2..res5)")
        if any(w <= 0 for w in m.tiny_widths) or any(n <= 0 for n in m.tiny_depths):
            raise UserError("model.tiny_widths / model.tiny_depths: values must be positive")

    for split in ("train", "val"):
        if not getattr(d, split):
            raise UserError(f"data.{split}: needs an ImageFolder root (a folder of one sub-folder per class)")
    # The stem and the first stages halve the image four times before res5; below 16 px nothing is left to see.
    if d.image_size < 16:
        raise UserError(f"data.image_size: {d.image_size} must be at least 16")
    if not 0 <= d.crop_padding < d.image_size:
        raise UserError(f"data.crop_padding: {d.crop_padding} must be in [0, data.image_size)")
    if not 0 <= d.hflip_prob <= 1:
        raise UserError(f"data.hflip_prob: {d.hflip_prob} must be in [0, 1]")
    if d.num_workers < 0:
        raise UserError(f"data.num_workers: {d.num_workers} must be >= 0")
    if d.cache_images not in ("auto", "yes", "no", True, False):
        raise UserError(f"data.cache_images: '{d.cache_images}' must be auto, yes or no")

    if s.iters <= 0:
        raise UserError(f"solver.iters: {s.iters} must be positive")
    cfgmod.check_sgd(s)
    # A warm-up longer than the run is allowed (the LR then never reaches base_lr): short runs set by --set
    # solver.iters=N in smoke tests must not need a second override.
    if s.warmup_iters < 0:
        raise UserError(f"solver.warmup_iters: {s.warmup_iters} must be >= 0")
    if not 0 <= s.label_smoothing < 1:
        raise UserError(f"solver.label_smoothing: {s.label_smoothing} must be in [0, 1)")

    if cfg.seed < 0:
        raise UserError(f"seed: {cfg.seed} must be >= 0")
    if cfg.eval_period < 0 or cfg.log_period <= 0 or cfg.checkpoint_period <= 0:
        raise UserError("eval_period must be >= 0, log_period and checkpoint_period > 0")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise UserError(f"device: '{cfg.device}' must be auto, cpu or cuda")
    if cfg.threads < 0:
        raise UserError("threads: must be >= 0")


def cosine_lr(it: int, base_lr: float, warmup_iters: int, total: int) -> float:
    """LR of iteration `it` (0-based): linear warm-up over `warmup_iters`, then cosine from base_lr to 0."""
    if it < warmup_iters:
        return base_lr * (it + 1) / warmup_iters
    progress = (it - warmup_iters) / max(1, total - warmup_iters)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------------------------
# data


def read_image(path, size: int) -> np.ndarray:
    """One image as (size, size, 3) uint8: shorter side resized to `size`, the centre square kept."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                w, h = im.size
                scale = size / min(w, h)
                im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
                left, top = (im.width - size) // 2, (im.height - size) // 2
                im = im.crop((left, top, left + size, top + size))
            return np.array(im, dtype=np.uint8)  # a writable copy: torch.from_numpy wants one
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable image ({str(e).splitlines()[0][:160]})") from None


class ImageSet(torch.utils.data.Dataset):
    """One ImageFolder split as uint8 (3, size, size) images, decoded once into memory or read on demand.

    As a Dataset (the on-demand path) an item is the sampler's (index, flip) pair and comes back as
    (image, label, flip), so DataLoader workers only decode; the augmentation happens on the whole batch.
    """

    def __init__(self, root: str, size: int, key: str, classes: list[str] | None = None):
        from torchvision.datasets import ImageFolder

        if not Path(root).is_dir():
            raise UserError(f"{key}: folder {root} not found")
        try:
            folder = ImageFolder(root, loader=lambda p: p)  # the loader is never called: we decode ourselves
        except (FileNotFoundError, RuntimeError) as e:
            raise UserError(f"{key}: {root} is not an ImageFolder ({str(e).splitlines()[0][:160]})") from None
        if classes is not None and folder.classes != classes:
            extra = sorted(set(folder.classes) ^ set(classes))
            raise UserError(f"{key}: {root} has other class folders than data.train (differ: {', '.join(extra[:5])})")
        self.root = root
        self.size = size
        self.classes = folder.classes
        self.paths = [p for p, _ in folder.samples]
        self.labels = torch.tensor([c for _, c in folder.samples], dtype=torch.int64)
        self.images: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def nbytes(self) -> int:
        return len(self) * 3 * self.size * self.size

    def decode_all(self, progress: bool = False) -> None:
        """Decode every image into one (N, 3, size, size) uint8 tensor (about 3 KiB per 32x32 image)."""
        images = torch.empty((len(self), 3, self.size, self.size), dtype=torch.uint8)
        array = images.numpy()  # shares memory: each image is written in place, channels-first, no second copy
        for i, path in enumerate(tqdm(self.paths, desc=f"decode {Path(self.root).name}", unit="img",
                                      disable=not progress, mininterval=1.0, leave=False)):
            array[i] = read_image(path, self.size).transpose(2, 0, 1)
        self.images = images

    def __getitem__(self, item):
        index, flip = item
        image = torch.from_numpy(read_image(self.paths[index], self.size)).permute(2, 0, 1)
        return image, self.labels[index], flip


def collate_items(items):
    images, labels, flips = zip(*items)
    return torch.stack(images), torch.stack(labels), torch.tensor(flips, dtype=torch.bool)


def augment(images: torch.Tensor, flips: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random crop (from the batch padded by `padding` black pixels) and horizontal flip, on uint8 (N, C, H, W).

    torchvision's RandomCrop(padding=p) + RandomHorizontalFlip per image, done as one gather for the whole batch:
    each output pixel reads padded[row + dy, col + dx] (columns reversed for flipped images). On 2 cores this is
    ~8x faster than advanced indexing with broadcast row/column grids and ~4x faster than a per-image loop.
    """
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    width = w + 2 * padding
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    cols = dx[:, None] + torch.arange(w)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    rows = dy[:, None] + torch.arange(h)
    flat = (rows[:, :, None] * width + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, -1).gather(2, flat).view(n, c, h, w)


class Normalize:
    """uint8 batch -> float input with the detector's ImageNet mean/std, so features transfer as they are."""

    def __init__(self, device: torch.device):
        std = torch.tensor(IMAGE_STD, device=device).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGE_MEAN, device=device).view(1, 3, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.shift = mean / std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().mul_(self.scale).sub_(self.shift)


def load_splits(cfg: PretrainConfig, progress: bool = False) -> tuple[ImageSet, ImageSet, bool]:
    """Both splits with the same classes; decoded into memory when the cache applies (a broken image fails here,
    before training, instead of in the middle of it)."""
    d = cfg.data
    train_set = ImageSet(d.train, d.image_size, "data.train")
    val_set = ImageSet(d.val, d.image_size, "data.val", classes=train_set.classes)
    if len(train_set.classes) < 2:
        raise UserError(f"data.train: {d.train} has {len(train_set.classes)} class folder; classification needs 2+")
    cached = d.cache_images == "yes" or (
        d.cache_images == "auto" and train_set.nbytes() + val_set.nbytes() <= CACHE_AUTO_BYTES
    )
    if cached:
        train_set.decode_all(progress)
        val_set.decode_all(progress)
    return train_set, val_set, cached


# ---------------------------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate_top1(model, val_set: ImageSet, normalize: Normalize, device, batch_size: int, num_workers: int = 0,
                  dtype=None) -> dict:
    """Top-1 accuracy (in %) and mean cross-entropy on the whole val split, without augmentation."""
    was_training = model.training
    model.eval()
    if val_set.images is not None:
        batches = (
            (val_set.images[i:i + batch_size], val_set.labels[i:i + batch_size])
            for i in range(0, len(val_set), batch_size)
        )
    else:
        items = [(i, False) for i in range(len(val_set))]
        loader = torch.utils.data.DataLoader(
            val_set, batch_sampler=[items[i:i + batch_size] for i in range(0, len(items), batch_size)],
            num_workers=num_workers, collate_fn=collate_items,
        )
        batches = ((images, labels) for images, labels, _ in loader)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for images, labels in batches:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(normalize(images))
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").double()
        correct += (logits.argmax(1) == labels).sum()
    model.train(was_training)
    n = len(val_set)
    return {"top1": 100.0 * int(correct) / n, "loss": float(loss_sum) / n}


# ---------------------------------------------------------------------------------------------------------------
# outputs


def body_state_dict(model) -> dict:
    """The backbone body's tensors: everything but the classifier, under the keys a detector body uses."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}


def save_backbone(path: Path, model, cfg: PretrainConfig, top1: float) -> None:
    from safetensors.torch import save_file

    m = cfg.model
    # Metadata travels with the file, so weights found later on disk still say what they fit.
    metadata = {"producer": "rethink pretrain", "backbone": m.backbone, "norm": m.norm,
                "gn_groups": str(m.gn_groups), "top1": f"{top1:.2f}"}
    if m.backbone == "tiny":
        metadata.update(tiny_widths=",".join(map(str, m.tiny_widths)), tiny_depths=",".join(map(str, m.tiny_depths)))
    state = body_state_dict(model)
    atomic_save_with(path, lambda tmp: save_file(state, tmp, metadata=metadata))


# ---------------------------------------------------------------------------------------------------------------
# the loop


def _param_groups(model, s: PretrainSolverConfig):
    """No weight decay on norm parameters and biases, as in detection training."""
    norm_ids = bb.norm_parameter_ids(model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if id(p) in norm_ids or name.endswith(".bias") else decay).append(p)
    return [
        {"params": decay, "weight_decay": s.weight_decay},
        {"params": no_decay, "weight_decay": s.weight_decay_norm},
    ]


def pretrain(cfg: PretrainConfig, out: Path, progress: bool = True, stop_after: int | None = None) -> dict:
    """Pre-train (or resume, or skip if finished) the backbone of `cfg` in `out`; returns pretrain.json's content.

    stop_after: stop once this many iterations are done, exactly as SIGINT would (checkpoint saved, Interrupted
    raised); running again resumes. For tests of resume, and for splitting a long run into time-limited jobs.
    """
    out = Path(out)
    record_path = out / RECORD
    config_dict = cfgmod.to_dict(cfg)
    cfgmod.check_run_dir(out, cfg, "a pre-training run")
    if record_path.exists():
        record = read_json(record_path)
        if record.get("config") == config_dict:
            return record
        raise UserError(f"{record_path}: a finished pre-training with a different config; use another --out")

    run_start = time.perf_counter()
    device = resolve_device(cfg)  # reads cfg.device and cfg.model.norm, which both config kinds have
    dtype = amp_dtype(cfg, device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.deterministic

    train_set, val_set, cached = load_splits(cfg, progress)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(config_dict, sort_keys=False))

    m, d, s = cfg.model, cfg.data, cfg.solver
    torch.manual_seed(cfg.seed)
    model, _ = bb.build_resnet(m.backbone, m.norm, m.tiny_widths, m.tiny_depths, m.gn_groups,
                               num_classes=len(train_set.classes))
    bb.init_random(model)
    model.to(device)
    optimizer = torch.optim.SGD(_param_groups(model, s), lr=0.0, momentum=s.momentum)
    base_lr = sched.scaled_lr(s.base_lr, s.batch_size, REFERENCE_BATCH)
    max_iter = s.iters
    eval_points = set(sched.eval_iters(max_iter, cfg.eval_period))

    # Resume from the last checkpoint; metrics logged after it are redone by this run.
    start_iter = 0
    counts = {"images_seen": 0, "pixels_seen": 0}
    times = {"wall_time_s": 0.0, "train_time_s": 0.0, "data_time_s": 0.0, "eval_time_s": 0.0}
    last_eval = None
    # Sums over the current log period; checkpointed too, so a resumed run logs the same lines.
    period = {"iters": 0, "images": 0, "loss": 0.0, "correct": 0, "time_s": 0.0, "data_s": 0.0}
    resumed = ckpt.latest(out)
    if resumed is not None:
        start_iter, path = resumed
        state = ckpt.load(path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        ckpt.set_rng_state(state["rng"])
        counts.update(state["counts"])
        times.update(state["times"])
        last_eval = state.get("last_eval")
        period.update(state["period"])
        del state
        kept = [r for r in read_jsonl(out / "metrics.jsonl") if r.get("iter", 0) <= start_iter]
        atomic_write_text(out / "metrics.jsonl", "".join(_jsonl(r) for r in kept))
    else:
        atomic_write_text(out / "metrics.jsonl", "")
    log = RunLog(out)

    # The batch of iteration k is the sampler's (seeded permutations, flips) plus crops drawn from a generator
    # seeded by (seed, k): a function of k alone, so a resume needs no data-pipeline state.
    sampler = InfiniteSampler(len(train_set), s.batch_size, cfg.seed, d.hflip_prob, start_iter)
    data_iter = None
    if not cached:
        loader = torch.utils.data.DataLoader(
            train_set, batch_sampler=sampler, num_workers=d.num_workers, collate_fn=collate_items,
            pin_memory=device.type == "cuda", persistent_workers=d.num_workers > 0,
            prefetch_factor=4 if d.num_workers > 0 else None,
        )
        data_iter = iter(loader)
    normalize = Normalize(device)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=s.label_smoothing)
    pixels_per_image = d.image_size * d.image_size

    def elapsed_times():
        now = time.perf_counter()
        return {**times, "wall_time_s": times["wall_time_s"] + now - run_start}

    def save_checkpoint(it):
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "iter": it,
            "rng": ckpt.rng_state(),
            "counts": dict(counts),
            "times": elapsed_times(),
            "last_eval": last_eval,
            "period": {**period, "loss": float(loss_sum), "correct": int(correct_sum)},
            "config": config_dict,
        }
        # Only the newest is kept: it is all a resume needs, and backbone.safetensors is the product.
        ckpt.save(out, it, state, keep_last=1)

    # Summed on the device: no CPU-GPU sync per iteration, only at log time.
    loss_sum = torch.tensor(period["loss"], dtype=torch.float64, device=device)
    correct_sum = torch.tensor(period["correct"], dtype=torch.int64, device=device)
    bar = tqdm(total=max_iter, initial=start_iter, disable=not progress, dynamic_ncols=True, desc=out.name,
               unit="it", mininterval=1.0)
    model.train()
    with _Signals() as signals:
        for it in range(start_iter, max_iter):
            lr = cosine_lr(it, base_lr, s.warmup_iters, max_iter)
            for group in optimizer.param_groups:
                group["lr"] = lr

            t_iter = time.perf_counter()
            if cached:
                batch = sampler.batch(it)
                index = torch.tensor([i for i, _ in batch])
                images, labels = train_set.images[index], train_set.labels[index]
                flips = torch.tensor([f for _, f in batch], dtype=torch.bool)
            else:
                images, labels, flips = next(data_iter)
            crops = torch.Generator().manual_seed(cfg.seed * 1_000_003 + it)
            images = augment(images, flips, d.crop_padding, crops)
            images = normalize(images.to(device, non_blocking=True))
            labels = labels.to(device, non_blocking=True)
            data_s = time.perf_counter() - t_iter

            with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(images)
            loss = criterion(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # Throughput counts the iterations themselves (data + step), not logging, evaluation or checkpoints.
            # On CPU the step is done here; on CUDA the sum over many iterations is still right (queue back-pressure).
            step_s = time.perf_counter() - t_iter
            times["train_time_s"] += step_s
            times["data_time_s"] += data_s

            done = it + 1
            n = len(labels)
            counts["images_seen"] += n
            counts["pixels_seen"] += n * pixels_per_image
            loss_sum += loss.detach().double()
            correct_sum += (logits.detach().argmax(1) == labels).sum()
            period["iters"] += 1
            period["images"] += n
            period["time_s"] += step_s
            period["data_s"] += data_s
            bar.update(1)

            if done % cfg.log_period == 0 or done == max_iter:
                mean_loss = float(loss_sum) / period["iters"]
                if not math.isfinite(mean_loss):
                    bar.close()
                    log.close()
                    raise RunFailed(
                        f"{out}: non-finite loss between iterations {done - period['iters'] + 1} and {done}; "
                        "lower solver.base_lr or lengthen solver.warmup_iters"
                    )
                row = {"type": "train", "iter": done, "loss": mean_loss, "lr": lr,
                       "train_top1": 100.0 * int(correct_sum) / period["images"],
                       "img_per_s": period["images"] / period["time_s"] if period["time_s"] > 0 else 0.0,
                       "data_fraction": period["data_s"] / period["time_s"] if period["time_s"] > 0 else 0.0,
                       **counts}
                log.write(row)
                bar.set_postfix(loss=f"{mean_loss:.3f}", lr=f"{lr:.3g}", img_s=f"{row['img_per_s']:.0f}")
                loss_sum.zero_()
                correct_sum.zero_()
                period = {"iters": 0, "images": 0, "loss": 0.0, "correct": 0, "time_s": 0.0, "data_s": 0.0}

            if done in eval_points:
                t0 = time.perf_counter()
                last_eval = evaluate_top1(model, val_set, normalize, device, s.batch_size, d.num_workers, dtype)
                times["eval_time_s"] += time.perf_counter() - t0
                log.write({"type": "eval", "iter": done, **last_eval})
                bar.write(f"{out.name} iter {done}: val top-1 {last_eval['top1']:.2f}%")

            stop = signals.stop or (stop_after is not None and done >= stop_after and done < max_iter)
            if done % cfg.checkpoint_period == 0 or done == max_iter or stop:
                save_checkpoint(done)
            if stop and done < max_iter:
                bar.close()
                log.close()
                why = signals.stop or f"stop_after={stop_after}"
                raise Interrupted(f"{out}: stopped by {why} at iteration {done}; checkpoint saved, "
                                  "run the same command to resume")
    bar.close()
    log.close()

    # The last iteration always evaluates before its checkpoint is written, so a run killed after that checkpoint
    # but before its record resumes here with the final evaluation restored from the checkpoint.
    save_backbone(out / WEIGHTS, model, cfg, last_eval["top1"])
    final_times = elapsed_times()
    record = {
        "top1": last_eval["top1"],
        "val_loss": last_eval["loss"],
        "iters": max_iter,
        "batch_size": s.batch_size,
        "images_seen": counts["images_seen"],
        "pixels_seen": counts["pixels_seen"],
        "epochs": counts["images_seen"] / len(train_set),
        "train_images": len(train_set),
        "val_images": len(val_set),
        **final_times,
        "img_per_s": counts["images_seen"] / final_times["train_time_s"] if final_times["train_time_s"] > 0 else 0.0,
        "data_fraction": final_times["data_time_s"] / final_times["train_time_s"] if final_times["train_time_s"] > 0
        else 0.0,
        "cached_images": cached,
        "device": device.type,
        "threads": torch.get_num_threads(),
        "weights": WEIGHTS,
        "config": config_dict,
        "classes": train_set.classes,
    }
    atomic_write_json(record_path, record)  # last: its presence means the run is complete
    return record


def _jsonl(row) -> str:
    return json.dumps(row, sort_keys=True) + "\n"
