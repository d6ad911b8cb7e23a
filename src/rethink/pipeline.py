"""`rethink study` from start to end: check a study, run its pre-training steps, then its runs (all at once, or
adaptively in segments), then write the report.

This module sits above both halves it joins: the executors (study/run.py, study/adaptive.py) and the report
(report/render.py). Neither of them imports the other or this module, so imports run one way: cli and demo over
this pipeline, over study and report, over engine, over models, over data, config and fileio.
"""

import dataclasses
import json
import sys
from pathlib import Path

from rethink.engine.loop import available_cores
from rethink.errors import UserError
from rethink.fileio import atomic_write_text
from rethink.report.findings import all_verdicts, summarize
from rethink.report.render import write_report
from rethink.study import store
from rethink.study.adaptive import run_adaptive
from rethink.study.plan import StudyPlan, load_plan, other_key
from rethink.study.results import RANDOM, StudyResults
from rethink.study.run import default_jobs, run_local, run_slurm


def run_pretrain_steps(study: StudyPlan, study_dir: Path, overrides=(), progress: bool = True) -> None:
    from rethink.config import load_pretrain_config
    from rethink.engine.pretrain import pretrain

    needed = {s.pretrain for s in study.runs if s.pretrain}
    for name in sorted(needed):
        out = study_dir / "pretrain" / name
        if (out / "pretrain.json").exists():
            continue
        if progress:
            print(f"[study] pre-training {name} ({study.pretrain[name]})", flush=True)
        cfg = load_pretrain_config(study.pretrain[name], step_overrides(study, name, overrides))
        if cfg.threads == 0 and cfg.device != "cuda":
            # The thread count changes how CPU kernels split their sums, and a short pre-training amplifies that
            # (the demo's top-1 moved by 7 points between 1 and 2 threads): a study's backbone must not depend on
            # the load when it ran, so its step takes the cores, not what the load leaves free.
            cfg = dataclasses.replace(cfg, threads=min(available_cores(), 8))
        pretrain(cfg, out, progress=progress)


def step_overrides(study: StudyPlan, name: str, overrides=()) -> list:
    """A pre-training step's overrides: the command's, then the step's own (train_on, set), so a step that says
    what it trains on wins."""
    return [*overrides, *study.pretrain_set.get(name, ())]


def check_init_files(study: StudyPlan) -> None:
    """Each weights file a study inits from is read and loaded into its backbone before any run starts: a file
    that does not fit would otherwise fail its arm only after the random arm had trained in full."""
    from rethink.models import backbone as bb
    from rethink.models.detector import build_backbone_with_fpn

    checked = set()
    for spec in study.runs:
        cfg = spec.config
        if spec.pretrain or cfg.init in ("random", "imagenet") or (cfg.init, cfg.model) in checked:
            continue
        checked.add((cfg.init, cfg.model))
        module = build_backbone_with_fpn(cfg.model)
        body = module.body.body if isinstance(module.body, bb.TimmFeatures) else module.body
        try:
            bb.load_backbone_weights(body, bb.read_weights_file(cfg.init), cfg.init, cfg.init_allow_bn_stats)
        except UserError as e:
            raise UserError(f"{study.path}: init of {spec.name}: {e}") from None


def check_study_data(study: StudyPlan) -> None:
    """The study's datasets are checked once before any run starts: bad data would otherwise fail every run at
    its start, each with the same message, and the study would end with a list of failed runs."""
    from rethink.data.validate import check_coco, check_pair, check_train_size

    by_data: dict[tuple, list] = {}
    for spec in study.runs:
        d = spec.config.data
        key = (d.train, d.val, spec.config.model.detector == "mask_rcnn")
        by_data.setdefault(key, []).append(d.train_size)
    for (train, val, masks), sizes in by_data.items():
        try:
            # image headers only: each run decodes its images when it starts
            check = check_coco(Path(train.images), Path(train.annotations), role="train", require_masks=masks,
                               decode_images=False)
            check_pair(check, check_coco(Path(val.images), Path(val.annotations), role="val", require_masks=masks,
                                         decode_images=False))
            for size in sizes:
                check_train_size(check, size)
        except UserError as e:
            raise UserError(f"{study.path}: {e}") from None


