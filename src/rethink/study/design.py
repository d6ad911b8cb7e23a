"""`rethink init-study DATA`: a study file for one's own COCO set, the paper's matrix scaled to it and to the
hardware at hand.

What is scaled, and by which rule (docs/own-data.md explains each):
- the 1x length, in epochs as the paper's: 90k iterations of 16 images on COCO's 118k images is 12.2 epochs, so
  iters_1x = 12.2 x train images / batch;
- the image size: the paper's 800 px shorter side is 5/3 of COCO's typical 480; a set of smaller images gets the
  same 5/3 on its median shorter side (at most 800) on a GPU, and its own size (at most 256 px) on a CPU, with the
  anchors scaled as the image;
- the preset: the paper's R50-FPN GN Mask R-CNN (Faster R-CNN for a set without masks) on CUDA, the tiny GN
  Faster R-CNN on a CPU;
- the schedules and sizes: the paper's long-schedule matrix (1x to 6x) and its data-size matrix (subsets of 3%,
  10% and 30%) on a GPU; 1x, 2x, 4x and one subset of 10% on a CPU;
- the pretrained arm: ImageNet on a GPU; on a CPU (the tiny backbone has no ImageNet weights) a weights file given
  with --pretrained, else the bundled pre-training on the offline benchmark's source.

`--quick` writes the same study shortened to a few iterations (it checks the pipeline, not the paper's findings).
"""

import statistics
from dataclasses import dataclass
from pathlib import Path

from rethink.config import SplitConfig
from rethink.errors import UserError

# The paper's 1x: 90k iterations x 16 images over COCO train2017's 118,287 images.
PAPER_EPOCHS_1X = 90_000 * 16 / 118_287
# The paper's shorter side (800) over COCO's typical shorter side (480).
PAPER_UPSCALE = 800 / 480
CPU_MAX_SIZE = 256  # a CPU trains the tiny model at up to 256 px; past that a study takes days
MIN_SUBSET = 20  # a subset smaller than this says nothing about data size
# Measured throughput of a 1-thread tiny GN Faster R-CNN run at 64 px (README: about 62 img/s; 44 on a busy
# machine); it falls with the pixels per image. Used for the CPU-hours estimate only.
CPU_IMG_PER_S_AT_64 = 45.0


@dataclass(frozen=True)
class DataSet:
    """What init-study reads off a COCO set: where it is and what sizes its images have."""

    train: SplitConfig
    val: SplitConfig
    train_images: int  # usable: with at least one non-crowd annotation
    val_images: int
    categories: int
    has_masks: bool
    median_short: int  # median shorter side of the training images, in pixels
    median_ratio: float  # median longer side / shorter side


@dataclass(frozen=True)
class Design:
    """The study's choices, each a number the study file states with its reason."""

    device: str  # cpu | cuda
    base: str  # a bundled config name
    detector: str
    size: int  # shorter side, train and test
    max_size: int
    anchors: tuple[int, ...]
    batch_size: int
    iters_1x: int
    warmup_iters: int
    eval_period: int
    checkpoint_period: int
    schedules: tuple[str, ...]  # on the full set
    subsets: tuple[int, ...]
    subset_schedules: tuple[str, ...]
    pretrained: str  # imagenet | a weights file | "pretrain" (the bundled pre-training step)
    val_size: int | str
    img_per_s: float  # for the cost estimate: per GPU on CUDA, per 1-thread process on a CPU


def find_splits(data: Path, val: str | None, images: str | None, val_images: str | None) -> tuple:
    """(train, val) SplitConfigs of a COCO folder or annotations file; a layout we cannot read is a one-line error
    that says what was looked for."""
    data = Path(data)
    if not data.exists():
        raise UserError(f"{data}: not found (pass a COCO folder or a COCO annotations .json file)")
    if data.is_file():
        if not val:
            raise UserError(f"{data}: an annotations file needs its validation set too: pass --val VAL.json "
                            "(and --val-images DIR when its images are elsewhere)")
        train = SplitConfig(_abs(_images_dir(data, images)), _abs(data))
        return train, SplitConfig(_abs(_images_dir(Path(val), val_images)), _abs(Path(val)))
    for train_ann, train_img, val_ann, val_img in _layouts(data):
        if train_ann.is_file() and val_ann.is_file():
            return (SplitConfig(_abs(Path(images or train_img)), _abs(train_ann)),
                    SplitConfig(_abs(Path(val_images or val_img)), _abs(val_ann)))
    raise UserError(
        f"{data}: no COCO layout found: looked for train/annotations.json + val/annotations.json (images in "
        "train/images, val/images), annotations/instances_train*.json + annotations/instances_val*.json (images in "
        "train*/, val*/), and train/_annotations.coco.json + valid/_annotations.coco.json; pass the annotations file "
        "and --val VAL.json instead")


