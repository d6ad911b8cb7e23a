"""Command line: parse arguments, call one function per command, turn errors into exit codes.

Exit codes: 0 done, 2 bad input (one line on stderr, no traceback), 1 anything else (a failed run says why;
an unexpected error keeps its traceback, which is a bug report).
"""

import argparse
import json
import sys
from pathlib import Path

from rethink.errors import Interrupted, RunFailed, UserError
from rethink.fileio import strict_json


def _add_overrides(p):
    # one or more after one --set, and --set may be repeated (MMDetection's --cfg-options a=1 b=2)
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config keys, e.g. --set solver.schedule=2x seed=1 (repeatable)")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("rethink")
    except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
        return "unknown (not installed)"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, as every other bad input gets (argparse prints its usage block first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rethink", description="Do you need ImageNet pre-training? "
                                     "Train the same detector from random and pretrained init and compare.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_commands(sub)
    _add_study_commands(sub)
    return parser


def _add_run_commands(sub) -> None:
    """One run's commands: train, eval, check-data, data synth, pretrain."""
    p = sub.add_parser("train", help="train one detector (resumes an unfinished run in --out)")
    p.add_argument("config")
    p.add_argument("--out", required=True)
    p.add_argument("--nproc", type=int, default=1, help="processes on this machine (wraps torchrun)")
    p.add_argument("--no-progress", action="store_true")
    # set by `rethink study` for a shorter schedule that starts from its trunk's checkpoint
    p.add_argument("--fork-from", default=None, help=argparse.SUPPRESS)
    p.add_argument("--keep-iters", default="", help=argparse.SUPPRESS)
    p.add_argument("--stop-at", type=int, default=None, help=argparse.SUPPRESS)  # an adaptive study's segment
    _add_overrides(p)

    p = sub.add_parser("eval", help="evaluate saved weights on the config's validation set")
    p.add_argument("config")
    p.add_argument("--weights", required=True, help="a checkpoint from a run (checkpoints/iter_*.pt)")
    p.add_argument("--predictions", default=None, metavar="FILE",
                   help="write the val-set detections there as COCO results JSON (coco_instances_results.json)")
    _add_overrides(p)

    p = sub.add_parser("check-data", help="validate the datasets a config points to")
    p.add_argument("config")
    p.add_argument("--deep", action="store_true", help="decode every image (finds truncated files)")
    _add_overrides(p)

    p = sub.add_parser("data", help="datasets")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser("synth", help="generate the bundled offline benchmark")
    q.add_argument("--out", required=True)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--scale", default="demo")

    p = sub.add_parser("pretrain", help="pre-train a backbone: supervised (labelled ImageFolder) or "
                       "self-supervised (method: moco_v2 | densecl, any images)")
    p.add_argument("config")
    p.add_argument("--out", required=True)
    p.add_argument("--no-progress", action="store_true")
    _add_overrides(p)


def _add_study_commands(sub) -> None:
    """A study's commands: plan, study, status, report, forecast, and the demo."""
    p = sub.add_parser("plan", help="print the runs of a study, its forks and the iterations saved")
    p.add_argument("study")
    p.add_argument("--json", action="store_true")
    p.add_argument("--img-per-s", type=float, default=None, help="throughput for the GPU-hours estimate")
    _add_overrides(p)

    p = sub.add_parser("study", help="run what is missing of a study, then write its report")
    p.add_argument("study")
    p.add_argument("--out", required=True)
    p.add_argument("--executor", choices=["local", "torchrun", "slurm"], default="local")
    p.add_argument("--jobs", type=int, default=None, help="local: runs side by side (default: from the core count)")
    p.add_argument("--nproc", type=int, default=1, help="torchrun: processes per run")
    p.add_argument("--slurm-partition", default=None)
    p.add_argument("--slurm-gpus-per-node", type=int, default=8)
    p.add_argument("--slurm-time-min", type=int, default=4320)
    p.add_argument("--slurm-folder", default=None)
    p.add_argument("--slurm-cluster", default=None, help=argparse.SUPPRESS)  # "local": submitit's local executor
    p.add_argument("--adaptive", action="store_true", help="run the trunks in segments, forecast after each, and "
                   "stop those whose verdict is settled (study/adaptive.py)")
    p.add_argument("--no-progress", action="store_true")
    _add_overrides(p)

    p = sub.add_parser("init-study", help="write a study file for your COCO set (the paper's matrix, scaled to the "
                       "set and this machine) and print its cost")
    p.add_argument("data", help="a COCO folder, or a training annotations .json file (then also --val)")
    p.add_argument("--out", default="study.yaml", help="the study file to write (default: study.yaml)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="the hardware to size it for (default: this machine's)")
    p.add_argument("--pretrained", default=None, metavar="SOURCE", help="the pretrained arm: imagenet or a backbone "
                   "weights file (default: imagenet on CUDA, the bundled pre-training on a CPU)")
    p.add_argument("--quick", action="store_true", help="a few iterations per run: checks the pipeline in minutes")
    p.add_argument("--val", default=None, help="validation annotations, when DATA is an annotations file")
    p.add_argument("--images", default=None, help="training images folder (default: found from the layout)")
    p.add_argument("--val-images", default=None, help="validation images folder (default: found from the layout)")

    p = sub.add_parser("status", help="the state of each run of a study directory")
    p.add_argument("dir")

    p = sub.add_parser("report", help="write DIR/report/ (figures, tables, statistics, verdict)")
    p.add_argument("dir")

    p = sub.add_parser("forecast", help="forecast each arm's final AP per schedule, and when random catches up")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true")
    p.add_argument("--schedules", default=None, help="schedules to forecast, e.g. 2x,3x,6x "
                   "(default: the study's and longer ones up to twice the longest)")

    p = sub.add_parser("demo", help="the whole pipeline on the bundled benchmark, on a CPU, in minutes")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="a much shorter version (checks the pipeline)")
    p.add_argument("--seeds", type=int, default=1, help="run the study over seeds 0..N-1 (paired 95%% intervals)")
    p.add_argument("--adaptive", action="store_true", help="run the study with rethink study --adaptive")
    p.add_argument("--sources", action="store_true", help="several pre-trained sources (supervised, MoCo v2 and "
                   "DenseCL on the target's own and extra unlabelled images, MoCo v2 on the source) against random")


def _config_path(text: str) -> Path:
    """A config argument: a file on disk, or the name of a bundled config (`tiny/faster_rcnn_gn.yaml`)."""
    from rethink.configs import find_config

    return find_config(text)


def _writable_dir(text: str, what: str = "--out") -> Path:
    """A folder the command will create or fill: refused before any work if it cannot be written."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {text}: is a file, not a folder")
    _check_can_write(path if path.exists() else path.parent, text, what)
    return path


def _writable_file(text: str, what: str) -> Path:
    """A file the command will write: refused before any work if it cannot be written."""
    path = Path(text)
    if path.is_dir():
        raise UserError(f"{what} {text}: is a folder, not a file")
    _check_can_write(path.parent, text, what)
    return path


def _check_can_write(folder: Path, text: str, what: str) -> None:
    """Write a scratch file into `folder`, or, while it does not exist, into its nearest existing parent
    (os.access says yes to root on a read-only file system; a real write does not)."""
    import tempfile

    folder = folder.absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"{what} {text}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UserError(f"{what} {text}: cannot write in {folder} ({e.strerror or e})") from None


def _load(args):
    from rethink.config import load_config, resolve_paths

    return resolve_paths(load_config(_config_path(args.config), args.overrides))


def _at_least(value, minimum, flag: str):
    """A numeric option checked here, where a bad value gets the one-line error every bad input gets."""
    if value is not None and value < minimum:
        raise UserError(f"{flag} {value}: must be at least {minimum}")
    return value


def cmd_train(args) -> int:
    _at_least(args.nproc, 1, "--nproc")
    _writable_dir(args.out)
    if args.nproc > 1:
        from rethink.engine.launch import run_torchrun, train_argv

        keep = [k for k in args.keep_iters.split(",") if k]
        argv = train_argv(_config_path(args.config), args.out, args.overrides, args.fork_from, keep,
                          progress=not args.no_progress, stop_at=args.stop_at)
        return run_torchrun(args.nproc, argv)
    from rethink.engine.train import train

    keep = tuple(int(k) for k in args.keep_iters.split(",") if k)
    fork = Path(args.fork_from) if args.fork_from else None
    final = train(_load(args), Path(args.out), fork_from=fork, keep_iters=keep, progress=not args.no_progress,
                  stop_at=args.stop_at)
    _print_final(args.out, final)
    return 0


def _print_final(out, final: dict) -> None:
    from rethink.engine import distributed

    if distributed.is_main():
        best = final.get("best") or {}
        print(f"{out}: done, {final['iters']} iterations, bbox/AP {final['final'].get('bbox/AP', float('nan')):.2f} "
              f"(best {best.get('bbox/AP', float('nan')):.2f} at {final.get('best_iter')}), "
              f"{final['wall_time_s']:.0f} s")


def cmd_eval(args) -> int:
    from rethink.engine.run_eval import evaluate_weights

    predictions = _writable_file(args.predictions, "--predictions") if args.predictions else None
    metrics = evaluate_weights(_load(args), Path(args.weights), per_category=True, predictions=predictions)
    print(strict_json(metrics, indent=2, sort_keys=True))
    return 0


def cmd_check_data(args) -> int:
    from rethink.data.validate import check_coco, check_train_size

    cfg = _load(args)
    masks = cfg.model.detector == "mask_rcnn"
    decode = True if args.deep else None
    for role, split in (("train", cfg.data.train), ("val", cfg.data.val)):
        check = check_coco(Path(split.images), Path(split.annotations), role=role, require_masks=masks,
                           decode_images=decode)
        print(f"[{role}] {check.summary()}")
        if role == "train":
            n = check_train_size(check, cfg.data.train_size)
            print(f"[train] data.train_size={cfg.data.train_size}: {n} training images")
    print("data OK")
    return 0


def cmd_data(args) -> int:
    from rethink.data.synth import write_benchmark

    _writable_dir(args.out)
    manifest = write_benchmark(Path(args.out), seed=args.seed, scale=args.scale)
    print(f"{args.out}: benchmark ready ({json.dumps(manifest.get('counts', {}))})")
    return 0


def cmd_pretrain(args) -> int:
    from rethink.config import load_pretrain_config
    from rethink.engine.pretrain import pretrain

    _writable_dir(args.out)
    record = pretrain(load_pretrain_config(_config_path(args.config), args.overrides), Path(args.out),
                      progress=not args.no_progress)
    if record.get("top1") is not None:
        signal = f"val top-1 {record['top1']:.1f}%"
    elif record.get("probe_top1") is not None:
        signal = (f"linear probe top-1 {record['probe_top1']:.1f}%, kNN {record['knn_top1']:.1f}% (random init's "
                  f"features: {record['probe_top1_init']:.1f}%, {record['knn_top1_init']:.1f}%)")
    else:
        signal = f"loss {record['loss']:.3f} (no labelled data.val for the probe accuracies)"
    collapsed = f", COLLAPSED at iteration {record['collapse_iter']}" if record.get("collapsed") else ""
    print(f"{args.out}: backbone.safetensors written ({record['label']}), {signal}{collapsed}, "
          f"{record['images_seen']} images, {record['wall_time_s']:.0f} s")
    return 0


def cmd_plan(args) -> int:
    from rethink.study.plan import load_plan, plan_summary, print_plan

    if args.img_per_s is not None and args.img_per_s <= 0:
        raise UserError(f"--img-per-s {args.img_per_s}: must be a positive number of images per second per GPU")
    study = load_plan(_config_path(args.study), args.overrides)
    summary = plan_summary(study, img_per_s=args.img_per_s)
    if args.json:
        print(strict_json(summary, indent=2))
    else:
        print_plan(summary)
    return 0


def cmd_study(args) -> int:
    from rethink.pipeline import run_study

    for flag, value in (("--jobs", args.jobs), ("--nproc", args.nproc), ("--slurm-gpus-per-node",
                        args.slurm_gpus_per_node), ("--slurm-time-min", args.slurm_time_min)):
        _at_least(value, 1, flag)
    _writable_dir(args.out)
    return run_study(_config_path(args.study), Path(args.out), executor=args.executor, jobs=args.jobs, nproc=args.nproc,
                     slurm=dict(partition=args.slurm_partition, gpus_per_node=args.slurm_gpus_per_node,
                                time_min=args.slurm_time_min, folder=args.slurm_folder, cluster=args.slurm_cluster),
                     progress=not args.no_progress, overrides=args.overrides, adaptive=args.adaptive)


def cmd_init_study(args) -> int:
    from rethink.study.design import cost_line, default_device, write_study
    from rethink.study.plan import load_plan, plan_summary, print_plan
    from rethink.study.run import default_jobs

    out = _writable_file(args.out, "--out")
    device = default_device() if args.device == "auto" else args.device
    path, design, ds = write_study(Path(args.data), out, device, args.pretrained, args.quick, args.val, args.images,
                                   args.val_images)
    print(f"{path}: study written for {ds.train_images} training images at {design.size} px on {device} "
          f"(1x = {design.iters_1x} iterations of {design.batch_size} images)")
    summary = plan_summary(load_plan(path))
    print_plan(summary)
    print(cost_line(summary, design, 1 if device == "cuda" else default_jobs()))
    print(f"next: rethink study {path} --out runs/{path.stem}")
    return 0


def cmd_status(args) -> int:
    from rethink.study.store import print_status

    return print_status(Path(args.dir))


def cmd_report(args) -> int:
    from rethink.report.render import write_report

    path = write_report(Path(args.dir))
    print(f"report: {path}")
    return 0


def cmd_forecast(args) -> int:
    if not (Path(args.dir) / "study.json").is_file():
        raise UserError(f"{args.dir}: no study.json here; point forecast at the --out folder of a "
                        "`rethink study` (it forecasts from the curves of the runs so far)")
    from rethink.study.results import load_results
    from rethink.report.words import fmt_ap
    from rethink.study.forecast import forecast_study, parse_schedules

    factors = parse_schedules(args.schedules) if args.schedules is not None else None
    result = forecast_study(load_results(Path(args.dir)), factors)
    if args.json:
        print(strict_json({k: result[k] for k in ("cells", "catch_up", "arms", "margin_ap", "interval")}, indent=1))
        return 0
    print(f"forecast of study {result['study']}: final box AP per schedule, {result['interval']:.0%} intervals")
    print(f"{'train_size':>10s}  {'init':12s} {'schedule':>8s} {'iters':>8s} {'forecast':>8s} {'interval':>15s} "
          f"{'observed':>8s}  note")
    for c in result["cells"]:
        interval = f"[{fmt_ap(c['interval'][0])}, {fmt_ap(c['interval'][1])}]" if c["interval"] else "-"
        print(f"{str(c['train_size']):>10s}  {c['init']:12s} {c['schedule']:>8s} {c['iters']:8d} "
              f"{fmt_ap(c['predicted_final_ap']):>8s} {interval:>15s} {fmt_ap(c['observed_final_ap']):>8s}  "
              f"{c['note'] or ''}")
    print(f"catching up (random within {result['margin_ap']:g} AP of the pretrained arm's best final AP):")
    for c in result["catch_up"]:
        where = f"  train_size {c['train_size']}, random vs {c['init']}:"
        if c["schedule"]:
            print(f"{where} at {c['schedule']} ({c['iters']} iterations), probability {c['probability']:.2f}")
        elif c["probability"] is not None:
            print(f"{where} beyond the horizon ({c['horizon']}); probability of being within at "
                  f"{c['horizon']}: {c['probability']:.2f}")
        else:
            print(f"{where} no forecast ({c['note']})")
    return 0


def cmd_demo(args) -> int:
    from rethink.demo import run_demo

    _writable_dir(args.out)
    return run_demo(Path(args.out), quick=args.quick, seeds=args.seeds, adaptive=args.adaptive, sources=args.sources)


COMMANDS = {
    "train": cmd_train, "eval": cmd_eval, "check-data": cmd_check_data, "data": cmd_data, "pretrain": cmd_pretrain,
    "plan": cmd_plan, "study": cmd_study, "init-study": cmd_init_study, "status": cmd_status, "report": cmd_report, "forecast": cmd_forecast,
    "demo": cmd_demo,
}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"rethink: error: {e}", file=sys.stderr)
        return 2
    except RunFailed as e:
        print(f"rethink: run failed: {e}", file=sys.stderr)
        return 1
    except Interrupted as e:
        print(f"rethink: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("rethink: interrupted", file=sys.stderr)
        return 130
    finally:
        from rethink.engine import distributed

        distributed.destroy()


if __name__ == "__main__":
    sys.exit(main())
