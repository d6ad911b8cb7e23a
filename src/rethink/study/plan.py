"""Study planning: the paper's experiment matrix as runs, with trunk sharing.

A study file (YAML):

    name: demo
    base: ../tiny/faster_rcnn_gn.yaml     # a run config, relative to the study file
    set: {eval_period: 125}               # overrides of the base, for every run
    pretrain:                             # optional pre-training steps, run first; usable as an init source
      pretrain: ../tiny/pretrain.yaml
      moco_target:                        # or a mapping: the config, what to pre-train on, and overrides
        config: ../tiny/pretrain_moco.yaml
        train_on: target                  # the base config's training images (annotations unused), or a folder
        probe_on: target                  # the probe accuracies on the base config's training objects (boxes cropped)
        set: {label: "MoCo v2 on the target's images"}
    matrix:                               # one mapping, or a list of mappings whose runs are united
      - init: [random, pretrain]          # random, imagenet, a pretrain step's name, or a weights path
        solver.schedule: [0.5x, 1x, 3x]
        data.train_size: [full]
        seed: [0]
      - {init: [random, pretrain], solver.schedule: [3x], data.train_size: [200], seed: [0]}
    report: {margin_ap: 1.0}

Every matrix crosses `init` with all other axes, so the two arms of a cell differ in exactly the init.

Trunk sharing: runs equal in everything but the schedule share the longest one's trajectory up to each shorter
schedule's first LR drop (see schedule.fork_iter). The longest run (the trunk) writes a checkpoint exactly at
each fork point, and each shorter run starts there and trains only its tail.
"""

import dataclasses
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from rethink import config as cfgmod
from rethink import schedule as sched
from rethink.config import RunConfig
from rethink.errors import UserError

STUDY_KEYS = {"name", "base", "set", "pretrain", "matrix", "report", "gpu_img_per_s"}
RUN_CONFIG_KEYS = {"model", "data", "solver", "checkpoint_period", "eval_period", "log_period"}
# Documented throughput for GPU-hours estimates: detectron2's R50-FPN GN Mask R-CNN, 0.309 s/iter for 16 images
# on 8 V100 (about 52 img/s per 8-GPU machine, 6.5 per GPU).
DEFAULT_GPU_IMG_PER_S = 16 / 0.309 / 8


@dataclass(frozen=True)
class RunSpec:
    name: str
    init_label: str  # random | imagenet | a pretrain step's name | a weights file's stem
    config: RunConfig
    schedule: str
    factor: float
    train_size: int | str
    seed: int
    other: dict
    iters: int
    drops: tuple[int, int]
    group: str  # runs equal in everything but the schedule
    trunk: str | None = None
    fork_iter: int | None = None
    keep_iters: tuple[int, ...] = ()
    pretrain: str | None = None  # the pretrain step this run's init needs

    def to_json(self) -> dict:
        return {
            # a pre-training step's weights, relative to the study's --out folder (they do not exist before it runs)
            "name": self.name, "init": self.init_label, "schedule": self.schedule,
            "init_spec": f"pretrain/{self.pretrain}/backbone.safetensors" if self.pretrain else self.config.init,
            "schedule_factor": self.factor, "train_size": self.train_size, "seed": self.seed, "other": self.other,
            "iters": self.iters, "drops": list(self.drops), "batch_size": self.config.solver.batch_size,
            "trunk": self.trunk, "fork_iter": self.fork_iter, "keep_iters": list(self.keep_iters),
            "group": self.group, "pretrain": self.pretrain,
        }


def other_key(other: dict) -> str:
    """The key of a run's other axes (everything but init, schedule, size and seed), the same everywhere a study's
    runs are grouped: plan, executors, forecast, report."""
    return json.dumps(other, sort_keys=True)


@dataclass(frozen=True)
class StudyPlan:
    path: Path
    name: str
    runs: tuple[RunSpec, ...]
    pretrain: dict  # name -> pretrain config path
    margin_ap: float
    gpu_img_per_s: float
    init_cost: dict = field(default_factory=dict)  # source -> what its pre-training cost (report.init_cost)
    pretrain_set: dict = field(default_factory=dict)  # name -> ((key, value), ...): a step's own config overrides


