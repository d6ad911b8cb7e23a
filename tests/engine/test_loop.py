"""engine/loop.py's run_loop with a toy training: a line fitted by SGD, so every rule of the loop shows in a few
milliseconds (periods, stop_at, signals, resume, close on every exit)."""

import json
import os
import signal

import pytest
import torch

from rethink.engine import checkpoint as ckpt
from rethink.engine.loop import PeriodMeter, Periods, RunClock, open_run, restore, run_loop
from rethink.errors import Interrupted

PERIODS = Periods(max_iter=20, log=3, evals=frozenset({5, 10, 20}), checkpoint=4, keep_last=1, keep_iters=(6,))


class LineSteps:
    """y = 3x + 1 fitted by SGD on batches drawn from the global RNG (restored on resume, as a real training's)."""

    headline = "score"
    shown = ("mse",)  # no "loss" and no "img_per_s": the loop must not need them

    def __init__(self, state=None, fail_at=None, signal_at=None):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(1, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.0, momentum=0.5)
        self.period = PeriodMeter(state["period"] if state else None)
        self.clock = RunClock(state["times"] if state else None)
        if state:
            restore(state, {"model": self.model}, self.optimizer)
        self.fail_at, self.signal_at = fail_at, signal_at
        self.steps_done, self.closed = [], 0

    def step(self, it):
        x = torch.randn(8, 1)
        loss = torch.nn.functional.mse_loss(self.model(x), 3 * x + 1)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.period.add(8, 0.001, 0.0, mse=loss.detach())
        self.steps_done.append(it)
        if it == self.signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
        if it == self.fail_at:
            raise RuntimeError("a bug in the step")

    def log_row(self, done, lr):
        row = {"type": "train", "iter": done, "mse": self.period.mean("mse"), "lr": lr, "n": self.period.iters}
        self.period.reset()
        return row

    def evaluate(self, done):
        x = torch.linspace(-1, 1, 5)[:, None]
        with torch.no_grad():
            return {"type": "eval", "iter": done, "score": -float(((self.model(x) - 3 * x - 1) ** 2).mean())}

    def state_dict(self, done):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "iter": done,
                "rng": ckpt.rng_state(), "period": self.period.state_dict(), "times": self.clock.elapsed()}

    def close(self):
        self.closed += 1


def get_lr(it):
    return 0.1 if it < 10 else 0.01


def run(out, stop_at=None, **kwargs):
    start, state, _ = open_run(out)
    steps = LineSteps(state, **kwargs)
    try:
        run_loop(steps, steps.optimizer, get_lr, out, start, PERIODS, progress=False, stop_at=stop_at)
    finally:
        steps.start = start
    return steps


def lines(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_logs_evaluates_and_checkpoints_at_their_periods(tmp_path):
    steps = run(tmp_path)
    rows = lines(tmp_path)
    assert [r["iter"] for r in rows if r["type"] == "train"] == [3, 6, 9, 12, 15, 18, 20]
    assert [r["n"] for r in rows if r["type"] == "train"] == [3, 3, 3, 3, 3, 3, 2]  # each line sums its period
    assert [r["iter"] for r in rows if r["type"] == "eval"] == [5, 10, 20]
    assert [r["lr"] for r in rows if r["type"] == "train"] == [0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01]
    # the newest periodic checkpoint is pruned once the final one is written; the fork point (6) is kept
    assert sorted(ckpt.list_checkpoints(tmp_path)) == [6, 20]
    assert steps.steps_done == list(range(20)) and steps.closed == 1
    scores = [r["score"] for r in rows if r["type"] == "eval"]
    assert scores[0] < scores[-1] and scores[-1] > -0.05  # it learned the line


def test_stop_at_then_resume_ends_as_the_uninterrupted_run(tmp_path):
    whole = run(tmp_path / "whole")
    with pytest.raises(Interrupted, match="stop_at=7 at iteration 7"):
        run(tmp_path / "split", stop_at=7)
    assert max(ckpt.list_checkpoints(tmp_path / "split")) == 7
    resumed = run(tmp_path / "split")
    assert resumed.start == 7 and resumed.steps_done == list(range(7, 20)) and resumed.closed == 1
    assert torch.equal(resumed.model.weight, whole.model.weight) and torch.equal(resumed.model.bias, whole.model.bias)
    # the log line at 9 sums iterations 7-9 across the stop: the period meter was in the checkpoint
    assert lines(tmp_path / "split") == lines(tmp_path / "whole")


def test_a_signal_stops_after_the_iteration_with_a_checkpoint_and_close(tmp_path):
    with pytest.raises(Interrupted, match="SIGTERM at iteration 5"):
        run(tmp_path, signal_at=4)
    assert max(ckpt.list_checkpoints(tmp_path)) == 5
    assert [r["iter"] for r in lines(tmp_path)] == [3, 5]  # iteration 5's evaluation still ran before the stop
    resumed = run(tmp_path)
    assert resumed.start == 5 and resumed.closed == 1 and lines(tmp_path)[-1]["iter"] == 20


def test_an_error_in_a_step_still_closes_the_training(tmp_path):
    steps = LineSteps(fail_at=2)
    with pytest.raises(RuntimeError, match="a bug in the step"):
        run_loop(steps, steps.optimizer, get_lr, tmp_path, 0, PERIODS, progress=False)
    assert steps.closed == 1 and steps.steps_done == [0, 1, 2]
