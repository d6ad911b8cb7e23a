"""The rules a config's values must obey, for both config kinds (rethink.config's RunConfig and PretrainConfig).

Impossible values fail here, with the key path, when a config is loaded: before anything is built, read or trained.
The types were already checked while the YAML became dataclasses; these are the value rules.
"""

from rethink import schedule as sched
from rethink.errors import UserError

DETECTORS = ("faster_rcnn", "mask_rcnn")
NORMS = ("gn", "bn", "frozen_bn", "syncbn")
TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")

PRETRAIN_BACKBONES = ("tiny",) + TORCHVISION_RESNETS
PRETRAIN_METHODS = ("supervised", "moco_v2", "densecl")
# GN and BN train from scratch in one process; frozen_bn cannot train, syncbn needs several processes.
PRETRAIN_NORMS = ("gn", "bn")


def validate(cfg) -> None:
    """A RunConfig's rules: impossible values fail here, with the key path, before anything is built or trained."""
    _check_model(cfg.model)
    _check_data(cfg.data)
    _check_solver(cfg.solver)
    if not cfg.init:
        raise UserError("init: must be random, imagenet, or a path to backbone weights")
    if cfg.init == "imagenet" and cfg.model.backbone == "tiny":
        # refused here, not when the arm starts: in a study that would be after the random arm had trained
        raise UserError("init: imagenet has no weights for the `tiny` backbone; pre-train it with `rethink pretrain` "
                        "and pass init=PATH/backbone.safetensors, or use model.backbone=resnet50")
    if cfg.imagenet_weights and not cfg.imagenet_weights.startswith(("timm:", "torchvision:")):
        raise UserError(f"imagenet_weights: '{cfg.imagenet_weights}' must be timm:<model name> or "
                        "torchvision:<weights>, e.g. torchvision:ResNet50_Weights.IMAGENET1K_V2 (a file: init=PATH)")
    if cfg.keep_checkpoints < 1:
        raise UserError("keep_checkpoints: must be >= 1 (the last checkpoint is what a resume starts from)")
    check_run_settings(cfg)


def _check_model(m) -> None:
    if m.detector not in DETECTORS:
        raise UserError(f"model.detector: '{m.detector}' is not one of {', '.join(DETECTORS)}")
    if m.norm not in NORMS:
        raise UserError(f"model.norm: '{m.norm}' is not one of {', '.join(NORMS)}")
    if not (m.backbone == "tiny" or m.backbone in TORCHVISION_RESNETS or m.backbone.startswith("timm:")):
        raise UserError(
            f"model.backbone: '{m.backbone}' is not one of tiny, {', '.join(TORCHVISION_RESNETS)}, timm:<model_name>"
        )
    if m.backbone.startswith("timm:") and len(m.backbone) == len("timm:"):
        raise UserError("model.backbone: 'timm:' needs a model name, e.g. timm:resnet50")
    if not 0 <= m.freeze_at <= 5:
        raise UserError(f"model.freeze_at: {m.freeze_at} must be between 0 (nothing frozen) and 5")
    check_tiny_backbone(m)
    if len(m.anchor_sizes) != 5:
        raise UserError(f"model.anchor_sizes: need 5 sizes (one per FPN level P2..P6), got {len(m.anchor_sizes)}")
    for name in ("fpn_channels", "box_head_conv_dim", "box_head_fc_dim", "mask_head_conv_dim", "gn_groups",
                 "rpn_batch_size_per_image", "box_batch_size_per_image", "box_detections_per_img"):
        if getattr(m, name) <= 0:
            raise UserError(f"model.{name}: must be positive, got {getattr(m, name)}")
    if m.roi_sampling_ratio < 0:
        raise UserError(f"model.roi_sampling_ratio: {m.roi_sampling_ratio} must be >= 0 (0 = adaptive)")
    if m.box_head_num_conv < 0 or m.mask_head_num_conv < 1:
        raise UserError("model.box_head_num_conv must be >= 0 and model.mask_head_num_conv >= 1")
    if not 0 <= m.box_score_thresh < 1:
        raise UserError(f"model.box_score_thresh: {m.box_score_thresh} must be in [0, 1)")


