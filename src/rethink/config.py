"""Run configuration: YAML -> frozen dataclasses, `--set key=value` overrides, validation with key paths.

One YAML file describes one run completely; there is no inheritance or interpolation. The two arms of the
paper's comparison are two configs that differ in exactly one key: `init`.
"""

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rethink.errors import UserError
from rethink import schedule as sched
from rethink.config_checks import validate, validate_pretrain


@dataclass(frozen=True)
class ModelConfig:
    detector: str = "faster_rcnn"  # faster_rcnn | mask_rcnn
    backbone: str = "resnet50"  # tiny | resnet18/34/50/101 | timm:<model_name>
    norm: str = "gn"  # gn | bn | frozen_bn | syncbn: used in every layer (backbone, FPN, box and mask heads)
    freeze_at: int = 0  # 0: nothing frozen; 1: stem; 2: stem + res2; ... (detectron2's meaning)
    gn_groups: int = 32  # upper bound; narrow layers use fewer (see models.backbone.gn_groups)
    tiny_widths: tuple[int, ...] = (16, 32, 64, 128)  # `tiny` backbone: channels of res2..res5
    tiny_depths: tuple[int, ...] = (1, 1, 1, 1)  # `tiny` backbone: BasicBlocks per stage
    fpn_channels: int = 256
    box_head_conv_dim: int = 256  # the 4conv1fc head of the paper
    box_head_num_conv: int = 4
    box_head_fc_dim: int = 1024
    mask_head_conv_dim: int = 256  # the 4conv mask head
    mask_head_num_conv: int = 4
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)  # one per FPN level (P2..P6)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_batch_size_per_image: int = 256
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 1000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    box_batch_size_per_image: int = 512
    # RoIAlign samples per bin side: 2 as Detectron and torchvision, 0 = adaptive (ceil(RoI size / output size),
    # detectron2's ROIAlignV2 default): one sample per bin for small RoIs, which makes RoIAlign's CPU backward cheaper
    roi_sampling_ratio: int = 2
    box_detections_per_img: int = 100
    box_score_thresh: float = 0.05


@dataclass(frozen=True)
class SplitConfig:
    images: str = ""
    annotations: str = ""


@dataclass(frozen=True)
class DataConfig:
    train: SplitConfig = field(default_factory=SplitConfig)
    val: SplitConfig = field(default_factory=SplitConfig)
    train_size: int | str = "full"  # `full` or N: the first N images of a seeded permutation (nested subsets)
    subset_seed: int = 0  # the permutation behind train_size; independent of `seed` so every seed sees the same set
    val_size: int | str = "full"  # evaluate on the first N validation images (sorted by id)
    min_size_train: tuple[int, ...] = (800,)  # shorter side; several values = scale augmentation
    max_size: int = 1333
    min_size_test: int = 800
    hflip_prob: float = 0.5
    num_workers: int = 0
    cache_images: str | bool = "auto"  # auto | yes | no: keep decoded images in memory (small datasets)


