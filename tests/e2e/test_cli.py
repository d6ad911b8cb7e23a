"""The command line as users type it: --set with several KEY=VALUE and repeated, --version."""

import subprocess
import sys
from importlib import metadata

import pytest
import yaml

from conftest import tiny_config_dict, write_config
from rethink.cli import build_parser, main

# every command that takes config overrides, with its other required arguments
COMMANDS_WITH_SET = [
    ["train", "c.yaml", "--out", "o"],
    ["eval", "c.yaml", "--weights", "w.pt"],
    ["check-data", "c.yaml"],
    ["pretrain", "c.yaml", "--out", "o"],
    ["plan", "s.yaml"],
    ["study", "s.yaml", "--out", "o"],
]


@pytest.mark.parametrize("argv", COMMANDS_WITH_SET, ids=lambda a: a[0])
def test_set_takes_several_pairs_and_repeats(argv):
    args = build_parser().parse_args(argv + ["--set", "a=1", "b.c=2", "--set", "d=x"])
    assert args.overrides == ["a=1", "b.c=2", "d=x"]
    assert build_parser().parse_args(argv).overrides == []


def test_train_applies_every_override(tmp_path, coco_data, capsys):
    config = write_config(tmp_path / "c.yaml", tiny_config_dict(coco_data))
    out = tmp_path / "run"
    code = main(["train", str(config), "--out", str(out), "--no-progress",
                 "--set", "solver.iters_1x=3", "solver.warmup_iters=1", "eval_period=0", "--set", "seed=7"])
    assert code == 0, capsys.readouterr().err
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["solver"]["iters_1x"] == 3 and written["solver"]["warmup_iters"] == 1
    assert written["eval_period"] == 0 and written["seed"] == 7


def test_nproc_passes_every_override_on(tmp_path, monkeypatch):
    import rethink.engine.launch as launch

    seen = []
    monkeypatch.setattr(launch, "run_torchrun", lambda nproc, argv: seen.append((nproc, argv)) or 0)
    config = write_config(tmp_path / "c.yaml", tiny_config_dict(tmp_path))
    assert main(["train", str(config), "--out", "o", "--nproc", "2", "--set", "a=1", "b=2", "--set", "c=3"]) == 0
    nproc, argv = seen[0]
    # what each torchrun worker parses is the same command with the same overrides
    args = build_parser().parse_args(argv)
    assert nproc == 2 and args.overrides == ["a=1", "b=2", "c=3"] and args.config == str(config)


def test_version_is_the_package_version():
    out = subprocess.run([sys.executable, "-m", "rethink", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"rethink {metadata.version('rethink')}"


def test_threads_default_leaves_busy_cores_alone():
    from rethink.engine.loop import choose_threads

    assert choose_threads(2, 0.1, False) == 2  # an idle 2-core laptop: both cores
    assert choose_threads(2, 1.9, False) == 1  # the same machine running something else: one
    assert choose_threads(2, 6.0, False) == 1
    assert choose_threads(64, 0.0, False) == 8  # small detectors gain little past 8
    assert choose_threads(16, 10.2, False) == 6
    # deterministic runs: the same count whatever the load, so a resume computes what the run would have
    assert choose_threads(2, 1.9, True) == choose_threads(2, 0.0, True) == 2
    assert choose_threads(32, 0.0, True) == 4


def test_train_says_how_many_threads_it_chose(tmp_path, coco_data):
    import os

    config = write_config(tmp_path / "c.yaml", {**tiny_config_dict(coco_data), "threads": 0, "deterministic": False})
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    result = subprocess.run([sys.executable, "-m", "rethink", "train", str(config), "--out", str(tmp_path / "run"),
                             "--no-progress", "--set", "solver.iters_1x=2", "solver.warmup_iters=1", "eval_period=0"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("threads: "))
    assert "cores, load" in line and "set threads=N to choose" in line
    result = subprocess.run([sys.executable, "-m", "rethink", "train", str(config), "--out", str(tmp_path / "run2"),
                             "--no-progress", "--set", "solver.iters_1x=2", "solver.warmup_iters=1", "eval_period=0"],
                            capture_output=True, text=True, env={**env, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert "threads: 1 (from OMP_NUM_THREADS" in result.stdout


@pytest.mark.parametrize("argv", [["train"], ["init-study", "x", "--device", "tpu"], ["study", "s.yaml", "--out", "o",
                                  "--executor", "k8s"], ["train", "c.yaml", "--out", "o", "--nproc", "two"], []])
def test_a_command_line_mistake_is_one_line(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert info.value.code == 2 and len(lines) == 1 and "error: " in lines[0] and "--help" in lines[0], err
