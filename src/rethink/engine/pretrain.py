"""Supervised classification pre-training of a backbone: the "ImageNet pre-training" arm, on any ImageFolder.

`rethink pretrain CONFIG --out DIR` trains `build_resnet(..., num_classes=K)` to classify the K classes of an
ImageFolder dataset and writes `DIR/backbone.safetensors`: the body keys only (conv1, bn1, layer1..layer4, no
classifier), which a detection config loads with `init: DIR/backbone.safetensors`. Its cost (images, pixels,
wall time) goes into `DIR/pretrain.json`, because the paper counts pre-training in the comparison.

The loop is detection's (engine/loop.py): iteration-based, a seeded infinite sampler, a checkpoint every
`checkpoint_period` iterations, SIGINT/SIGTERM save and stop, the same command resumes from the last checkpoint,
and a finished run is not trained again. This module supplies the data, the model and one iteration
(`PretrainSteps`).

Data: every image is brought to `image_size` x `image_size` once (shorter side resized, centre square kept), and
the augmentation - random crop from the image padded by `crop_padding` black pixels, horizontal flip - is done on
whole uint8 batches. Small datasets (such as the bundled source set of 32x32 images) are decoded once into one
tensor in memory, which takes data loading almost out of the training time (measured in
benchmarks/bench_pretrain.py, figures in benchmarks/README.md). Larger datasets are read per batch by DataLoader
workers and augmented the same way. The batch of iteration k and its
augmentation depend only on (seed, k), so a resumed run sees exactly the batches the uninterrupted one would.

LR schedule: linear warm-up, then a cosine decay to zero at the last iteration. Cosine rather than steps because a
pre-training run has one length (no family of schedules that must share a trajectory, as detection's Nx do) and
cosine has no drop points to tune for each length. The LR is given for a batch of 256 and scaled linearly.
"""

import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from rethink import config as cfgmod
from rethink import schedule as sched
from rethink.config import PRETRAIN_RECORD, PRETRAIN_REFERENCE_BATCH, PRETRAIN_WEIGHTS, PretrainConfig, source_label
from rethink.data.images import ImageSet, augment, collate_items, load_splits
from rethink.data.sampling import InfiniteSampler
from rethink.engine import checkpoint as ckpt
from rethink.engine.loop import (Periods, PeriodMeter, RunClock, amp_dtype, fail_run, open_run, param_groups,
                                 refuse_failed, restore, run_loop, setup_device)
from rethink.engine.selfsup import pretrain_selfsup
from rethink.errors import UserError
from rethink.fileio import atomic_save_with, atomic_write_json, atomic_write_text, read_json
from rethink.models import backbone as bb
from rethink.models.detector import Normalize



# ---------------------------------------------------------------------------------------------------------------
# data


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


def save_backbone(path: Path, model, cfg: PretrainConfig, top1: float) -> None:
    from safetensors.torch import save_file

    m = cfg.model
    # Metadata travels with the file, so weights found later on disk still say what they fit.
    metadata = {"producer": "rethink pretrain", "backbone": m.backbone, "norm": m.norm,
                "gn_groups": str(m.gn_groups), "top1": f"{top1:.2f}"}
    if m.backbone == "tiny":
        metadata.update(tiny_widths=",".join(map(str, m.tiny_widths)), tiny_depths=",".join(map(str, m.tiny_depths)))
    state = bb.body_state_dict(model)
    atomic_save_with(path, lambda tmp: save_file(state, tmp, metadata=metadata))


# ---------------------------------------------------------------------------------------------------------------
# the run


