"""The training run: one detector, one init, one schedule, written out as a plain loop.

Iteration-based (detectron2 style): an infinite seeded sampler, the LR set from the schedule module at every
iteration, evaluation every `eval_period` iterations and at the end, a full checkpoint every
`checkpoint_period` iterations (and at fork points and the end). The run directory is the only state:
running the same command again resumes from the last checkpoint, and a finished run is not trained again.
"""

import json
import os
import signal
import threading
import time
from pathlib import Path

import torch
from tqdm import tqdm

from rethink import config as cfgmod
from rethink import schedule as sched
from rethink.config import RunConfig
from rethink.data.coco import CocoDetection, collate, subset_image_ids, val_image_ids
from rethink.data.sampling import ImageKeyedSampler, InfiniteSampler, keyed_samplers, keyed_scale_choice  # noqa: F401
from rethink.data.validate import check_coco, check_train_size
from rethink.engine import checkpoint as ckpt
from rethink.engine import distributed
from rethink.engine.evaluate import evaluate
from rethink.engine.events import RunLog
from rethink.errors import Interrupted, RunFailed, UserError
from rethink.fileio import append_jsonl, atomic_write_json, atomic_write_text, read_json, read_jsonl
from rethink.models import backbone as bb
from rethink.models.detector import build_detector, init_from_source, set_mode_sizes


