"""The detection training run: one detector, one init, one schedule.

Iteration-based (detectron2 style): an infinite seeded sampler, the LR set from the schedule module at every
iteration, evaluation every `eval_period` iterations and at the end, a full checkpoint every
`checkpoint_period` iterations (and at fork points and the end). The run directory is the only state:
running the same command again resumes from the last checkpoint, and a finished run is not trained again.
The loop itself, shared with backbone pre-training, is engine/loop.py; this module supplies the detection
setup (`train`) and one iteration with what is logged, evaluated and saved around it (`DetectionSteps`).
"""

import time
from pathlib import Path

import torch

from rethink import config as cfgmod
from rethink import schedule as sched
from rethink.config import RunConfig
from rethink.data.coco import collate, load_datasets
from rethink.data.sampling import InfiniteSampler, keyed_samplers, keyed_scale_choice
from rethink.engine import checkpoint as ckpt
from rethink.engine import distributed
from rethink.engine.evaluate import evaluate
from rethink.engine.loop import (Periods, PeriodMeter, RunClock, amp_dtype, fail_run, open_run, param_groups,
                                 refuse_failed, restore, run_loop, setup_device)
from rethink.errors import UserError
from rethink.fileio import append_jsonl, atomic_write_json, atomic_write_text, read_json, read_jsonl
from rethink.models.detector import build_detector, init_from_source, set_mode_sizes


def _finished(out: Path) -> dict | None:
    """final.json of a finished run; a run that failed earlier stops here, saying how to retry it."""
    if (out / "final.json").exists():
        return read_json(out / "final.json")
    refuse_failed(out)
    return None


def _setup_process(cfg: RunConfig) -> tuple[torch.device, int, int]:
    """(device, rank, world_size) of this process; under torchrun the process group is started here."""
    device = setup_device(cfg.device, cfg.model.norm, cfg.threads, cfg.deterministic)
    rank, world_size, _ = distributed.init_from_env(device.type)
    if device.type == "cuda":
        # an explicit index (the one init_from_env chose): DDP's device_ids and every .to(device) name this
        # process's own GPU
        device = torch.device("cuda", torch.cuda.current_device())
    if cfg.solver.batch_size % world_size:
        raise UserError(f"solver.batch_size: {cfg.solver.batch_size} is not divisible by {world_size} processes")
    return device, rank, world_size


def _build_model(cfg: RunConfig, num_classes: int):
    """The detector with its init applied: the same seed gives the same random weights in every arm, and init
    then only touches the backbone."""
    torch.manual_seed(cfg.seed)
    model = build_detector(cfg.model, cfg.data, num_classes)
    init_report = init_from_source(model, cfg.init, cfg.model, cfg.imagenet_weights, cfg.init_allow_bn_stats)
    set_mode_sizes(model, training=True)
    return model, init_report


def train(cfg: RunConfig, out_dir, *, fork_from: Path | None = None, keep_iters=(), progress: bool = True,
          stop_at: int | None = None) -> dict:
    """Train (or resume, or skip if finished) the run of `cfg` in `out_dir`; returns final.json's content.

    fork_from: a trunk's checkpoint to start from when this run has no checkpoint of its own yet (a study's
    shorter schedule, see study.plan). keep_iters: iterations whose checkpoints are always written and kept.
    stop_at: stop once this iteration is done, as SIGINT would (checkpoint saved, Interrupted raised); running
    again resumes. `rethink study --adaptive` runs its trunks in such segments.
    """
    out = Path(out_dir)
    device, rank, world_size = _setup_process(cfg)
    cfgmod.check_run_dir(out, cfg, "a run")
    finished = _finished(out)
    if finished is not None:
        return finished
    train_set, val_set, _, val_check = load_datasets(cfg)

    model, init_report = _build_model(cfg, len(train_set.cat_ids))
    # Only now, with data and weights known good, does the run directory come into existence.
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", cfgmod.dump_yaml(cfg))
    distributed.barrier()
    model.to(device)
    if cfg.model.norm == "syncbn" and world_size > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    s = cfg.solver
    optimizer = torch.optim.SGD(param_groups(model, s.weight_decay, s.weight_decay_norm), lr=0.0, momentum=s.momentum)
    factor, base_lr = sched.parse_schedule(s.schedule), sched.scaled_lr(s.base_lr, s.batch_size)
    max_iter, drops = sched.total_iters(factor, s.iters_1x), sched.drop_iters(factor, s.iters_1x)

    start_iter, state, how = open_run(out, fork_from, is_main=rank == 0)
    if rank == 0:
        atomic_write_json(out / "init.json", init_report)
        # one line per training segment: its start (a checkpoint) and world_size, which may change on a resume
        # (the sample stream, the batch and each image's draws do not depend on it: see data/sampling.py)
        append_jsonl(out / "segments.jsonl", {"start_iter": start_iter, "resumed": how == "resumed",
                                              "forked": how == "forked", "world_size": world_size, "time": time.time()})
    steps = DetectionSteps(cfg, out, model, optimizer, train_set, val_set, val_check.coco, device, start_iter,
                           max_iter, rank, world_size, state)
    del state  # the checkpoint's tensors, now in the model and optimizer: not kept twice during training
    periods = Periods(max_iter, cfg.log_period, frozenset(sched.eval_iters(max_iter, cfg.eval_period)),
                      cfg.checkpoint_period, cfg.keep_checkpoints,
                      tuple(int(k) for k in keep_iters if 0 < int(k) < max_iter))

    def get_lr(it: int) -> float:  # a pure function of the iteration
        return base_lr * sched.lr_factor(it, drops, s.warmup_iters, s.warmup_factor, s.gamma)

    run_loop(steps, optimizer, get_lr, out, start_iter, periods, progress=progress, world_size=world_size,
             device=device, stop_at=stop_at)

    final = steps.final_record(max_iter, drops, len(train_set), init_report["source"],
                               str(fork_from) if how == "forked" else None)
    if rank == 0:
        atomic_write_json(out / "final.json", final)
    distributed.barrier()
    return final