@dataclass(frozen=True)
class SolverConfig:
    schedule: str = "1x"
    iters_1x: int = 90000  # the 1x length at solver.batch_size
    batch_size: int = 16  # global batch (all processes together)
    base_lr: float = 0.02  # for a batch of 16; scaled linearly to batch_size
    momentum: float = 0.9
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0  # norm layers and biases
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    gamma: float = 0.1
    amp: bool = True  # mixed precision on CUDA (bf16 where supported); ignored on CPU
    max_nonfinite_skips: int = 0  # steps with a non-finite loss that may be skipped (counted) before failing


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    init: str = "random"  # random | imagenet | path to backbone weights (.safetensors, or a torch file)
    # with init: imagenet, which weights: "" = the default for backbone and norm (timm's resnet50_gn.a1h_in1k for
    # GN, torchvision's IMAGENET1K_V1 for BN), else timm:<model name> or torchvision:<weights enum member>
    imagenet_weights: str = ""
    # BatchNorm running statistics in the init weights of a body without BatchNorm are refused unless true
    init_allow_bn_stats: bool = False
    seed: int = 0
    eval_period: int = 0  # evaluate every N iterations (0: only at the end)
    log_period: int = 20
    checkpoint_period: int = 5000
    keep_checkpoints: int = 2  # the last N periodic checkpoints are kept, plus fork points
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch intra-op threads (0: torch's default)
    deterministic: bool = False  # bitwise-reproducible runs (resume tests, forks); slower on GPU


# ---------------------------------------------------------------------------------------------------------------
# dict <-> dataclass with type checks


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _convert(value, tp, key: str):
    """Check/convert one YAML value against a dataclass field type; errors name the key path."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{key}: expected a mapping of {tp.__name__} keys, got {type(value).__name__}")
        return _from_dict(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _convert(value, option, key)
            except UserError:
                pass
        names = " or ".join(_type_name(t) for t in typing.get_args(tp))
        raise UserError(f"{key}: expected {names}, got {value!r}")
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{key}: expected a list, got {type(value).__name__}")
        return tuple(_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise UserError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if key.endswith("schedule") and isinstance(value, (int, float)) and not isinstance(value, bool):
            # YAML reads a bare 2.5 as a number; the schedule is written with its unit
            raise UserError(f"{key}: {value!r} is not a schedule; write it as the field does, with an x: {value:g}x")
        if not isinstance(value, str):
            raise UserError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp} at {key}")


def _from_dict(cls, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            path = f"{prefix}.{k}" if prefix else str(k)
            raise UserError(f"{path}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name in names:
        if name in data:
            path = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _convert(data[name], hints[name], path)
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    """Plain nested dict (tuples as lists) for YAML/JSON."""

    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


# ---------------------------------------------------------------------------------------------------------------
# loading and overrides; the value rules are in rethink.config_checks


def read_yaml(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)  # safe_load: a config never constructs Python objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise UserError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config keys at the top level")
    return data


def parse_override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise UserError(f"--set {text}: expected KEY=VALUE, e.g. --set solver.schedule=2x")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"--set {text}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def set_key(data: dict, key: str, value) -> None:
    """Set a dotted key in a nested dict; unknown keys are caught later by the dataclass check."""
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"{'.'.join(parts[: i + 1])}: is a value, cannot set {key}")
        node = child
    node[parts[-1]] = value


def get_key(data: dict, key: str):
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def config_from_dict(data: dict, overrides=()) -> "RunConfig":
    cfg = _from_dict(RunConfig, _with_overrides(data, overrides))
    validate(cfg)
    return cfg


def load_config(path, overrides=()) -> "RunConfig":
    return config_from_dict(read_run_yaml(path), overrides)


def read_run_yaml(path) -> dict:
    """A run config's YAML; a study file given where a run config belongs is named as such."""
    data = read_yaml(path)
    if "matrix" in data or "base" in data:
        raise UserError(f"{path}: is a study file (it has `matrix` or `base`), not a run config: run it with "
                        f"`rethink study {path} --out DIR`, or list its runs with `rethink plan {path}`")
    return data


def _with_overrides(data: dict, overrides) -> dict:
    """A copy of `data` with `--set` items (KEY=VALUE strings or (key, value) pairs) applied."""
    data = _deepcopy(data)
    for item in overrides:
        key, value = parse_override(item) if isinstance(item, str) else item
        set_key(data, key, value)
    return data


def _deepcopy(data):
    if isinstance(data, dict):
        return {k: _deepcopy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deepcopy(v) for v in data]
    return data


# ---------------------------------------------------------------------------------------------------------------
# backbone pre-training (`rethink pretrain`): its own config kind, validated by rules it shares with detection


@dataclass(frozen=True)
class PretrainModelConfig:
    backbone: str = "tiny"  # tiny | resnet18/34/50/101 (the detector's backbone names)
    norm: str = "gn"  # gn | bn; fine-tune with the same norm for a clean transfer
    gn_groups: int = 32  # upper bound, as model.gn_groups of a detection config
    tiny_widths: tuple[int, ...] = (16, 32, 64, 128)  # `tiny` backbone: channels of res2..res5
    tiny_depths: tuple[int, ...] = (1, 1, 1, 1)  # `tiny` backbone: BasicBlocks per stage


@dataclass(frozen=True)
class PretrainDataConfig:
    # supervised: an ImageFolder root (train/<class>/<image>). Self-supervised methods ignore labels: any folder of
    # images (flat or nested), or a COCO annotations file whose images (in train_images) are used, annotations not
    train: str = ""
    train_images: str = ""  # self-supervised, with a COCO file as `train`: the folder its file_names are in
    # supervised: ImageFolder root with the same class folders. Self-supervised: an optional labelled set on which
    # the features' kNN and linear-probe accuracies are measured along pre-training: an ImageFolder, or a COCO
    # annotations file whose boxes are cropped into a labelled set (the target's own objects) ("" = no labels: the
    # loss is the signal)
    val: str = ""
    val_images: str = ""  # self-supervised, with a COCO file as `val`: the folder its file_names are in
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
class SelfSupConfig:
    """The self-supervised methods' settings (method: moco_v2 | densecl); MoCo v2's values, sized for small data."""

    temperature: float = 0.2  # of the InfoNCE loss (MoCo v2: 0.2)
    memory_bank_size: int = 4096  # negatives kept from past batches' keys (MoCo's queue)
    momentum: float = 0.99  # of the key encoder's moving average (MoCo: 0.999 over ~200 epochs; short runs: 0.99)
    proj_hidden_dim: int = 512  # projection heads' hidden layer
    proj_dim: int = 128  # embedding size the loss compares
    min_scale: float = 0.2  # smallest random-resized-crop area (MoCo v2: 0.2)
    cj_strength: float = 0.5  # colour jitter strength (lightly recommends 0.5 for small images)
    dense_weight: float = 0.5  # densecl: weight of the dense loss against the global one (DenseCL's lambda)
    knn_k: int = 20  # neighbours of the kNN accuracy on data.val
    knn_t: float = 0.1  # temperature of the kNN vote
    # an embedding std (of L2-normalized projections, times sqrt(proj_dim)) below this counts as collapse: about 1
    # when embeddings spread over the sphere, 0 when they are all alike
    collapse_std: float = 0.1


@dataclass(frozen=True)
class PretrainConfig:
    method: str = "supervised"  # supervised (labels of an ImageFolder) | moco_v2 | densecl (no labels)
    label: str = ""  # what the source is called in a report, e.g. "MoCo v2 on the target's images"; "" = derived
    model: PretrainModelConfig = field(default_factory=PretrainModelConfig)
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    solver: PretrainSolverConfig = field(default_factory=PretrainSolverConfig)
    ssl: SelfSupConfig = field(default_factory=SelfSupConfig)
    seed: int = 0
    eval_period: int = 0  # evaluate on val every N iterations (0: only at the end)
    log_period: int = 20
    checkpoint_period: int = 500
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch intra-op threads (0: torch's default)
    deterministic: bool = False  # bitwise-reproducible runs (resume gives exactly the uninterrupted result)


def load_pretrain_config(path, overrides=()) -> PretrainConfig:
    """Read a pre-training YAML, apply `--set key=value` overrides, check types and values.

    Relative data paths are taken from the current directory and recorded absolute, so a run directory says
    exactly which images it was trained on.
    """
    return pretrain_config_from_dict(read_run_yaml(path), overrides)


def pretrain_config_from_dict(data: dict, overrides=()) -> PretrainConfig:
    cfg = _from_dict(PretrainConfig, _with_overrides(data, overrides))
    validate_pretrain(cfg)
    data_fields = {k: str(Path(getattr(cfg.data, k)).resolve()) for k in ("train", "train_images", "val", "val_images")
                   if getattr(cfg.data, k)}
    if isinstance(cfg.data.cache_images, bool):
        data_fields["cache_images"] = "yes" if cfg.data.cache_images else "no"
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **data_fields))