def _label_for(init: str, pretrain_names) -> str:
    if init in ("random", "imagenet") or init in pretrain_names:
        return init
    return Path(init).stem


def _slug(value) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(value)).strip("-")


def load_plan(path: Path, overrides=(), pretrain_dir: Path | None = None, share_trunks: bool = True) -> StudyPlan:
    """Read and validate a study file; errors name the study file and the key."""
    path = Path(path)
    data = cfgmod.read_yaml(path)
    unknown = set(data) - STUDY_KEYS
    if unknown and unknown & RUN_CONFIG_KEYS:
        raise UserError(f"{path}: is a run config, not a study file: train it with `rethink train {path} --out DIR`, "
                        f"or write a study with `base: {path}` (`rethink init-study DATA` writes one for a COCO set)")
    if unknown:
        raise UserError(f"{path}: unknown key {sorted(unknown)[0]} (known: {', '.join(sorted(STUDY_KEYS))})")
    for key in ("base", "matrix"):
        if key not in data:
            raise UserError(f"{path}: missing key `{key}`")
    base = _base_config(path, data, overrides)
    pretrain_paths = _pretrain_paths(path, data.get("pretrain") or {})
    pretrain_set = _pretrain_set(path, data.get("pretrain") or {}, base)
    matrices = data["matrix"] if isinstance(data["matrix"], list) else [data["matrix"]]
    runs: dict[str, RunSpec] = {}
    for m_index, matrix in enumerate(matrices):
        where = f"{path}: matrix" + (f"[{m_index}]" if isinstance(data["matrix"], list) else "")
        for spec in _matrix_runs(where, matrix, base, pretrain_paths, pretrain_dir or path.parent / "pretrain"):
            if spec.name in runs and runs[spec.name].config != spec.config:
                raise UserError(f"{where}: two runs named {spec.name} differ; use distinct matrix values")
            runs[spec.name] = spec
    report = data.get("report") or {}
    margin = report.get("margin_ap", 1.0) if isinstance(report, dict) else 1.0
    if not isinstance(margin, (int, float)) or margin < 0:
        raise UserError(f"{path}: report.margin_ap: expected a non-negative number of AP points")
    init_cost = _init_cost(path, report.get("init_cost") if isinstance(report, dict) else None)
    gpu_ips = float(data.get("gpu_img_per_s", DEFAULT_GPU_IMG_PER_S))
    specs = _share_trunks(list(runs.values())) if share_trunks else sorted(runs.values(), key=lambda r: r.name)
    study = StudyPlan(path, str(data.get("name", path.stem)), tuple(specs), pretrain_paths, float(margin), gpu_ips,
                      init_cost, pretrain_set)
    _check_controlled(study)
    labels = {spec.init_label for spec in study.runs} - {"random"}
    for source in init_cost:
        if source not in labels:
            raise UserError(f"{path}: report.init_cost.{source}: no pretrained init of the study is called {source} "
                            f"(they are: {', '.join(sorted(labels))})")
    return study


def _beside_or_bundled(path: Path, text: str) -> Path | None:
    """A config a study names: a file relative to the study file, else a bundled config of that name
    (`tiny/faster_rcnn_gn.yaml`), as on the command line; None when neither exists."""
    from rethink.configs import bundled_dir

    beside = (path.parent / text).resolve()
    if beside.is_file():
        return beside
    bundled = bundled_dir() / text
    if not Path(text).is_absolute() and bundled.is_file():
        return bundled
    return None


def _base_config(path: Path, data: dict, overrides) -> dict:
    """The base run config as a dict, with the study's `set` and the command line's --set applied."""
    base_path = _beside_or_bundled(path, str(data["base"]))
    if base_path is None:
        raise UserError(f"{path}: base: config {(path.parent / str(data['base'])).resolve()} not found, nor a bundled "
                        "config of that name (e.g. tiny/faster_rcnn_gn.yaml, paper/mask_rcnn_R50_FPN_gn.yaml)")
    base = cfgmod.read_run_yaml(base_path)
    shared = data.get("set") or {}
    if not isinstance(shared, dict):
        raise UserError(f"{path}: set: expected a mapping of config keys to values")
    if "init" in shared:
        raise UserError(f"{path}: set: init is the matrix axis that tells the arms apart; list it under matrix")
    for key, value in shared.items():
        cfgmod.set_key(base, key, value)
    for item in overrides:
        key, value = cfgmod.parse_override(item)
        cfgmod.set_key(base, key, value)
    return base