def _abs(path: Path) -> str:
    """Absolute: the study file is read from wherever the study is started."""
    return str(Path(path).resolve())


def _images_dir(annotations: Path, given: str | None) -> Path:
    if given:
        return Path(given)
    beside = annotations.parent / "images"
    return beside if beside.is_dir() else annotations.parent


def _layouts(data: Path):
    """Candidate (train annotations, train images, val annotations, val images), in the order they are tried."""
    yield (data / "train" / "annotations.json", data / "train" / "images",
           data / "val" / "annotations.json", data / "val" / "images")
    for train_ann in sorted((data / "annotations").glob("instances_train*.json")):
        suffix = train_ann.stem[len("instances_train"):]  # 2017
        yield (train_ann, data / f"train{suffix}", data / "annotations" / f"instances_val{suffix}.json",
               data / f"val{suffix}")
    for val_name in ("valid", "val"):  # Roboflow's export: annotations beside the images
        yield (data / "train" / "_annotations.coco.json", data / "train",
               data / val_name / "_annotations.coco.json", data / val_name)


def describe(train: SplitConfig, val: SplitConfig) -> DataSet:
    """Check both splits as training will (one-line errors naming file and id) and measure the training set."""
    from rethink.data.validate import check_coco, check_pair

    # image headers only (seconds on COCO): every training run decodes its images when it starts
    train_check = check_coco(Path(train.images), Path(train.annotations), role="train", require_masks=False,
                             decode_images=False)
    val_check = check_coco(Path(val.images), Path(val.annotations), role="val", require_masks=False,
                           decode_images=False)
    check_pair(train_check, val_check)
    coco = train_check.coco
    usable = set(train_check.usable_image_ids)
    if not usable:
        raise UserError(f"{train.annotations}: no image has an annotation to train on")
    sides = [(min(im["width"], im["height"]), max(im["width"], im["height"])) for im in coco["images"]
             if im["id"] in usable]
    has_masks = all(a.get("segmentation") not in (None, []) for a in coco["annotations"] if not a.get("iscrowd"))
    return DataSet(train=train, val=val, train_images=len(usable), val_images=val_check.num_images,
                   categories=train_check.num_categories, has_masks=has_masks,
                   median_short=int(statistics.median(s for s, _ in sides)),
                   median_ratio=float(statistics.median(long / short for short, long in sides)))


def _round32(value: float) -> int:
    return max(32, int(round(value / 32)) * 32)