def _check_data(d) -> None:
    for split in ("train", "val"):
        sc = getattr(d, split)
        if not sc.images or not sc.annotations:
            raise UserError(f"data.{split}: needs both `images` (a folder) and `annotations` (a COCO JSON file)")
    for key, value in (("data.train_size", d.train_size), ("data.val_size", d.val_size)):
        if isinstance(value, str) and value != "full":
            raise UserError(f"{key}: '{value}' must be `full` or a positive number of images")
        if isinstance(value, int) and value <= 0:
            raise UserError(f"{key}: {value} must be a positive number of images (or `full`)")
    if not d.min_size_train or any(v <= 0 for v in d.min_size_train) or d.min_size_test <= 0 or d.max_size <= 0:
        raise UserError("data.min_size_train / min_size_test / max_size: sizes must be positive")
    check_loading(d)


def _check_solver(s) -> None:
    factor = sched.parse_schedule(s.schedule)
    if s.iters_1x <= 0:
        raise UserError(f"solver.iters_1x: {s.iters_1x} must be positive")
    check_sgd(s)
    if s.warmup_iters < 0 or not 0 < s.warmup_factor <= 1:
        raise UserError("solver.warmup_iters must be >= 0 and solver.warmup_factor in (0, 1]")
    if not 0 < s.gamma <= 1:
        raise UserError(f"solver.gamma: {s.gamma} must be in (0, 1]")
    if s.max_nonfinite_skips < 0:
        raise UserError("solver.max_nonfinite_skips: must be >= 0")
    sched.check_schedule(factor, s.iters_1x, s.warmup_iters)


# The rules detection and pre-training configs share, checked by the same functions.


def check_tiny_backbone(m) -> None:
    if m.backbone == "tiny":
        if len(m.tiny_widths) != 4 or len(m.tiny_depths) != 4:
            raise UserError("model.tiny_widths / model.tiny_depths: need 4 values each (res2..res5)")
        if any(w <= 0 for w in m.tiny_widths) or any(n <= 0 for n in m.tiny_depths):
            raise UserError("model.tiny_widths / model.tiny_depths: values must be positive")


def check_loading(d) -> None:
    """Flip, workers and the image cache: data keys of both config kinds."""
    if not 0 <= d.hflip_prob <= 1:
        raise UserError(f"data.hflip_prob: {d.hflip_prob} must be in [0, 1]")
    if d.num_workers < 0:
        raise UserError(f"data.num_workers: {d.num_workers} must be >= 0")
    if d.cache_images not in ("auto", "yes", "no", True, False):  # YAML reads a bare yes/no as a bool
        raise UserError(f"data.cache_images: '{d.cache_images}' must be auto, yes or no")


def check_sgd(s) -> None:
    """The SGD settings that detection and pre-training solvers share."""
    if s.batch_size <= 0:
        raise UserError(f"solver.batch_size: {s.batch_size} must be positive")
    if s.base_lr <= 0:
        raise UserError(f"solver.base_lr: {s.base_lr} must be positive")
    if not 0 <= s.momentum < 1:
        raise UserError(f"solver.momentum: {s.momentum} must be in [0, 1)")
    if s.weight_decay < 0 or s.weight_decay_norm < 0:
        raise UserError("solver.weight_decay / weight_decay_norm: must be >= 0")


def check_run_settings(cfg) -> None:
    """Seed, periods, device and threads: the top-level keys of both config kinds."""
    if cfg.seed < 0:
        raise UserError(f"seed: {cfg.seed} must be >= 0")
    if cfg.eval_period < 0 or cfg.log_period <= 0 or cfg.checkpoint_period <= 0:
        raise UserError("eval_period must be >= 0, log_period and checkpoint_period > 0")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise UserError(f"device: '{cfg.device}' must be auto, cpu or cuda")
    if cfg.threads < 0:
        raise UserError("threads: must be >= 0")