def _pretrain_paths(path: Path, pretrain) -> dict[str, Path]:
    """The study's pre-training steps: name -> its config file."""
    if not isinstance(pretrain, dict):
        raise UserError(f"{path}: pretrain: expected a mapping of name -> pretraining config")
    paths = {}
    for name, cfg_path in pretrain.items():
        if name in ("random", "imagenet") or not re.fullmatch(r"[A-Za-z0-9_-]+", str(name)):
            raise UserError(f"{path}: pretrain: '{name}' cannot name a pre-training step (letters, digits, _ and -)")
        if isinstance(cfg_path, dict):
            if "config" not in cfg_path:
                raise UserError(f"{path}: pretrain.{name}: a mapping needs `config` (and optionally train_on, probe_on, set)")
            cfg_path = cfg_path["config"]
        p = _beside_or_bundled(path, str(cfg_path))
        if p is None:
            raise UserError(f"{path}: pretrain.{name}: config {(path.parent / str(cfg_path)).resolve()} not found, nor "
                            "a bundled config of that name (e.g. tiny/pretrain.yaml)")
        paths[name] = p
    return paths


STEP_KEYS = {"config", "train_on", "probe_on", "set"}


def _pretrain_set(path: Path, pretrain: dict, base: dict) -> dict:
    """Each mapping step's own overrides: `train_on: target` pre-trains on the base run config's training images
    (its COCO file's images; annotations unused, nothing copied), `train_on: FOLDER` on any image folder (a data
    path: relative to the current directory); `probe_on: target` measures a self-supervised step's features on the
    base config's training objects (its COCO file's boxes, cropped and labelled: more of them than the val split
    has, so a steadier probe; labels used for the measure only); then the step's `set`."""
    out = {}
    for name, step in pretrain.items():
        if not isinstance(step, dict):
            continue
        where = f"{path}: pretrain.{name}"
        unknown = set(step) - STEP_KEYS
        if unknown:
            raise UserError(f"{where}: unknown key {sorted(unknown)[0]} (known: {', '.join(sorted(STEP_KEYS))})")
        pairs = []
        train_on = step.get("train_on")
        if train_on == "target":
            train = cfgmod.resolve_paths(cfgmod.config_from_dict(base)).data.train
            pairs += [("data.train", train.annotations), ("data.train_images", train.images)]
        elif isinstance(train_on, str) and train_on:
            pairs += [("data.train", str(Path(train_on).resolve()))]
        elif train_on is not None:
            raise UserError(f"{where}.train_on: expected `target` or an image folder, got {train_on!r}")
        probe_on = step.get("probe_on")
        if probe_on == "target":
            train = cfgmod.resolve_paths(cfgmod.config_from_dict(base)).data.train
            pairs += [("data.val", train.annotations), ("data.val_images", train.images)]
        elif probe_on is not None:
            raise UserError(f"{where}.probe_on: expected `target`, got {probe_on!r}")
        shared = step.get("set") or {}
        if not isinstance(shared, dict):
            raise UserError(f"{where}.set: expected a mapping of pre-training config keys to values")
        pairs += list(shared.items())
        out[name] = tuple(pairs)
    return out