def pretrain(cfg: PretrainConfig, out: Path, progress: bool = True, stop_at: int | None = None) -> dict:
    """Pre-train (or resume, or skip if finished) the backbone of `cfg` in `out`; returns pretrain.json's content.

    stop_at: stop once this iteration is done, exactly as SIGINT would (checkpoint saved, Interrupted
    raised); running again resumes. For tests of resume, and for splitting a long run into time-limited jobs.
    """
    out = Path(out)
    record_path = out / PRETRAIN_RECORD
    config_dict = cfgmod.to_dict(cfg)
    cfgmod.check_run_dir(out, cfg, "a pre-training run")
    if record_path.exists():
        record = read_json(record_path)
        if record.get("config") == config_dict:
            return record
        raise UserError(f"{record_path}: a finished pre-training with a different config; use another --out")
    refuse_failed(out)
    if cfg.method != "supervised":  # learning without labels: engine/selfsup.py, in the same loop
        return pretrain_selfsup(cfg, out, config_dict, progress, stop_at)

    run_start = time.perf_counter()
    device = setup_device(cfg.device, cfg.model.norm, cfg.threads, cfg.deterministic)
    train_set, val_set, cached = load_splits(cfg, progress)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(config_dict, sort_keys=False))

    m, s = cfg.model, cfg.solver
    torch.manual_seed(cfg.seed)
    model, _ = bb.build_resnet(m.backbone, m.norm, m.tiny_widths, m.tiny_depths, m.gn_groups,
                               num_classes=len(train_set.classes))
    bb.init_random(model)
    model.to(device)
    optimizer = torch.optim.SGD(param_groups(model, s.weight_decay, s.weight_decay_norm), lr=0.0, momentum=s.momentum)
    base_lr = sched.scaled_lr(s.base_lr, s.batch_size, PRETRAIN_REFERENCE_BATCH)
    start_iter, state, _ = open_run(out)
    steps = PretrainSteps(cfg, out, model, optimizer, train_set, val_set, cached, device, start_iter, state, run_start)
    del state
    periods = Periods(s.iters, cfg.log_period, frozenset(sched.eval_iters(s.iters, cfg.eval_period)),
                      cfg.checkpoint_period, keep_last=1)  # the newest is all a resume needs

    def get_lr(it: int) -> float:  # a pure function of the iteration
        return sched.cosine_lr(it, base_lr, s.warmup_iters, s.iters)

    run_loop(steps, optimizer, get_lr, out, start_iter, periods, progress=progress, stop_at=stop_at)

    # The last iteration always evaluates before its checkpoint is written, so a run killed after that checkpoint
    # but before its record resumes here with the final evaluation restored from the checkpoint.
    save_backbone(out / PRETRAIN_WEIGHTS, model, cfg, steps.last_eval["top1"])
    record = steps.record(len(train_set), len(val_set), cached, config_dict)
    atomic_write_json(record_path, record)  # last: its presence means the run is complete
    return record