def total_iters(cfg: RunConfig) -> int:
    return sched.total_iters(sched.parse_schedule(cfg.solver.schedule), cfg.solver.iters_1x)


def drop_iters(cfg: RunConfig) -> tuple[int, int]:
    return sched.drop_iters(sched.parse_schedule(cfg.solver.schedule), cfg.solver.iters_1x)


def resolve_paths(cfg: RunConfig, base: Path | None = None) -> RunConfig:
    """Make data paths and a weights path absolute, so a run dir records exactly what it read."""
    base = Path(base) if base else Path.cwd()

    def absolute(p: str) -> str:
        return str((base / p).resolve()) if p and not Path(p).is_absolute() else p

    data = dataclasses.replace(
        cfg.data,
        train=SplitConfig(absolute(cfg.data.train.images), absolute(cfg.data.train.annotations)),
        val=SplitConfig(absolute(cfg.data.val.images), absolute(cfg.data.val.annotations)),
    )
    init = cfg.init if cfg.init in ("random", "imagenet") else absolute(cfg.init)
    return dataclasses.replace(cfg, data=data, init=init)


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    keys = []
    for k in sorted(set(a) | set(b)):
        path = f"{prefix}.{k}" if prefix else k
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += diff(va, vb, path)
        elif va != vb:
            keys.append(path)
    return keys


def check_run_dir(out: Path, cfg, what: str = "a run") -> None:
    """A run directory belongs to one config: refuse another one there (nothing already there is touched)."""
    existing = Path(out) / "config.yaml"
    if not existing.exists():
        return
    with open(existing, encoding="utf-8") as f:
        old = yaml.safe_load(f) or {}
    new = to_dict(cfg)
    changed = [k for k in diff(old, new) if k not in RESUME_FREE_KEYS]
    if changed:
        pairs = "; ".join(f"{k}: {get_key(old, k)!r} there, {get_key(new, k)!r} now" for k in changed)
        raise UserError(
            f"{out}: holds {what} with a different config ({pairs}); use another --out, or the same settings to resume"
        )


# Keys that change how fast a run goes or how much it prints, never what it learns: a resume may change them.
RESUME_FREE_KEYS = frozenset({"data.num_workers", "threads", "log_period", "device", "checkpoint_period",
                              "keep_checkpoints", "data.cache_images"})

# A pre-training's outputs, and the batch its solver.base_lr is given for (Goyal et al.'s ImageNet reference).
PRETRAIN_RECORD = "pretrain.json"
PRETRAIN_WEIGHTS = "backbone.safetensors"
PRETRAIN_REFERENCE_BATCH = 256


METHOD_NAMES = {"supervised": "supervised", "moco_v2": "MoCo v2", "densecl": "DenseCL"}


def source_label(cfg: PretrainConfig) -> str:
    """What a report calls this pre-training: the config's `label`, else the method and the data's folder name
    ("supervised on source" for source/train, "MoCo v2 on target" for target/train/annotations.json)."""
    if cfg.label:
        return cfg.label
    where = Path(cfg.data.train)
    where = where.parent if where.suffix == ".json" else where
    while where.name in ("train", "images", "val") and where.parent != where:
        where = where.parent
    return f"{METHOD_NAMES[cfg.method]} on {where.name or where}"