def _matrix_runs(where: str, matrix, base: dict, pretrain_paths: dict, pretrain_dir: Path) -> list[RunSpec]:
    """The runs of one matrix: every combination of its axes' values on top of the base config."""
    if not isinstance(matrix, dict) or not matrix:
        raise UserError(f"{where}: expected a mapping of config keys to lists of values")
    if "init" not in matrix:
        raise UserError(f"{where}: needs an `init` axis (random and at least one pretrained source)")
    axes = {("solver.schedule" if k == "schedule" else k): (v if isinstance(v, list) else [v])
            for k, v in matrix.items()}
    inits = [str(v) for v in axes["init"]]
    if "random" not in inits or len(inits) < 2:
        raise UserError(f"{where}: init: needs `random` and at least one pretrained source, got {inits}")
    for key, values in axes.items():
        if not values:
            raise UserError(f"{where}: {key}: empty list")
    keys = list(axes)
    specs = []
    for combo in itertools.product(*(axes[k] for k in keys)):
        raw = cfgmod._deepcopy(base)
        for key, value in zip(keys, combo):
            cfgmod.set_key(raw, key, value)
        init = str(raw.get("init", "random"))
        if init in pretrain_paths:
            raw["init"] = str(pretrain_dir / init / "backbone.safetensors")
        try:
            cfg = cfgmod.resolve_paths(cfgmod.config_from_dict(raw))
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
        if init not in pretrain_paths:
            _check_init_exists(where, init, cfg.init, pretrain_paths)
        specs.append(_make_spec(cfg, init, pretrain_paths, keys))
    return specs


