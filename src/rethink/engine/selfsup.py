"""Self-supervised pre-training of a backbone on unlabelled images: MoCo v2 and DenseCL, built from lightly's parts.

`rethink pretrain CONFIG --out DIR` with `method: moco_v2` or `method: densecl` learns without labels, in the same
loop as supervised pre-training (engine/loop.py: checkpoints, resume, signals, metrics.jsonl, TensorBoard, progress
bar) and writes the same outputs: `DIR/backbone.safetensors` (the body keys a detector loads with `init:`) and
`DIR/pretrain.json` (method, label, images, epochs, pixels: what the pre-training cost).

- MoCo v2 (Chen et al. 2020): a query encoder (backbone + 2-layer MLP head) and a key encoder that is its moving
  average; InfoNCE between the two views of each image, with a memory bank of past keys as negatives.
- DenseCL (Wang et al. 2021): MoCo v2 plus a dense head on the res5 feature map; each query location is paired with
  the key location whose backbone feature is most similar, and a second InfoNCE contrasts those local embeddings.
  Chosen as the dense method because it is MoCo v2 plus one loss (the comparison isolates what the dense term adds)
  and it was designed for detection transfer (+1.1 AP on COCO over MoCo v2 at under 1% extra cost).

lightly supplies the heads (MoCoProjectionHead, DenseCLProjectionHead), the loss and its memory bank (NTXentLoss),
the momentum update (update_momentum), the dense matching (select_most_similar), the augmentations
(MoCoV2Transform / DenseCLTransform), the kNN vote (knn_predict) and the collapse measure (std_of_l2_normalized).

Input: any folder of images (nested folders included, class folders ignored) or a COCO annotations file whose images
are used and whose annotations are not: a target's own training images, pre-trained on in place.

Quality signal without labels: with a labelled set as `data.val`, an ImageFolder (the bundled source's val split) or
a COCO file whose boxes are cropped (the target's own objects, which every detection user has labels for), the
linear-probe and kNN accuracies of the backbone's pooled features, by two-fold cross-validation, at every evaluation
and once before training (random init's features, the baseline); without one, the loss. The linear probe is the
headline: on the bundled benchmark random init's features make a strong kNN baseline that colour-invariant
self-supervised features fall below while a linear probe on them beats it (docs/pretraining.md).
Collapse (embeddings all alike) is measured on every log period and reported: a warning on stderr, the flag in
pretrain.json.

Resume: the views of iteration k are drawn with the global RNGs seeded by (seed, k), so a resumed run sees exactly
the batches of the uninterrupted one; the memory banks (buffers lightly does not put in the state_dict) are saved
in every checkpoint.
"""

import copy
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from tqdm import tqdm

from rethink import config as cfgmod
from rethink import schedule as sched
from rethink.config import PRETRAIN_RECORD, PRETRAIN_REFERENCE_BATCH, PRETRAIN_WEIGHTS, PretrainConfig, source_label
from rethink.data.images import UnlabelledImages, labelled_probe, list_images, use_cache
from rethink.data.sampling import InfiniteSampler
from rethink.engine import checkpoint as ckpt
from rethink.engine.loop import (Periods, PeriodMeter, RunClock, amp_dtype, fail_run, open_run, param_groups,
                                 restore, run_loop, setup_device)
from rethink.errors import UserError
from rethink.fileio import atomic_save_with, atomic_write_json, atomic_write_text
from rethink.models import backbone as bb
from rethink.models.detector import IMAGE_MEAN, IMAGE_STD, Normalize

VIEWS = 2  # both views of every image go through an encoder: the pixels counted per image


# ---------------------------------------------------------------------------------------------------------------
# data


