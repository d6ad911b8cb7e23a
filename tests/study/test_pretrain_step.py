"""A study's pre-training step computes the same backbone whatever the machine's load when it ran."""

import os

import yaml
from test_sources import SSL

from conftest import tiny_config_dict, write_config
from rethink.engine.loop import available_cores
from rethink.fileio import read_json
from rethink.study.plan import load_plan
from rethink.pipeline import run_pretrain_steps


def test_a_steps_thread_count_does_not_follow_the_load(coco_data, tmp_path, monkeypatch):
    """threads: 0 on its own takes the cores the load leaves free, and the thread count changes a CPU run's numbers;
    a study's step takes the cores instead (at most 8), busy machine or not."""
    write_config(tmp_path / "base.yaml", tiny_config_dict(coco_data))
    write_config(tmp_path / "ssl.yaml", dict(SSL, threads=0, deterministic=False))
    study = {"name": "threads", "base": "base.yaml", "pretrain": {"ssl": {"config": "ssl.yaml", "train_on": "target"}},
             "matrix": {"init": ["random", "ssl"], "solver.schedule": ["1x"], "seed": [0]}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (100.0, 100.0, 100.0))  # a machine far busier than its cores
    plan = load_plan(tmp_path / "study.yaml", pretrain_dir=tmp_path / "out" / "pretrain")
    run_pretrain_steps(plan, tmp_path / "out", progress=False)
    record = read_json(tmp_path / "out" / "pretrain" / "ssl" / "pretrain.json")
    assert record["threads"] == min(available_cores(), 8)