def _check_init_exists(where: str, init: str, resolved: str, pretrain_paths: dict) -> None:
    """An init that names no source and no file fails here, at plan time: found only when its arm starts, it would
    fail after the random arm had trained in full (days of GPU time on a paper study)."""
    if init in ("random", "imagenet") or Path(resolved).is_file():
        return
    import difflib

    names = ["random", "imagenet", *pretrain_paths]
    close = difflib.get_close_matches(init, names, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    steps = f", a pre-training step of the study ({', '.join(pretrain_paths)})" if pretrain_paths else ""
    raise UserError(f"{where}: init: '{init}' is not random, imagenet{steps}, nor a weights file "
                    f"({resolved} not found){hint}")


INIT_COST_KEYS = ("images", "instances", "pixels", "images_per_epoch", "epochs", "resolution")


def _init_cost(path: Path, value) -> dict:
    """report.init_cost: {source: {images | images_per_epoch + epochs, resolution, ..., note}}, for the
    pretrained inits that rethink does not pre-train itself (e.g. imagenet); checked key by key."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{path}: report.init_cost: expected a mapping of init source -> cost")
    out = {}
    for source, cost in value.items():
        where = f"{path}: report.init_cost.{source}"
        if not isinstance(cost, dict):
            raise UserError(f"{where}: expected a mapping with keys among {', '.join(INIT_COST_KEYS)}, note")
        for key, v in cost.items():
            if key == "note":
                continue
            if key not in INIT_COST_KEYS:
                raise UserError(f"{where}: unknown key {key} (known: {', '.join(INIT_COST_KEYS)}, note)")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise UserError(f"{where}.{key}: expected a positive number, got {v!r}")
        out[str(source)] = dict(cost)
    return out


def _make_spec(cfg: RunConfig, init: str, pretrain_paths: dict, axis_keys) -> RunSpec:
    label = _label_for(init, pretrain_paths)
    factor = sched.parse_schedule(cfg.solver.schedule)
    other = {k: cfgmod.get_key(cfgmod.to_dict(cfg), k) for k in axis_keys
             if k not in ("init", "solver.schedule", "data.train_size", "seed")}
    size = cfg.data.train_size
    name = f"{label}_{sched.format_schedule(factor)}_n{size}_s{cfg.seed}"
    for k, v in sorted(other.items()):
        name += f"_{_slug(k.split('.')[-1])}-{_slug(v)}"
    # Runs equal in everything but the schedule (the init included) share a trunk.
    group_cfg = dataclasses.replace(cfg, solver=dataclasses.replace(cfg.solver, schedule="1x"))
    group = json.dumps(cfgmod.to_dict(group_cfg), sort_keys=True)
    return RunSpec(
        name=name, init_label=label, config=cfg, schedule=sched.format_schedule(factor), factor=factor,
        train_size=size, seed=cfg.seed, other=other, iters=sched.total_iters(factor, cfg.solver.iters_1x),
        drops=sched.drop_iters(factor, cfg.solver.iters_1x), group=group,
        pretrain=init if init in pretrain_paths else None,
    )


def _share_trunks(runs: list[RunSpec]) -> list[RunSpec]:
    """Point each shorter schedule at its group's longest run, and ask that trunk to keep the fork points."""
    out = []
    by_group: dict[str, list[RunSpec]] = {}
    for r in runs:
        by_group.setdefault(r.group, []).append(r)
    for members in by_group.values():
        members.sort(key=lambda r: -r.factor)
        trunk = members[0]
        forks = {}
        for r in members[1:]:
            it = sched.fork_iter(r.factor, trunk.factor, r.config.solver.iters_1x)
            forks[r.name] = it
        keep = tuple(sorted({it for it in forks.values() if it is not None}))
        out.append(dataclasses.replace(trunk, keep_iters=keep))
        for r in members[1:]:
            it = forks[r.name]
            out.append(dataclasses.replace(r, trunk=trunk.name if it is not None else None, fork_iter=it))
    return sorted(out, key=lambda r: (r.trunk is not None, r.name))


def _check_controlled(study: StudyPlan) -> None:
    """Within a cell (everything but init equal), the arms' configs may differ only in `init`."""
    cells: dict[tuple, list[RunSpec]] = {}
    for r in study.runs:
        cells.setdefault((r.schedule, str(r.train_size), r.seed, other_key(r.other)), []).append(r)
    for members in cells.values():
        reference = cfgmod.to_dict(members[0].config)
        for r in members[1:]:
            changed = [k for k in cfgmod.diff(reference, cfgmod.to_dict(r.config)) if k != "init"]
            if changed:
                raise UserError(f"{study.path}: runs {members[0].name} and {r.name} differ in {', '.join(changed)}, "
                                "not only in init")


def plan_summary(study: StudyPlan, img_per_s: float | None = None) -> dict:
    """What `rethink plan` prints: runs, forks, iterations and images planned versus naive, GPU-hours."""
    ips = img_per_s or study.gpu_img_per_s
    runs = []
    planned = naive = evals_planned = evals_naive = images_planned = images_naive = 0
    for r in study.runs:
        start = r.fork_iter or 0
        own = r.iters - start
        batch = r.config.solver.batch_size
        points = sched.eval_iters(r.iters, r.config.eval_period)
        planned += own
        naive += r.iters
        evals_naive += len(points)
        evals_planned += len([p for p in points if p > start])
        images_planned += own * batch
        images_naive += r.iters * batch
        runs.append({**r.to_json(), "iters_to_train": own, "images": own * batch})
    return {
        "study": study.name,
        "runs": runs,
        "iterations_planned": planned,
        "iterations_naive": naive,
        "ratio": planned / naive if naive else 1.0,
        "evaluations_planned": evals_planned,
        "evaluations_naive": evals_naive,
        "images_planned": images_planned,
        "images_naive": images_naive,
        "img_per_s": ips,
        "gpu_hours_planned": sched.gpu_hours(images_planned, ips),
        "gpu_hours_naive": sched.gpu_hours(images_naive, ips),
        "pretrain": {k: str(v) for k, v in study.pretrain.items()},
        "pretrain_set": {k: {key: value for key, value in v} for k, v in study.pretrain_set.items()},
    }


def print_plan(summary: dict) -> None:
    print(f"study {summary['study']}: {len(summary['runs'])} runs")
    print(f"{'run':44s} {'iters':>9s} {'trains':>9s}  from")
    for r in summary["runs"]:
        source = f"{r['trunk']} @ {r['fork_iter']}" if r["trunk"] else "scratch"
        if r["keep_iters"]:
            source += f" (trunk; keeps {', '.join(map(str, r['keep_iters']))})"
        print(f"{r['name']:44s} {r['iters']:9d} {r['iters_to_train']:9d}  {source}")
    print(f"iterations: {summary['iterations_planned']} planned vs {summary['iterations_naive']} run separately "
          f"({summary['ratio']:.2f}); evaluations {summary['evaluations_planned']} vs {summary['evaluations_naive']}")
    print(f"images: {summary['images_planned']} planned; about {summary['gpu_hours_planned']:.1f} GPU-hours at "
          f"{summary['img_per_s']:.1f} img/s per GPU (naive {summary['gpu_hours_naive']:.1f})")