def check_pretrain_data(study: StudyPlan, out: Path, overrides=()) -> None:
    """The data of each pre-training step still to run exists; the bundled step's source is the offline
    benchmark, generated on demand, and the message says how."""
    from rethink.config import load_pretrain_config

    needed = sorted({s.pretrain for s in study.runs if s.pretrain})
    for name in needed:
        if (out / "pretrain" / name / "pretrain.json").exists():
            continue
        try:
            cfg = load_pretrain_config(study.pretrain[name], step_overrides(study, name, overrides))
        except UserError as e:
            raise UserError(f"{study.path}: pretrain.{name}: {e}") from None
        source = Path(cfg.data.train)
        if not source.exists():
            hint = ""
            if "source" in source.parts and any("benchmark" in part for part in source.parts):
                root = Path(*source.parts[:source.parts.index("source")])
                hint = f"; generate the bundled benchmark first: rethink data synth --out {root}"
            raise UserError(f"{study.path}: pretrain.{name}: data.train {source} not found (paths in "
                            f"{study.pretrain[name].name} are relative to the folder you run in){hint}")


def report_judge(study: StudyResults) -> dict:
    """What `rethink study --adaptive` must not change (study/adaptive.py `decide`): the status of every finding the
    report draws, for every pretrained source and `other` group, and the runs those findings read beyond a final box
    AP, which a forecast does not give: localization the AP50 and AP75 of the runs at its schedule (their measured
    final: until_iter None), converges_faster the curves of the longest schedule up to their first LR drop."""
    statuses, needs = {}, []
    for v in all_verdicts(summarize(study)):
        label = v["source"] + (f", {json.dumps(v['other'], sort_keys=True)}" if v["other"] else "")
        runs = [r for r in study.runs if r.other_key == other_key(v["other"]) and r.init in (v["source"], RANDOM)]
        for key, finding in v["findings"].items():
            statuses[f"{key} ({label})"] = finding["status"]
        loc, fast = v["findings"]["localization"], v["findings"]["converges_faster"]
        if loc.get("schedule") is not None:
            needs += [{"finding": "localization", "run": r.name, "until_iter": None} for r in runs
                      if r.schedule == loc["schedule"] and r.train_size == loc["train_size"]]
        at_size = [r for r in runs if r.train_size == fast.get("train_size")]
        if at_size:
            longest = fast.get("curve_schedule") or max(at_size, key=lambda r: r.schedule_factor).schedule
            needs += [{"finding": "converges_faster", "run": r.name, "until_iter": r.drops[0] if r.drops else r.iters}
                      for r in at_size if r.schedule == longest]
    return {"statuses": statuses, "needs": needs}


def run_study(study_path: Path, out: Path, executor: str = "local", jobs: int | None = None, nproc: int = 1,
              slurm: dict | None = None, progress: bool = True, overrides=(), pretrain_overrides=(),
              share_trunks: bool = True, adaptive: bool = False) -> int:
    out = Path(out)
    if adaptive and executor != "local":
        raise UserError(f"--adaptive: runs the trunks in segments on this machine (--executor local), "
                        f"not with --executor {executor}")
    study = load_plan(study_path, overrides, pretrain_dir=out / "pretrain", share_trunks=share_trunks)
    check_init_files(study)
    check_study_data(study)
    check_pretrain_data(study, out, pretrain_overrides)
    out.mkdir(parents=True, exist_ok=True)
    with store.StudyLock(out):
        atomic_write_text(out / "study.yaml", Path(study_path).read_text())
        store.write_index(out, study)
        run_pretrain_steps(study, out, pretrain_overrides, progress)
        if adaptive:
            errors = run_adaptive(study, out, jobs or default_jobs(), report_judge, progress)
        elif executor == "local":
            errors = run_local(study, out, jobs or default_jobs(), 1, progress)
        elif executor == "torchrun":
            errors = run_local(study, out, 1, nproc, progress)
        elif executor == "slurm":
            errors = run_slurm(study, out, slurm or {}, progress)
        else:
            raise UserError(f"--executor: '{executor}' is not one of local, torchrun, slurm")
        index = store.write_index(out, study, set(), errors)
        report = write_report(out)
    done = sum(r["state"] in ("done", "settled") for r in index["runs"])
    print(f"[study] {done}/{len(index['runs'])} runs done; report: {report}", flush=True)
    for r in index["runs"]:
        if r["state"] not in ("done", "settled"):
            print(f"[study] {r['name']}: {r['state']}: {r.get('reason') or ''}", file=sys.stderr)
    return 0 if done == len(index["runs"]) else 1