class PretrainSteps:
    """One classification iteration (`step`), and the log line, evaluation and checkpoint state the loop asks for.

    The batch of iteration k is the sampler's (seeded permutations, flips) plus crops drawn from a generator
    seeded by (seed, k): a function of k alone, so a resume needs no data-pipeline state.
    """

    headline = "top1"
    shown = ("loss", "lr", "img_per_s")

    def __init__(self, cfg: PretrainConfig, out: Path, model, optimizer, train_set, val_set, cached: bool, device,
                 start_iter: int, state: dict | None, run_start: float):
        self.cfg, self.out, self.model, self.optimizer, self.device = cfg, out, model, optimizer, device
        self.train_set, self.val_set, self.cached = train_set, val_set, cached
        self.dtype = amp_dtype(device, cfg.solver.amp)
        self.counts = {"images_seen": 0, "pixels_seen": 0}
        self.last_eval = None
        if state is not None:
            restore(state, {"model": model}, optimizer)
            self.counts.update(state["counts"])
            self.last_eval = state.get("last_eval")
        self.period = PeriodMeter(state["period"] if state is not None else None)
        self.clock = RunClock(state["times"] if state is not None else None, run_start)
        d = cfg.data
        self.sampler = InfiniteSampler(len(train_set), cfg.solver.batch_size, cfg.seed, d.hflip_prob, start_iter)
        self.data_iter = None
        if not cached:
            self.data_iter = iter(torch.utils.data.DataLoader(
                train_set, batch_sampler=self.sampler, num_workers=d.num_workers, collate_fn=collate_items,
                pin_memory=device.type == "cuda", persistent_workers=d.num_workers > 0,
                prefetch_factor=4 if d.num_workers > 0 else None,
            ))
        self.normalize = Normalize(device)
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.solver.label_smoothing)
        model.train()

    def _batch(self, it: int):
        if self.cached:
            batch = self.sampler.batch(it)
            index = torch.tensor([i for i, _ in batch])
            images, labels = self.train_set.images[index], self.train_set.labels[index]
            flips = torch.tensor([f for _, f in batch], dtype=torch.bool)
        else:
            images, labels, flips = next(self.data_iter)
        crops = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + it)
        images = augment(images, flips, self.cfg.data.crop_padding, crops)
        return self.normalize(images.to(self.device, non_blocking=True)), labels.to(self.device, non_blocking=True)

    def step(self, it: int) -> None:
        t_iter = time.perf_counter()
        images, labels = self._batch(it)
        data_s = time.perf_counter() - t_iter
        with torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            logits = self.model(images)
        loss = self.criterion(logits.float(), labels)
        # A non-finite loss stops the run at this iteration, before the step spreads it into the weights: the
        # policy of every training (engine/loop.py fail_run), at the cost of one CPU-GPU sync per iteration.
        if not bool(torch.isfinite(loss)):
            fail_run(self.out, it, "non-finite loss", {"loss": float(loss.detach())})
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        # Throughput counts the iterations themselves (data + step), not logging, evaluation or checkpoints.
        # On CPU the step is done here; on CUDA the sum over many iterations is still right (queue back-pressure).
        step_s = time.perf_counter() - t_iter
        self.clock.add("train_time_s", step_s)
        self.clock.add("data_time_s", data_s)
        n = len(labels)
        size = self.cfg.data.image_size
        self.counts["images_seen"] += n
        self.counts["pixels_seen"] += n * size * size
        # summed on the device: no CPU-GPU sync per iteration, only at log time
        self.period.add(n, step_s, data_s, loss=loss.detach().double(),
                        correct=(logits.detach().argmax(1) == labels).sum())

    def log_row(self, done: int, lr: float) -> dict:
        p = self.period
        mean_loss = p.mean("loss")
        row = {"type": "train", "iter": done, "loss": mean_loss, "lr": lr,
               "train_top1": 100.0 * int(p.sums["correct"]) / p.images, **p.rates(), **self.counts}
        p.reset()
        return row

    def evaluate(self, done: int) -> dict:
        t0 = time.perf_counter()
        self.last_eval = evaluate_top1(self.model, self.val_set, self.normalize, self.device,
                                       self.cfg.solver.batch_size, self.cfg.data.num_workers, self.dtype)
        self.clock.add("eval_time_s", time.perf_counter() - t0)
        return {"type": "eval", "iter": done, **self.last_eval}

    def close(self) -> None:
        self.data_iter = None  # a DataLoader iterator shuts its workers down when it goes

    def state_dict(self, done: int) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "iter": done,
                "rng": ckpt.rng_state(), "counts": dict(self.counts), "times": self.clock.elapsed(),
                "last_eval": self.last_eval, "period": self.period.state_dict(),
                "config": cfgmod.to_dict(self.cfg)}

    def record(self, train_images: int, val_images: int, cached: bool, config_dict: dict) -> dict:
        """pretrain.json: the final top-1 and what the pre-training cost (the paper counts it)."""
        s, times = self.cfg.solver, self.clock.elapsed()
        train_s = times["train_time_s"]
        return {
            "method": self.cfg.method, "label": source_label(self.cfg),
            "top1": self.last_eval["top1"], "val_loss": self.last_eval["loss"], "iters": s.iters,
            "batch_size": s.batch_size, "images_seen": self.counts["images_seen"],
            "pixels_seen": self.counts["pixels_seen"], "epochs": self.counts["images_seen"] / train_images,
            "train_images": train_images, "val_images": val_images, **times,
            "img_per_s": self.counts["images_seen"] / train_s if train_s > 0 else 0.0,
            "data_fraction": times["data_time_s"] / train_s if train_s > 0 else 0.0,
            "cached_images": cached, "device": self.device.type, "threads": torch.get_num_threads(),
            "weights": PRETRAIN_WEIGHTS, "config": config_dict, "classes": self.train_set.classes,
        }