class ViewBatches(torch.utils.data.Dataset):
    """Item k: the two augmented views of iteration k's batch. A function of (seed, k) alone, wherever it runs
    (DataLoader workers with data.num_workers > 0 augment the next batches while the model trains)."""

    def __init__(self, images: UnlabelledImages, sampler: InfiniteSampler, transform, seed: int):
        self.images, self.sampler, self.transform, self.seed = images, sampler, transform, seed

    def __len__(self) -> int:
        return 2**62  # indexed by iteration

    def __getitem__(self, it: int):
        images = self.images.batch([i for i, _ in self.sampler.batch(it)])
        # lightly's transforms draw from torch's and numpy's global generators: seeding them by (seed, it) makes
        # the views of iteration `it` a function of it alone, so a resumed run draws the same ones
        draw = (self.seed * 1_000_003 + it) % 2**32
        torch.manual_seed(draw)
        np.random.seed(draw)
        pairs = [self.transform(Image.fromarray(img.permute(1, 2, 0).numpy())) for img in images]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def build_transform(cfg: PretrainConfig):
    """lightly's two-view augmentation of the method, normalized with the detector's mean/std (the features are
    fine-tuned on images normalized that way)."""
    from lightly.transforms import DenseCLTransform, MoCoV2Transform

    x = cfg.ssl
    kind = DenseCLTransform if cfg.method == "densecl" else MoCoV2Transform
    return kind(input_size=cfg.data.image_size, min_scale=x.min_scale, cj_strength=x.cj_strength,
                hf_prob=cfg.data.hflip_prob, normalize={"mean": list(IMAGE_MEAN), "std": list(IMAGE_STD)})


# ---------------------------------------------------------------------------------------------------------------
# model


def feature_map(resnet, x: torch.Tensor) -> torch.Tensor:
    """The res5 feature map of a torchvision-layout ResNet (TinyResNet has the same attribute names)."""
    x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
    return resnet.layer4(resnet.layer3(resnet.layer2(resnet.layer1(x))))


class Encoder(torch.nn.Module):
    """Backbone + projection head (+ DenseCL's dense head): the query encoder, and, copied, the key encoder."""

    def __init__(self, backbone, channels: int, cfg: PretrainConfig):
        from lightly.models.modules import DenseCLProjectionHead, MoCoProjectionHead

        super().__init__()
        x = cfg.ssl
        self.backbone = backbone
        if cfg.method == "densecl":
            self.head = DenseCLProjectionHead(channels, x.proj_hidden_dim, x.proj_dim)
            self.dense_head = DenseCLProjectionHead(channels, x.proj_hidden_dim, x.proj_dim)
        else:
            self.head = MoCoProjectionHead(channels, x.proj_hidden_dim, x.proj_dim)
            self.dense_head = None

    def forward(self, images):
        """(res5 features as (B, H*W, C), global embeddings (B, D), dense embeddings (B, H*W, D) or None)."""
        maps = feature_map(self.backbone, images)
        local = maps.flatten(2).permute(0, 2, 1)
        z = self.head(maps.mean((2, 3)))
        return local, z, self.dense_head(local) if self.dense_head is not None else None


def pooled_features(backbone, images: torch.Tensor) -> torch.Tensor:
    return feature_map(backbone, images).mean((2, 3))


# ---------------------------------------------------------------------------------------------------------------
# signals: kNN accuracy and collapse


@torch.no_grad()
def probe_features(backbone, probe_set, normalize: Normalize, device, batch_size: int) -> torch.Tensor:
    """The backbone's pooled res5 features of every image of the labelled probe set, without augmentation."""
    was_training = backbone.training
    backbone.eval()
    features = [pooled_features(backbone, normalize(probe_set.images[i:i + batch_size].to(device))).float().cpu()
                for i in range(0, len(probe_set), batch_size)]
    backbone.train(was_training)
    return torch.cat(features)


def knn_predict_labels(bank, bank_labels, query, classes: int, k: int, t: float) -> torch.Tensor:
    """lightly's weighted kNN vote on L2-normalized features."""
    from lightly.utils.benchmarking import knn_predict

    bank, query = F.normalize(bank, dim=1), F.normalize(query, dim=1)
    return knn_predict(query, bank.T.contiguous(), bank_labels, classes, knn_k=min(k, len(bank)), knn_t=t)[:, 0]