def resolve_device(cfg: RunConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("device: cuda was asked for, but no CUDA device is available here")
        return torch.device("cuda")
    if cfg.model.norm == "syncbn":
        raise UserError(
            "model.norm: syncbn needs CUDA (torch's SyncBatchNorm has no CPU implementation); "
            "on CPU use gn, which trains from scratch at any batch size"
        )
    return torch.device("cpu")


def amp_dtype(cfg: RunConfig, device: torch.device):
    if device.type != "cuda" or not cfg.solver.amp:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def load_datasets(cfg: RunConfig, progress: bool = False):
    """Validate both splits (clear errors before any training) and build the datasets."""
    d = cfg.data
    with_masks = cfg.model.detector == "mask_rcnn"
    train_check = check_coco(Path(d.train.images), Path(d.train.annotations), role="train", require_masks=with_masks)
    val_check = check_coco(Path(d.val.images), Path(d.val.annotations), role="val", require_masks=with_masks)
    check_train_size(train_check, d.train_size)
    if {c["id"] for c in train_check.coco["categories"]} != {c["id"] for c in val_check.coco["categories"]}:
        raise UserError(f"{d.val.annotations}: categories differ from the training set's ({d.train.annotations})")
    train_ids = subset_image_ids(train_check, d.train_size, d.subset_seed)
    train_set = CocoDetection(train_check, train_ids, with_masks, d.cache_images, train=True)
    val_set = CocoDetection(val_check, val_image_ids(val_check, d.val_size), with_masks, d.cache_images, train=False)
    return train_set, val_set, train_check, val_check


def _param_groups(model, cfg: RunConfig):
    """No weight decay on norm parameters and biases (the paper's recipe, as detectron2)."""
    norm_ids = bb.norm_parameter_ids(model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if id(p) in norm_ids or name.endswith(".bias") else decay).append(p)
    return [
        {"params": decay, "weight_decay": cfg.solver.weight_decay},
        {"params": no_decay, "weight_decay": cfg.solver.weight_decay_norm},
    ]


def _fail(out: Path, it: int, reason: str, losses: dict) -> None:
    if distributed.is_main():
        atomic_write_json(out / "FAILED", {"iter": it, "reason": reason, "losses": losses})
    raise RunFailed(f"{out}: {reason} at iteration {it} ({', '.join(f'{k}={v:.4g}' for k, v in losses.items())})")


def _restart_metrics(out: Path, keep_through: int, source: Path | None = None) -> None:
    """metrics.jsonl as of iteration `keep_through`: lines logged after the checkpoint are redone by the resume.

    For a forked run `source` is the trunk's metrics: its curve up to the fork point becomes the start of ours.
    """
    rows = read_jsonl(source if source is not None else out / "metrics.jsonl")
    kept = [r for r in rows if r.get("iter", 0) <= keep_through]
    atomic_write_text(out / "metrics.jsonl", "".join(_jsonl(r) for r in kept))


def _jsonl(row) -> str:
    return json.dumps(row, sort_keys=True) + "\n"


class _Signals:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the end of the iteration and stops.

    SIGUSR2 too, when a handler is already listening for it: submitit's, which requeues a SLURM job that is near
    its time limit (or preempted, where the cluster sends the job's signal then). The loop saves first and then
    hands the signal over (hand_over), so the requeued job resumes from that iteration, not from the last
    periodic checkpoint.
    """

    def __init__(self):
        self.stop = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
            if callable(signal.getsignal(signal.SIGUSR2)):
                self._old[signal.SIGUSR2] = signal.signal(signal.SIGUSR2, self._handle)
        return self

    def _handle(self, signum, frame):
        self.stop = signal.Signals(signum).name

    def hand_over(self):
        """Pass a SIGUSR2 we kept to the handler that was there before (submitit: requeue this job and exit)."""
        if self.stop == "SIGUSR2" and callable(self._old.get(signal.SIGUSR2)):
            self._old[signal.SIGUSR2](signal.SIGUSR2, None)

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def train(cfg: RunConfig, out_dir, *, fork_from: Path | None = None, keep_iters=(), progress: bool = True) -> dict:
    """Train (or resume, or skip if finished) the run of `cfg` in `out_dir`; returns final.json's content.

    fork_from: a trunk's checkpoint to start from when this run has no checkpoint of its own yet (a study's
    shorter schedule, see study.plan). keep_iters: iterations whose checkpoints are always written and kept.
    """
    out = Path(out_dir)
    device = resolve_device(cfg)
    rank, world_size, _ = distributed.init_from_env(device.type)
    is_main = rank == 0
    if device.type == "cuda":
        # an explicit index (the one init_from_env chose): DDP's device_ids and every .to(device) name this
        # process's own GPU
        device = torch.device("cuda", torch.cuda.current_device())
    if cfg.solver.batch_size % world_size:
        raise UserError(f"solver.batch_size: {cfg.solver.batch_size} is not divisible by {world_size} processes")
    cfgmod.check_run_dir(out, cfg, "a run")
    final_path = out / "final.json"
    if final_path.exists():
        return read_json(final_path)
    if (out / "FAILED").exists():
        failed = read_json(out / "FAILED")
        raise RunFailed(
            f"{out}: failed earlier at iteration {failed.get('iter')}: {failed.get('reason')}; "
            f"delete {out / 'FAILED'} to retry from the last checkpoint"
        )

    train_set, val_set, _, val_check = load_datasets(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        if device.type == "cuda":
            # cuBLAS is deterministic only with a fixed workspace (read when its handle is created, i.e. later).
            # torchvision's roi_align backward has no deterministic CUDA kernel (atomic adds): warn, do not stop.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    if device.type == "cuda":
        # Autotuned conv kernels: a new tuning per distinct padded input size, amortized over a long run.
        torch.backends.cudnn.benchmark = not cfg.deterministic

    # Build: the same seed gives the same random weights in every arm; init then only touches the backbone.
    torch.manual_seed(cfg.seed)
    num_classes = len(train_set.cat_ids)
    model = build_detector(cfg.model, cfg.data, num_classes)
    init_report = init_from_source(model, cfg.init, cfg.model, cfg.imagenet_weights, cfg.init_allow_bn_stats)
    # every per-image draw (anchors, RoIs, training scale) from the image's keyed generator, not the global RNG
    draw_samplers = keyed_samplers(model, cfg.seed) + [keyed_scale_choice(model, cfg.seed)]
    # Only now, with data and weights known good, does the run directory come into existence.
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", cfgmod.dump_yaml(cfg))
    distributed.barrier()
    set_mode_sizes(model, training=True)
    model.to(device)
    if cfg.model.norm == "syncbn" and world_size > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = torch.optim.SGD(_param_groups(model, cfg), lr=0.0, momentum=cfg.solver.momentum)

    s = cfg.solver
    factor = sched.parse_schedule(s.schedule)
    max_iter = sched.total_iters(factor, s.iters_1x)
    drops = sched.drop_iters(factor, s.iters_1x)
    base_lr = sched.scaled_lr(s.base_lr, s.batch_size)
    eval_points = set(sched.eval_iters(max_iter, cfg.eval_period))
    keep_iters = tuple(int(k) for k in keep_iters if 0 < int(k) < max_iter)

    # Resume from our own last checkpoint, else start from the trunk's fork point, else from scratch.
    state = None
    start_iter = 0
    resumed = ckpt.latest(out)
    if resumed is not None:
        start_iter, path = resumed
        state = ckpt.load(path)
        if is_main:
            _restart_metrics(out, start_iter)
    elif fork_from is not None:
        state = ckpt.load(fork_from)
        start_iter = int(state["iter"])
        if is_main:
            _restart_metrics(out, start_iter, source=Path(fork_from).parent.parent / "metrics.jsonl")
    elif is_main:
        atomic_write_text(out / "metrics.jsonl", "")
    log = RunLog(out) if is_main else None
    if is_main:
        atomic_write_json(out / "init.json", init_report)
        # one line per process that trains this run: where it started (a resume must start at a checkpoint)
        # world_size too: a run may be resumed with another number of processes (the sample stream, the global
        # batch and each image's anchor/RoI draws do not depend on it; see InfiniteSampler, ImageKeyedSampler)
        append_jsonl(out / "segments.jsonl", {"start_iter": start_iter, "resumed": resumed is not None,
                                              "forked": resumed is None and fork_from is not None,
                                              "world_size": world_size, "time": time.time()})
    counts = {"images_seen": 0, "instances_seen": 0, "pixels_seen": 0, "nonfinite_skipped": 0}
    best, best_iter, wall_before = None, None, 0.0
    dtype = amp_dtype(cfg, device)
    # fp16 only (bf16 needs no loss scaling); its scale is training state: a resume or a fork continues with it
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):  # empty when saved by a disabled scaler (CPU, bf16)
            scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        counts.update(state["counts"])
        best, best_iter, wall_before = state.get("best"), state.get("best_iter"), float(state.get("wall_time_s", 0.0))
        del state

    train_model = model
    if world_size > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    # Pixels the model really sees (after its resize): read off the transform's output.
    pixels = [0]

    def count_pixels(module, _inputs, output):
        if module.training:  # evaluation passes are not training compute
            pixels[0] += sum(h * w for h, w in output[0].image_sizes)

    hook = model.transform.register_forward_hook(count_pixels)

    sampler = InfiniteSampler(len(train_set), s.batch_size, cfg.seed, cfg.data.hflip_prob, start_iter,
                              rank, world_size)
    if cfg.data.num_workers > 0:
        train_set.fill_cache()  # before workers fork, so they share the decoded images
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_sampler=sampler,
        num_workers=cfg.data.num_workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.data.num_workers > 0,
        prefetch_factor=4 if cfg.data.num_workers > 0 else None,
        # its own generator: the global RNG (which torchvision's samplers use) stays a function of the iteration
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    data_iter = iter(loader)

    local = {"images_seen": 0, "instances_seen": 0}
    params = [p for g in optimizer.param_groups for p in g["params"]]
    loss_sums: dict[str, torch.Tensor] = {}
    period_iters, period_images, period_start = 0, 0, time.perf_counter()
    run_start = time.perf_counter()
    eval_time = 0.0

    def global_counts():
        summed = distributed.all_reduce_sum(
            [local["images_seen"], local["instances_seen"], pixels[0]], device
        )
        return {
            "images_seen": counts["images_seen"] + int(summed[0]),
            "instances_seen": counts["instances_seen"] + int(summed[1]),
            "pixels_seen": counts["pixels_seen"] + int(summed[2]),
            "nonfinite_skipped": counts["nonfinite_skipped"],
        }

    def wall_time():
        return wall_before + time.perf_counter() - run_start

    def save_checkpoint(it):
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "iter": it,
            "rng": ckpt.rng_state(),
            "counts": global_counts(),
            "best": best,
            "best_iter": best_iter,
            "wall_time_s": wall_time(),
            "config": cfgmod.to_dict(cfg),
        }
        if is_main:
            ckpt.save(out, it, state, cfg.keep_checkpoints, keep_iters, final_iter=max_iter)
        distributed.barrier()

    bar = tqdm(total=max_iter, initial=start_iter, disable=not (progress and is_main), dynamic_ncols=True,
               desc=out.name, unit="it", mininterval=1.0)
    train_model.train()
    with _Signals() as signals:
        for it in range(start_iter, max_iter):
            lr = base_lr * sched.lr_factor(it, drops, s.warmup_iters, s.warmup_factor, s.gamma)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, targets = next(data_iter)
            first = it * s.batch_size + rank * len(images)  # this process's images' positions in the stream
            for sampler in draw_samplers:
                sampler.keys = list(range(first, first + len(images)))
            images = [im.to(device, non_blocking=True) for im in images]
            targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
                       for t in targets]
            with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
                loss_dict = train_model(images, targets)
            loss = sum(loss_dict.values())

            # A CPU-GPU sync point, taken on purpose: a non-finite loss must stop the run at this iteration.
            finite = bool(torch.isfinite(loss).item())
            stop = signals.stop is not None
            if world_size > 1:
                # Every process must take the same two decisions, with one all-reduce: skip this step (a non-finite
                # loss on any process) and stop after it (a signal reaches the processes at different iterations;
                # a process that stopped alone would leave the others waiting in a collective).
                flags = distributed.all_reduce_sum([0.0 if finite else 1.0, 1.0 if stop else 0.0], device)
                finite, stop = flags[0] == 0, flags[1] > 0
            done = it + 1
            if not finite:
                # Skip the step, not the iteration: its evaluation, fork-point checkpoint and stop check still happen.
                counts["nonfinite_skipped"] += 1
                terms = {k: float(v.detach().float().item()) for k, v in loss_dict.items()}
                if counts["nonfinite_skipped"] > s.max_nonfinite_skips:
                    bar.close()
                    hook.remove()
                    if log is not None:
                        log.close()
                    _fail(out, it, "non-finite loss", terms)
                optimizer.zero_grad(set_to_none=True)
                bar.update(1)
            else:
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                log_now = done % cfg.log_period == 0 or done == max_iter
                grad_norm = None
                if log_now:
                    scaler.unscale_(optimizer)
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, float("inf")))
                scaler.step(optimizer)
                scaler.update()

                n_images = len(images)
                local["images_seen"] += n_images
                local["instances_seen"] += sum(len(t["boxes"]) for t in targets)
                period_iters += 1
                period_images += n_images * world_size
                for k, v in loss_dict.items():
                    loss_sums[k] = loss_sums.get(k, 0.0) + v.detach()
                bar.update(1)

                if log_now:
                    elapsed = time.perf_counter() - period_start
                    terms = {k: float(v) / period_iters for k, v in loss_sums.items()}
                    if world_size > 1:
                        # Each process's loss terms are means over its own images; the global batch's loss is their
                        # mean (every image contributes the same number of sampled anchors and RoIs), and that is
                        # also the loss whose gradient DDP's averaging gives.
                        keys = sorted(terms)
                        summed = distributed.all_reduce_sum([terms[k] for k in keys], device)
                        terms = {k: v / world_size for k, v in zip(keys, summed)}
                    row = {"type": "train", "iter": done, "loss": sum(terms.values()), **terms, "lr": lr,
                           "grad_norm": grad_norm, "img_per_s": period_images / elapsed if elapsed > 0 else 0.0,
                           **global_counts()}
                    if device.type == "cuda":
                        row["max_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
                    if is_main:
                        log.write(row)
                    bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{lr:.2g}", img_s=f"{row['img_per_s']:.1f}")
                    loss_sums = {}
                    period_iters, period_images, period_start = 0, 0, time.perf_counter()

            if done in eval_points:
                t0 = time.perf_counter()
                # On a GPU, decoding full-size val images in the main process would leave it idle; on a CPU the
                # workers' start-up would cost more than the small images they decode.
                result = evaluate(model, val_set, val_check.coco, device, batch_size=max(1, s.batch_size // world_size),
                                  amp_dtype=dtype, num_workers=cfg.data.num_workers if device.type == "cuda" else 0)
                eval_time += time.perf_counter() - t0
                # AP metrics are deterministic; the eval/ timing entries go to the log line only
                metrics = {k: v for k, v in result.items() if not k.startswith("eval/")}
                if best is None or metrics["bbox/AP"] > best["bbox/AP"]:
                    best, best_iter = metrics, done
                if is_main:
                    log.write({"type": "eval", "iter": done, **result})
                    bar.write(f"{out.name} iter {done}: bbox/AP {metrics['bbox/AP']:.2f}")
                period_start = time.perf_counter()  # evaluation time is not training throughput

            if world_size == 1:
                stop = signals.stop is not None  # alone, a process can act on a signal that came during this step
            if done % cfg.checkpoint_period == 0 or done in keep_iters or done == max_iter or stop:
                save_checkpoint(done)
            if stop and done < max_iter:
                bar.close()
                hook.remove()
                if log is not None:
                    log.close()
                signals.hand_over()  # under submitit on SIGUSR2: requeued, resumes from the checkpoint just saved
                raise Interrupted(f"{out}: stopped by {signals.stop or 'a signal to another process'} at iteration "
                                  f"{done}; checkpoint saved, run the same command to resume")
    bar.close()
    hook.remove()
    if log is not None:
        log.close()

    final_counts = global_counts()
    last_eval = [r for r in read_jsonl(out / "metrics.jsonl") if r.get("type") == "eval"] if is_main else []
    final = {
        "status": "done",
        "final": {k: v for k, v in last_eval[-1].items() if "/" in k and not k.startswith("eval/")} if last_eval else best,
        "best": best,
        "best_iter": best_iter,
        "iters": max_iter,
        "schedule": s.schedule,
        "drops": list(drops),
        "train_images": len(train_set),
        **final_counts,
        "wall_time_s": wall_time(),
        "own_wall_time_s": time.perf_counter() - run_start,
        "eval_time_s": eval_time,
        "init": init_report["source"],
        "forked_from": str(fork_from) if fork_from is not None and resumed is None else None,
        "device": device.type,
        "world_size": world_size,
    }
    if device.type == "cuda":
        final["max_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    if is_main:
        atomic_write_json(final_path, final)
    distributed.barrier()
    return final