def validate_pretrain(cfg) -> None:
    """A PretrainConfig's rules: impossible values fail here, with the key path, before any image is read."""
    m, d, s = cfg.model, cfg.data, cfg.solver
    if m.backbone not in PRETRAIN_BACKBONES:
        raise UserError(f"model.backbone: '{m.backbone}' is not one of {', '.join(PRETRAIN_BACKBONES)}")
    if m.norm not in PRETRAIN_NORMS:
        raise UserError(
            f"model.norm: '{m.norm}' is not one of {', '.join(PRETRAIN_NORMS)} (frozen_bn cannot learn; for a syncbn "
            "detector pre-train with bn, whose weights it loads)"
        )
    if m.gn_groups <= 0:
        raise UserError(f"model.gn_groups: {m.gn_groups} must be positive")
    check_tiny_backbone(m)

    if cfg.method not in PRETRAIN_METHODS:
        raise UserError(f"method: '{cfg.method}' is not one of {', '.join(PRETRAIN_METHODS)}")
    if cfg.method == "supervised":
        for split in ("train", "val"):
            if not getattr(d, split):
                raise UserError(f"data.{split}: needs an ImageFolder root (a folder of one sub-folder per class)")
    else:
        _check_selfsup(cfg)
    # The stem and the first stages halve the image four times before res5; below 16 px nothing is left to see.
    if d.image_size < 16:
        raise UserError(f"data.image_size: {d.image_size} must be at least 16")
    if not 0 <= d.crop_padding < d.image_size:
        raise UserError(f"data.crop_padding: {d.crop_padding} must be in [0, data.image_size)")
    check_loading(d)

    if s.iters <= 0:
        raise UserError(f"solver.iters: {s.iters} must be positive")
    check_sgd(s)
    # A warm-up longer than the run is allowed (the LR then never reaches base_lr): short runs set by --set
    # solver.iters=N in smoke tests must not need a second override.
    if s.warmup_iters < 0:
        raise UserError(f"solver.warmup_iters: {s.warmup_iters} must be >= 0")
    if not 0 <= s.label_smoothing < 1:
        raise UserError(f"solver.label_smoothing: {s.label_smoothing} must be in [0, 1)")
    check_run_settings(cfg)


def _check_selfsup(cfg) -> None:
    d, x = cfg.data, cfg.ssl
    if not d.train:
        raise UserError("data.train: needs a folder of images, or a COCO annotations file with data.train_images")
    if d.train.endswith(".json") and not d.train_images:
        raise UserError("data.train_images: a COCO file as data.train needs the folder its images are in")
    if d.val.endswith(".json") and not d.val_images:
        raise UserError("data.val_images: a COCO file as data.val needs the folder its images are in")
    if x.temperature <= 0 or x.knn_t <= 0:
        raise UserError("ssl.temperature / ssl.knn_t: must be positive")
    if x.memory_bank_size < 0:
        raise UserError(f"ssl.memory_bank_size: {x.memory_bank_size} must be >= 0 (0: negatives from the batch only)")
    if not 0 <= x.momentum < 1:
        raise UserError(f"ssl.momentum: {x.momentum} must be in [0, 1)")
    for key in ("proj_hidden_dim", "proj_dim", "knn_k"):
        if getattr(x, key) <= 0:
            raise UserError(f"ssl.{key}: {getattr(x, key)} must be positive")
    if not 0 < x.min_scale <= 1:
        raise UserError(f"ssl.min_scale: {x.min_scale} must be in (0, 1]")
    if x.cj_strength < 0 or not 0 <= x.dense_weight <= 1 or x.collapse_std < 0:
        raise UserError("ssl.cj_strength must be >= 0, ssl.dense_weight in [0, 1], ssl.collapse_std >= 0")