def linear_predict_labels(train, train_labels, test, classes: int, l2: float = 1e-3) -> torch.Tensor:
    """A linear probe: multinomial logistic regression on standardized frozen features (L-BFGS to convergence,
    a small L2 penalty), the standard linear evaluation of self-supervised features, at the scale of a probe set."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    train, test = (train - mean) / std, (test - mean) / std
    weight = torch.zeros(train.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    x, y = train.double(), train_labels
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y) + l2 * (weight ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return (test.double() @ weight + bias).argmax(1)


def probe_accuracies(features: torch.Tensor, labels: torch.Tensor, classes: int, k: int, t: float) -> dict:
    """kNN and linear-probe top-1 (in %) by two-fold cross-validation: one half of the images (a fixed random
    half, whatever order the set lists them in) is classified by a classifier fitted on the other half, and the other
    way round (no image is ever its own neighbour or training example)."""
    even = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)) % 2 == 0
    correct = {"knn_top1": 0, "probe_top1": 0}
    for fit, held in ((even, ~even), (~even, even)):
        knn = knn_predict_labels(features[fit], labels[fit], features[held], classes, k, t)
        linear = linear_predict_labels(features[fit], labels[fit], features[held], classes)
        correct["knn_top1"] += int((knn == labels[held]).sum())
        correct["probe_top1"] += int((linear == labels[held]).sum())
    return {key: 100.0 * n / len(labels) for key, n in correct.items()}


def embedding_spread(z: torch.Tensor) -> float:
    """lightly's std of the L2-normalized embeddings, times sqrt(dim): about 1 when the embeddings spread over the
    sphere, 0 when they have collapsed to one vector."""
    from lightly.utils.debug import std_of_l2_normalized

    return float(std_of_l2_normalized(z.detach().float())) * math.sqrt(z.shape[1])


def track_collapse(collapse: dict, spread: float, done: int, threshold: float, last_iter: int) -> dict:
    """The collapse record after a log period whose mean embedding spread is `spread`.

    Collapsed: the spread fell below `threshold` after it had risen above it, or the run ends below it. A tiny
    GroupNorm backbone's random-init embeddings start nearly alike and spread as it learns, so a low start is no
    collapse; a spread that rises again clears the flag (it is not what the run passes on)."""
    peak = max(collapse["peak_std"], spread)
    out = {**collapse, "embedding_std": spread, "peak_std": peak}
    if spread >= threshold:
        out.update(collapsed=False, collapse_iter=None)
    elif not collapse["collapsed"] and (peak >= threshold or done == last_iter):
        out.update(collapsed=True, collapse_iter=done)
    return out


# ---------------------------------------------------------------------------------------------------------------
# the run


def pretrain_selfsup(cfg: PretrainConfig, out: Path, config_dict: dict, progress: bool = True,
                     stop_at: int | None = None) -> dict:
    """Pre-train (or resume) without labels in `out`; returns pretrain.json's content. Called by
    engine.pretrain.pretrain, which has already returned a finished run's record."""
    from lightly.models.utils import deactivate_requires_grad

    run_start = time.perf_counter()
    device = setup_device(cfg.device, cfg.model.norm, cfg.threads, cfg.deterministic)
    d, s, m = cfg.data, cfg.solver, cfg.model
    train_set = UnlabelledImages(list_images(cfg), d.image_size)
    if cfg.ssl.memory_bank_size >= len(train_set):
        raise UserError(f"ssl.memory_bank_size: {cfg.ssl.memory_bank_size} keys for {len(train_set)} images in "
                        f"{d.train}: every image would be among its own negatives; use a smaller bank (or 0)")
    val_set = None
    if d.val:
        val_set = labelled_probe(d.val, d.val_images, d.image_size)
        if len(val_set.classes) < 2 or len(val_set) < 4:
            raise UserError(f"data.val: {d.val} needs 2+ classes and 4+ images for the probe accuracies")
        val_set.decode_all(progress)
    cached = use_cache(d.cache_images, train_set.nbytes())
    if cached:
        train_set.decode_all(progress)  # an unreadable image fails here, before any training
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(config_dict, sort_keys=False))

    torch.manual_seed(cfg.seed)
    backbone, channels = bb.build_resnet(m.backbone, m.norm, m.tiny_widths, m.tiny_depths, m.gn_groups)
    bb.init_random(backbone)
    query = Encoder(backbone, channels[-1], cfg).to(device)
    key = copy.deepcopy(query)
    deactivate_requires_grad(key)  # the key encoder only follows the query encoder's moving average
    optimizer = torch.optim.SGD(param_groups(query, s.weight_decay, s.weight_decay_norm), lr=0.0, momentum=s.momentum)
    base_lr = sched.scaled_lr(s.base_lr, s.batch_size, PRETRAIN_REFERENCE_BATCH)
    start_iter, state, _ = open_run(out)
    steps = SelfSupSteps(cfg, out, query, key, optimizer, train_set, val_set, device, start_iter, state, run_start)
    del state
    periods = Periods(s.iters, cfg.log_period, frozenset(sched.eval_iters(s.iters, cfg.eval_period)),
                      cfg.checkpoint_period, keep_last=1)

    def get_lr(it: int) -> float:
        return sched.cosine_lr(it, base_lr, s.warmup_iters, s.iters)

    run_loop(steps, optimizer, get_lr, out, start_iter, periods, progress=progress, stop_at=stop_at)

    save_backbone(out / PRETRAIN_WEIGHTS, query.backbone, cfg, steps.last_eval)
    record = steps.record(len(train_set), len(val_set) if val_set is not None else 0, cached, config_dict)
    atomic_write_json(out / PRETRAIN_RECORD, record)  # last: its presence means the run is complete
    return record