def design(ds: DataSet, device: str, pretrained: str | None, quick: bool) -> Design:
    """The study's numbers for this set on this hardware; every rule is in the module docstring."""
    cuda = device == "cuda"
    if cuda:
        base, preset_size, preset_anchors, batch, warmup = "paper/mask_rcnn_R50_FPN_gn.yaml", 800, 32, 16, 1000
        size = min(800, _round32(ds.median_short * PAPER_UPSCALE))
        detector = "mask_rcnn" if ds.has_masks else "faster_rcnn"
    else:
        base, preset_size, preset_anchors, batch, warmup = "tiny/faster_rcnn_gn.yaml", 64, 8, 2, 100
        size = min(CPU_MAX_SIZE, max(64, _round32(ds.median_short)))
        detector = "faster_rcnn"
    max_size = max(size, min(_round32(size * ds.median_ratio), int(size * 1333 / 800)))
    first = max(2, round(preset_anchors * size / preset_size))
    anchors = tuple(first * 2 ** i for i in range(5))
    iters_1x = max(10, round(PAPER_EPOCHS_1X * ds.train_images / batch))
    schedules = ("1x", "2x", "3x", "6x") if cuda else ("1x", "2x", "4x")
    fractions = (0.03, 0.1, 0.3) if cuda else (0.1,)
    subsets = tuple(sorted({round(ds.train_images * f) for f in fractions if ds.train_images * f >= MIN_SUBSET}))
    subset_schedules = ("1x", "2x")
    val_size: int | str = "full"
    if quick:
        # a few iterations per run, evaluations on a slice of val: it checks the pipeline, not the findings
        iters_1x, schedules, subset_schedules, val_size = 12, ("1x", "2x"), ("2x",), min(ds.val_images, 16)
        subsets = subsets[:1]
        if cuda:
            size, max_size = min(size, 320), min(max_size, 533)
    # warm-up at most a tenth of 1x: it must end before the first LR drop of the shortest schedule (2/3 of 1x)
    warmup = min(warmup, max(1, iters_1x // 10))
    # four evaluations per 1x: the forecast needs at least 4 before a trunk's first LR drop
    eval_period = max(1, iters_1x // 4)
    if cuda:
        # detectron2's V100 figure scaled by pixels, at most 4x: small images do not keep a GPU busy
        img_per_s = 16 / 0.309 / 8 * min(4.0, (800 * 1333) / (size * max_size))
    else:
        img_per_s = CPU_IMG_PER_S_AT_64 * (64 * 64) / (size * size)
    return Design(device=device, base=base, detector=detector, size=size, max_size=max_size, anchors=anchors,
                  batch_size=batch, iters_1x=iters_1x, warmup_iters=warmup, eval_period=eval_period,
                  checkpoint_period=max(eval_period, iters_1x // 2), schedules=schedules, subsets=subsets,
                  subset_schedules=subset_schedules, pretrained=pretrained or ("imagenet" if cuda else "pretrain"),
                  val_size=val_size, img_per_s=round(img_per_s, 1))


def study_text(name: str, ds: DataSet, d: Design) -> str:
    """The study file, with a comment on every choice (YAML written by hand: comments are the point)."""
    epochs = d.iters_1x * d.batch_size / ds.train_images
    hardware = "a CUDA GPU (the paper's preset)" if d.device == "cuda" else "a CPU (the tiny preset)"
    lines = [
        f"# Written by `rethink init-study` for {ds.train.annotations}",
        f"# {ds.train_images} training images, {ds.val_images} val images, {ds.categories} categories, "
        f"{'masks' if ds.has_masks else 'boxes only'}; median image {ds.median_short} px on its shorter side.",
        f"# Sized for {hardware}. Every number below is a choice: edit it (docs/own-data.md, docs/config.md).",
        f"name: {_q(name)}",
        f"base: {d.base}",
    ]
    if d.pretrained == "pretrain":
        lines += [
            "pretrain:",
            "  # the tiny backbone has no ImageNet weights: it is pre-trained on the bundled benchmark's source",
            "  # (run `rethink data synth --out runs/demo/benchmark` in the folder you start the study from), or",
            "  # give your own weights: rethink init-study DATA --pretrained FILE.safetensors",
            "  pretrain: tiny/pretrain.yaml",
        ]
    lines += [
        "set:",
        f"  model.detector: {d.detector}" + ("  # the set has no masks: Mask R-CNN would need them"
                                             if d.device == "cuda" and d.detector == "faster_rcnn" else ""),
        f"  model.anchor_sizes: {list(d.anchors)}  # the preset's anchors scaled with the image size",
        f"  data.train.images: {_q(ds.train.images)}",
        f"  data.train.annotations: {_q(ds.train.annotations)}",
        f"  data.val.images: {_q(ds.val.images)}",
        f"  data.val.annotations: {_q(ds.val.annotations)}",
        f"  data.min_size_train: [{d.size}]  # shorter side in pixels, training and test",
        f"  data.min_size_test: {d.size}",
        f"  data.max_size: {d.max_size}  # longer side at most",
        f"  data.val_size: {d.val_size}",
        f"  solver.batch_size: {d.batch_size}",
        f"  solver.iters_1x: {d.iters_1x}  # {epochs:.1f} epochs of the {ds.train_images} images, as the paper's 1x "
        f"on COCO ({PAPER_EPOCHS_1X:.1f})",
        f"  solver.warmup_iters: {d.warmup_iters}  # must stay below the first LR drop (2/3 of 1x)",
        f"  eval_period: {d.eval_period}  # four evaluations per 1x",
        f"  checkpoint_period: {d.checkpoint_period}",
    ]
    lines += _matrix_lines(d)
    lines += [
        f"gpu_img_per_s: {d.img_per_s}  # for the cost estimate: "
        + ("per GPU, detectron2's V100 figure scaled by pixels (at most 4x)" if d.device == "cuda"
           else "per 1-thread CPU run (measured on the tiny preset at 64 px, scaled by pixels)"),
        "report:",
        "  margin_ap: 1.0  # AP points within which random init counts as caught up",
    ]
    return "\n".join(lines) + "\n"


def _matrix_lines(d: Design) -> list:
    """The study file's matrix: the full set over the paper's schedules, and the smaller sets if any."""
    lines = [
        "matrix:",
        "  # the full set over the paper's schedules (the shorter ones fork from the longest at their first LR drop)",
        f"  - init: [random, {_q(d.pretrained)}]",
        f"    solver.schedule: [{', '.join(d.schedules)}]",
        "    data.train_size: [full]",
        "    seed: [0]  # add seeds (e.g. [0, 1, 2]) for 95% intervals",
    ]
    if d.subsets:
        lines += [
            "  # less data (the paper's 1k-35k of COCO's 118k): the best AP along each curve is what counts",
            f"  - init: [random, {_q(d.pretrained)}]",
            f"    solver.schedule: [{', '.join(d.subset_schedules)}]",
            f"    data.train_size: [{', '.join(map(str, d.subsets))}]",
            "    seed: [0]",
        ]
    return lines


def _q(text: str) -> str:
    """A YAML scalar for a path or name: quoted when YAML would read it as something else."""
    import yaml

    return yaml.safe_dump(text, default_style=None).strip().removesuffix("\n...").strip()


def cost_line(summary: dict, d: Design, jobs: int) -> str:
    """The cost in the hardware's own terms (plan prints GPU-hours)."""
    hours = summary["images_planned"] / d.img_per_s / 3600
    if d.device == "cuda":
        return (f"cost: about {hours:.1f} GPU-hours at {d.img_per_s} img/s per GPU (measure yours with "
                "benchmarks/gpu_check.sh and pass it as gpu_img_per_s)")
    wall = hours / max(1, jobs)
    return (f"cost: about {hours:.1f} CPU-hours of 1-thread runs at ~{d.img_per_s} img/s, {wall:.1f} h of wall "
            f"time with {jobs} runs side by side (rethink study --jobs {jobs})")


def write_study(data: Path, out: Path, device: str, pretrained: str | None, quick: bool, val: str | None = None,
                images: str | None = None, val_images: str | None = None) -> tuple[Path, Design, DataSet]:
    """Describe the set, design the study, write it to `out`; returns (path, design, data set)."""
    if out.exists():
        raise UserError(f"--out {out}: exists; pass another path, or delete it to write a new study")
    train, val_split = find_splits(data, val, images, val_images)
    ds = describe(train, val_split)
    if pretrained and pretrained not in ("imagenet",):
        path = Path(pretrained)
        if not path.is_file():
            raise UserError(f"--pretrained {pretrained}: not found (a backbone weights file, or imagenet)")
        pretrained = str(path.resolve())
    if pretrained == "imagenet" and device == "cpu":
        raise UserError("--pretrained imagenet: the CPU preset's tiny backbone has no ImageNet weights; pass a "
                        "weights file, or leave --pretrained out to pre-train on the bundled benchmark")
    d = design(ds, device, pretrained, quick)
    name = out.stem.replace(".", "_") or "study"
    from rethink.fileio import atomic_write_text

    atomic_write_text(out, study_text(name, ds, d))
    return out, d, ds


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