class DetectionSteps:
    """One detection iteration (`step`), and the log line, evaluation and checkpoint state the loop asks for."""

    headline = "bbox/AP"
    shown = ("loss", "lr", "img_per_s")

    def __init__(self, cfg: RunConfig, out: Path, model, optimizer, train_set, val_set, val_coco, device,
                 start_iter: int, max_iter: int, rank: int, world_size: int, state: dict | None):
        self.cfg, self.out, self.model, self.optimizer = cfg, out, model, optimizer
        self.val_set, self.val_coco, self.device, self.max_iter = val_set, val_coco, device, max_iter
        self.rank, self.world_size = rank, world_size
        self.dtype = amp_dtype(device, cfg.solver.amp)
        # fp16 only (bf16 needs no loss scaling); its scale is training state: a resume or a fork continues with it
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        self.counts = {"images_seen": 0, "instances_seen": 0, "pixels_seen": 0, "nonfinite_skipped": 0}
        self.best, self.best_iter = None, None
        if state is not None:
            restore(state, {"model": model}, optimizer)
            if state.get("scaler"):  # empty when saved by a disabled scaler (CPU, bf16)
                self.scaler.load_state_dict(state["scaler"])
            self.counts.update(state["counts"])
            self.best, self.best_iter = state.get("best"), state.get("best_iter")
        # the log period's loss terms (checkpointed: a resumed run logs the lines of an uninterrupted one), and
        # the run's seconds (a checkpoint from before the clock had its own key kept the wall time alone)
        self.period = PeriodMeter(state.get("period") if state is not None else None)
        times = (state.get("times") or {"wall_time_s": state.get("wall_time_s", 0.0)}) if state is not None else None
        self.clock = RunClock(times)
        self.train_model = model
        if world_size > 1:
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        # every per-image draw (anchors, RoIs, training scale) from the image's keyed generator, not the global RNG
        self.draw_samplers = keyed_samplers(model, cfg.seed) + [keyed_scale_choice(model, cfg.seed)]
        # Pixels the model really sees (after its resize), read off the transform's output.
        self.hook = model.transform.register_forward_hook(self._count_pixels)
        self.data_iter = iter(_train_loader(cfg, train_set, start_iter, rank, world_size, device))
        self.local = {"images_seen": 0, "instances_seen": 0, "pixels_seen": 0}
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.skipped, self.grad_norm = False, None
        self.train_model.train()

    def _count_pixels(self, module, _inputs, output):
        if module.training:  # evaluation passes are not training compute
            self.local["pixels_seen"] += sum(h * w for h, w in output[0].image_sizes)

    def step(self, it: int) -> None:
        s = self.cfg.solver
        t_iter = time.perf_counter()
        images, targets = next(self.data_iter)
        data_s = time.perf_counter() - t_iter
        first = it * s.batch_size + self.rank * len(images)  # this process's images' positions in the stream
        for sampler in self.draw_samplers:
            sampler.keys = list(range(first, first + len(images)))
        images = [im.to(self.device, non_blocking=True) for im in images]
        targets = [{k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
                   for t in targets]
        with torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            loss_dict = self.train_model(images, targets)
        loss = sum(loss_dict.values())
        # A CPU-GPU sync point, taken on purpose: a non-finite loss must stop the run at this iteration. With
        # several processes all skip the step when any has one.
        finite = bool(torch.isfinite(loss).item())
        if self.world_size > 1:
            finite = distributed.all_reduce_sum([0.0 if finite else 1.0], self.device)[0] == 0
        self.skipped = not finite
        if not finite:
            # Skip the step, not the iteration: its evaluation, fork-point checkpoint and stop check still happen.
            self.counts["nonfinite_skipped"] += 1
            if self.counts["nonfinite_skipped"] > s.max_nonfinite_skips:
                terms = {k: float(v.detach().float().item()) for k, v in loss_dict.items()}
                fail_run(self.out, it, "non-finite loss", terms)
            self.optimizer.zero_grad(set_to_none=True)
            return
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.grad_norm = None
        done = it + 1
        if done % self.cfg.log_period == 0 or done == self.max_iter:  # the iterations the loop logs
            self.scaler.unscale_(self.optimizer)
            self.grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, float("inf")))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.local["images_seen"] += len(images)
        self.local["instances_seen"] += sum(len(t["boxes"]) for t in targets)
        step_s = time.perf_counter() - t_iter
        self.clock.add("train_time_s", step_s)
        self.clock.add("data_time_s", data_s)
        self.period.add(len(images) * self.world_size, step_s, data_s, **{k: v.detach() for k, v in loss_dict.items()})

    def log_row(self, done: int, lr: float) -> dict | None:
        if self.skipped:
            return None  # a skipped step logs nothing; its period goes on into the next log line
        p = self.period
        terms = {k: p.mean(k) for k in p.sums}
        if self.world_size > 1:
            # Each process's loss terms are means over its own images; the global batch's loss is their mean
            # (every image contributes the same number of sampled anchors and RoIs), and that is also the loss
            # whose gradient DDP's averaging gives.
            keys = sorted(terms)
            summed = distributed.all_reduce_sum([terms[k] for k in keys], self.device)
            terms = {k: v / self.world_size for k, v in zip(keys, summed)}
        row = {"type": "train", "iter": done, "loss": sum(terms.values()), **terms, "lr": lr,
               "grad_norm": self.grad_norm, "img_per_s": p.rates()["img_per_s"], **self.global_counts()}
        if self.device.type == "cuda":
            row["max_mem_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        p.reset()
        return row

    def evaluate(self, done: int) -> dict:
        t0 = time.perf_counter()
        # On a GPU, decoding full-size val images in the main process would leave it idle; on a CPU the workers'
        # start-up would cost more than the small images they decode.
        workers = self.cfg.data.num_workers if self.device.type == "cuda" else 0
        result = evaluate(self.model, self.val_set, self.val_coco, self.device,
                          batch_size=max(1, self.cfg.solver.batch_size // self.world_size), amp_dtype=self.dtype,
                          num_workers=workers)
        self.clock.add("eval_time_s", time.perf_counter() - t0)
        # AP metrics are deterministic; the eval/ timing entries go to the log line only
        metrics = {k: v for k, v in result.items() if not k.startswith("eval/")}
        if self.best is None or metrics["bbox/AP"] > self.best["bbox/AP"]:
            self.best, self.best_iter = metrics, done
        return {"type": "eval", "iter": done, **result}

    def global_counts(self) -> dict:
        """Images, instances and pixels trained on so far, by all processes (a collective with several)."""
        keys = ("images_seen", "instances_seen", "pixels_seen")
        summed = distributed.all_reduce_sum([self.local[k] for k in keys], self.device)
        return {**{k: self.counts[k] + int(v) for k, v in zip(keys, summed)},
                "nonfinite_skipped": self.counts["nonfinite_skipped"]}

    def close(self) -> None:
        self.hook.remove()
        self.data_iter = None  # a DataLoader iterator shuts its workers down when it goes

    def state_dict(self, done: int) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "iter": done, "rng": ckpt.rng_state(),
                "counts": self.global_counts(), "best": self.best, "best_iter": self.best_iter,
                "times": self.clock.elapsed(), "period": self.period.state_dict(),
                "config": cfgmod.to_dict(self.cfg)}

    def final_record(self, max_iter: int, drops, train_images: int, init_source, forked_from: str | None) -> dict:
        """final.json: the last evaluation, the best one, and what the run cost."""
        evals = [r for r in read_jsonl(self.out / "metrics.jsonl") if r.get("type") == "eval"] if self.rank == 0 else []
        last = {k: v for k, v in evals[-1].items() if "/" in k and not k.startswith("eval/")} if evals else self.best
        final = {"status": "done", "final": last, "best": self.best, "best_iter": self.best_iter, "iters": max_iter,
                 "schedule": self.cfg.solver.schedule, "drops": list(drops), "train_images": train_images,
                 **self.global_counts(), **self.clock.elapsed(), "own_wall_time_s": self.clock.segment_s(),
                 "init": init_source, "forked_from": forked_from, "device": self.device.type,
                 "world_size": self.world_size}
        if self.device.type == "cuda":
            final["max_mem_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return final


def _train_loader(cfg: RunConfig, train_set, start_iter: int, rank: int, world_size: int, device):
    """The training batches from iteration `start_iter` on: a function of (seed, iteration) alone."""
    d = cfg.data
    sampler = InfiniteSampler(len(train_set), cfg.solver.batch_size, cfg.seed, d.hflip_prob, start_iter, rank,
                              world_size)
    if d.num_workers > 0:
        train_set.fill_cache()  # before workers fork, so they share the decoded images
    return torch.utils.data.DataLoader(
        train_set, batch_sampler=sampler, num_workers=d.num_workers, collate_fn=collate,
        pin_memory=device.type == "cuda", persistent_workers=d.num_workers > 0,
        prefetch_factor=4 if d.num_workers > 0 else None,
        # its own generator: the global RNG (which torchvision's samplers use) stays a function of the iteration
        generator=torch.Generator().manual_seed(cfg.seed),
    )