def save_backbone(path: Path, backbone, cfg: PretrainConfig, last_eval: dict) -> None:
    from safetensors.torch import save_file

    m = cfg.model
    metadata = {"producer": "rethink pretrain", "method": cfg.method, "backbone": m.backbone, "norm": m.norm,
                "gn_groups": str(m.gn_groups)}
    for key in ("knn_top1", "probe_top1"):
        if last_eval.get(key) is not None:
            metadata[key] = f"{last_eval[key]:.2f}"
    if m.backbone == "tiny":
        metadata.update(tiny_widths=",".join(map(str, m.tiny_widths)), tiny_depths=",".join(map(str, m.tiny_depths)))
    state = bb.body_state_dict(backbone)
    atomic_save_with(path, lambda tmp: save_file(state, tmp, metadata=metadata))


class SelfSupSteps:
    """One self-supervised iteration, and the log line, evaluation and checkpoint state the loop asks for."""

    headline = "probe_top1"
    shown = ("loss", "lr", "img_per_s")

    def __init__(self, cfg: PretrainConfig, out: Path, query, key, optimizer, train_set: UnlabelledImages,
                 val_set, device, start_iter: int, state: dict | None, run_start: float):
        from lightly.loss import NTXentLoss

        self.cfg, self.out, self.query, self.key, self.optimizer = cfg, out, query, key, optimizer
        self.train_set, self.val_set, self.device = train_set, val_set, device
        self.dtype = amp_dtype(device, cfg.solver.amp)
        x = cfg.ssl
        bank = (x.memory_bank_size, x.proj_dim) if x.memory_bank_size else 0
        self.criterion = NTXentLoss(temperature=x.temperature, memory_bank_size=bank).to(device)
        self.criterion_dense = (NTXentLoss(temperature=x.temperature, memory_bank_size=bank).to(device)
                                if cfg.method == "densecl" else None)
        self.counts = {"images_seen": 0, "pixels_seen": 0}
        self.normalize = Normalize(device)
        self.headline = "probe_top1" if val_set is not None else "loss"
        # collapse (track_collapse): whether, and at which log iteration, the embeddings' spread fell; the latest
        # spread and the highest so far
        self.collapse = {"collapsed": False, "collapse_iter": None, "embedding_std": None, "peak_std": 0.0}
        self.period = PeriodMeter(state["period"] if state is not None else None)
        self.clock = RunClock(state["times"] if state is not None else None, run_start)
        if state is not None:
            restore(state, {"query": query, "key": key}, optimizer)
            for criterion, banks in zip(self._criteria(), state["banks"]):
                criterion.memory_bank.bank.copy_(banks["bank"])
                criterion.memory_bank.bank_ptr.copy_(banks["bank_ptr"])
            self.counts.update(state["counts"])
            self.collapse.update(state["collapse"])
            self.last_eval, self.signals_init, self.last_loss = (state["last_eval"], state["signals_init"],
                                                                 state["last_loss"])
        else:
            self.last_eval, self.last_loss = {}, None
            t0 = time.perf_counter()
            # random init's features: the baseline the pre-trained features must beat
            self.signals_init = self._signals() if val_set is not None else {}
            self.clock.add("eval_time_s", time.perf_counter() - t0)
        sampler = InfiniteSampler(len(train_set), cfg.solver.batch_size, cfg.seed, 0.0, start_iter)
        self.batches = ViewBatches(train_set, sampler, build_transform(cfg), cfg.seed)
        self.data_iter = None
        workers = cfg.data.num_workers
        if workers > 0:  # the loop asks for iterations start_iter, start_iter + 1, ... in order
            self.data_iter = iter(torch.utils.data.DataLoader(
                self.batches, batch_size=None, sampler=range(start_iter, cfg.solver.iters), num_workers=workers,
                prefetch_factor=2, pin_memory=device.type == "cuda"))
        query.train()
        key.train()

    def _criteria(self):
        return [c for c in (self.criterion, self.criterion_dense) if c is not None]

    def _signals(self) -> dict:
        """kNN and linear-probe top-1 of the query backbone's features on the labelled probe set."""
        x = self.cfg.ssl
        features = probe_features(self.query.backbone, self.val_set, self.normalize, self.device,
                                  self.cfg.solver.batch_size)
        return probe_accuracies(features, self.val_set.labels, len(self.val_set.classes), x.knn_k, x.knn_t)

    def _views(self, it: int):
        view_q, view_k = next(self.data_iter) if self.data_iter is not None else self.batches[it]
        return view_q.to(self.device, non_blocking=True), view_k.to(self.device, non_blocking=True)

    def step(self, it: int) -> None:
        from lightly.models.utils import select_most_similar, update_momentum

        t_iter = time.perf_counter()
        view_q, view_k = self._views(it)
        data_s = time.perf_counter() - t_iter
        update_momentum(self.query, self.key, self.cfg.ssl.momentum)
        with torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            feat_q, z_q, dense_q = self.query(view_q)
            with torch.no_grad():
                feat_k, z_k, dense_k = self.key(view_k)
        loss_global = self.criterion(z_q.float(), z_k.float())
        loss, loss_dense = loss_global, None
        if self.criterion_dense is not None:
            # each query location's positive: the key location whose backbone feature is most similar (DenseCL)
            dense_k = select_most_similar(feat_q.detach().float(), feat_k.float(), dense_k.float())
            loss_dense = self.criterion_dense(dense_q.float().flatten(end_dim=1), dense_k.flatten(end_dim=1))
            w = self.cfg.ssl.dense_weight
            loss = (1 - w) * loss_global + w * loss_dense
        if not bool(torch.isfinite(loss)):  # the policy of every training (engine/loop.py fail_run)
            terms = {"loss_global": float(loss_global.detach())}
            if loss_dense is not None:
                terms["loss_dense"] = float(loss_dense.detach())
            fail_run(self.out, it, "non-finite loss", terms)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        step_s = time.perf_counter() - t_iter
        self.clock.add("train_time_s", step_s)
        self.clock.add("data_time_s", data_s)
        n, size = len(view_q), self.cfg.data.image_size
        self.counts["images_seen"] += n
        self.counts["pixels_seen"] += n * VIEWS * size * size
        # float() syncs with the device once per iteration: negligible next to the CPU-side augmentation
        self.period.add(n, step_s, data_s, loss=float(loss.detach()), loss_global=float(loss_global.detach()),
                        loss_dense=float(loss_dense.detach()) if loss_dense is not None else 0.0,
                        spread=embedding_spread(z_q))

    def log_row(self, done: int, lr: float) -> dict:
        p = self.period
        mean_loss = p.mean("loss")
        spread = p.mean("spread")
        row = {"type": "train", "iter": done, "loss": mean_loss, "loss_global": p.mean("loss_global"), "lr": lr,
               "embedding_std": spread, **p.rates(), **self.counts}
        if self.criterion_dense is not None:
            row["loss_dense"] = p.mean("loss_dense")
        self.last_loss = mean_loss
        was = self.collapse["collapsed"]
        self.collapse = track_collapse(self.collapse, spread, done, self.cfg.ssl.collapse_std, self.cfg.solver.iters)
        if self.collapse["collapsed"] and not was:
            tqdm.write(f"{self.out}: warning: the embeddings have collapsed (std {spread:.3f} < ssl.collapse_std "
                       f"{self.cfg.ssl.collapse_std:g} at iteration {done}): all images map to nearly the same "
                       "vector; lower solver.base_lr or ssl.momentum, or raise ssl.temperature", file=sys.stderr)
        p.reset()
        return row

    def evaluate(self, done: int) -> dict:
        t0 = time.perf_counter()
        self.last_eval = {**(self._signals() if self.val_set is not None else {}),
                          "embedding_std": self.collapse["embedding_std"]}
        if self.val_set is None:  # no labels: the signal is the loss of the latest log period
            self.last_eval["loss"] = self.last_loss
        self.clock.add("eval_time_s", time.perf_counter() - t0)
        return {"type": "eval", "iter": done, **{k: v for k, v in self.last_eval.items() if v is not None}}

    def close(self) -> None:
        self.data_iter = None  # a DataLoader iterator shuts its workers down when it goes

    def state_dict(self, done: int) -> dict:
        return {"query": self.query.state_dict(), "key": self.key.state_dict(),
                "optimizer": self.optimizer.state_dict(), "iter": done, "rng": ckpt.rng_state(),
                "banks": [{"bank": c.memory_bank.bank.clone(), "bank_ptr": c.memory_bank.bank_ptr.clone()}
                          for c in self._criteria()],
                "counts": dict(self.counts), "times": self.clock.elapsed(), "collapse": dict(self.collapse),
                "last_eval": self.last_eval, "signals_init": self.signals_init, "last_loss": self.last_loss,
                "period": self.period.state_dict(), "config": cfgmod.to_dict(self.cfg)}

    def record(self, train_images: int, val_images: int, cached: bool, config_dict: dict) -> dict:
        """pretrain.json: the signals (kNN and linear-probe accuracies, random init's, collapse) and what the
        pre-training cost."""
        s, times = self.cfg.solver, self.clock.elapsed()
        train_s = times["train_time_s"]
        return {
            "method": self.cfg.method, "label": source_label(self.cfg),
            "knn_top1": self.last_eval.get("knn_top1"), "knn_top1_init": self.signals_init.get("knn_top1"),
            "probe_top1": self.last_eval.get("probe_top1"), "probe_top1_init": self.signals_init.get("probe_top1"),
            "loss": self.last_loss, **self.collapse,
            "iters": s.iters, "batch_size": s.batch_size, "images_seen": self.counts["images_seen"],
            "pixels_seen": self.counts["pixels_seen"], "views_per_image": VIEWS,
            "epochs": self.counts["images_seen"] / train_images, "train_images": train_images,
            "val_images": val_images, **times,
            "img_per_s": self.counts["images_seen"] / train_s if train_s > 0 else 0.0,
            "data_fraction": times["data_time_s"] / train_s if train_s > 0 else 0.0,
            "cached_images": cached, "device": self.device.type, "threads": torch.get_num_threads(),
            "weights": PRETRAIN_WEIGHTS, "config": config_dict,
        }
