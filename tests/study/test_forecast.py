"""Forecasts on planted studies: curves written from known formulas, so the right answer is known."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from rethink import schedule as sched
from rethink.errors import UserError
from rethink.study.results import load_results
from rethink.study.curves import curve_value, fit_curve
from rethink.study.forecast import forecast_curves, forecast_study, parse_schedules, truncate_study

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from study_fixture import make_study  # noqa: E402

from conftest import run_cli  # noqa: E402

ITERS_1X = 300
EVAL_EVERY = 30
# random: a power law still rising at the longest drop; pretrained: an exponential that saturates early
PLANTED = {
    "random": {"family": "pow", "params": (42.0, 20.0, 0.6), "jump": 4.0},
    "pretrain": {"family": "exp", "params": (41.0, 38.0, 0.5), "jump": 2.5},
}


def planted_final(init: str, factor: float) -> float:
    p = PLANTED[init]
    d1 = sched.drop_iters(factor, ITERS_1X)[0] / ITERS_1X
    return float(curve_value(p["family"], p["params"], d1)) + p["jump"]


def write_planted(root: Path, schedules=("2x", "8x"), seeds=(0,), noise: float = 0.0, states=None,
                  eval_every: int = EVAL_EVERY, margin: float = 1.0) -> Path:
    """A study directory as `rethink study` leaves it: the longest schedule is the trunk, shorter ones fork at
    their first drop (their metrics.jsonl start with the trunk's lines). AP before a run's first drop follows the
    planted family; after it, the curve sits at f(d1) + jump. noise: sd of Gaussian noise on every evaluation."""
    rng = np.random.default_rng(123)
    states = dict(states or {})
    factors = {s: sched.parse_schedule(s) for s in schedules}
    longest = max(schedules, key=factors.get)
    entries = []
    for init in PLANTED:
        p = PLANTED[init]
        for seed in seeds:
            trunk_evals = {}
            for schedule in sorted(schedules, key=factors.get, reverse=True):
                factor = factors[schedule]
                total = sched.total_iters(factor, ITERS_1X)
                d1, d2 = sched.drop_iters(factor, ITERS_1X)
                name = f"{init}_{schedule}_full_s{seed}"
                state = states.pop(name, "done")
                forked = schedule != longest
                entries.append({"name": name, "path": f"runs/{name}", "state": state, "init": init,
                                "schedule": schedule, "schedule_factor": factor, "train_size": "full",
                                "train_images": 1000, "seed": seed, "iters": total, "drops": [d1, d2],
                                "batch_size": 2, "trunk": f"{init}_{longest}_full_s{seed}" if forked else None,
                                "fork_iter": d1 if forked else None, "other": {}})
                if state == "pending":
                    continue
                stop = total if state == "done" else total // 2
                rows = []
                for t in sched.eval_iters(total, eval_every):
                    if t > stop:
                        break
                    if forked and t <= d1:
                        ap = trunk_evals[t]  # the fork's copy of its trunk's lines
                    else:
                        clean = float(curve_value(p["family"], p["params"], min(t, d1) / ITERS_1X))
                        ap = clean + (p["jump"] if t > d1 else 0.0) + noise * float(rng.standard_normal())
                        if not forked:
                            trunk_evals[t] = ap
                    rows.append({"type": "eval", "iter": t, "bbox/AP": ap})
                run_dir = root / "runs" / name
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
                if state == "done":
                    (run_dir / "final.json").write_text(json.dumps({"status": "done", "final": rows[-1],
                                                                    "best": rows[-1], "iters": total}))
    assert not states, states
    (root / "study.json").write_text(json.dumps({"name": "planted", "margin_ap": margin, "pretrain": {},
                                                 "runs": entries}))
    return root


def cell(result, init, schedule):
    return next(c for c in result["cells"] if c["init"] == init and c["schedule"] == schedule)


# ---------------------------------------------------------------------------------------------
# Planted parameters
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family,params", [("exp", (38.0, 37.0, 0.7)), ("pow", (40.0, 30.0, 0.6))])
def test_fit_curve_recovers_planted_parameters(family, params):
    x = np.arange(1, 21) * 0.1
    fit = fit_curve(x, curve_value(family, params, x), family)
    assert fit is not None
    assert fit.params == pytest.approx(params, rel=1e-4)
    assert math.sqrt(fit.sse / fit.n) < 1e-4


def test_forecast_recovers_planted_curves_and_jumps(tmp_path):
    result = forecast_study(load_results(write_planted(tmp_path)))
    for arm in result["arms"]:
        planted = PLANTED[arm["init"]]
        best = max(arm["fits"], key=lambda f: f["weight"])
        # the planted family wins the Akaike weights outright and its parameters come back
        assert best["family"] == planted["family"] and best["weight"] > 0.99
        assert best["params"] == pytest.approx(planted["params"], rel=1e-3)
        # the 2x fork and the finished 8x trunk both show the jump after the first drop (tail of 200 iterations)
        assert arm["jump_by_tail_iters"]["200"] == pytest.approx(planted["jump"], abs=1e-3)
    # a schedule never run: the planted value, inside a tight interval
    for init in PLANTED:
        c = cell(result, init, "12x")
        assert c["observed_final_ap"] is None
        assert c["predicted_final_ap"] == pytest.approx(planted_final(init, 12.0), abs=0.02)
        assert c["interval"][0] <= planted_final(init, 12.0) <= c["interval"][1]


@pytest.mark.parametrize("fraction", [0.3, 0.4, 0.6])
def test_cut_curve_forecasts_the_planted_final_inside_its_interval(tmp_path, fraction):
    study = load_results(write_planted(tmp_path, noise=0.3))
    cut = int(fraction * sched.total_iters(8.0, ITERS_1X))
    result = forecast_study(truncate_study(study, {("full", "{}"): cut}))
    for init in PLANTED:
        c = cell(result, init, "8x")
        assert c["observed_final_ap"] is None  # the trunk is not done at the cut
        truth = planted_final(init, 8.0)
        # stated tolerance: 1.5 AP at 30% of the trunk, 1.0 AP from 40% on (noise sd 0.3 AP per evaluation)
        assert abs(c["predicted_final_ap"] - truth) < (1.5 if fraction < 0.4 else 1.0), (init, c)
        assert c["interval"][0] <= truth <= c["interval"][1], (init, c)


def test_a_curve_with_no_plateau_in_sight_is_flagged_not_trusted(tmp_path, monkeypatch):
    # random planted as a straight line (1 + 5t AP, t in units of 1x: a curve that has not started to bend, as the
    # demo's are at 40% of their trunk); pretrained saturating
    from rethink.study import curves

    monkeypatch.setitem(curves._FUNCS, "line", lambda x, a, b, _: a + b * x)
    monkeypatch.setitem(PLANTED, "random", {"family": "line", "params": (1.0, 5.0, 0.0), "jump": 2.0})
    study = load_results(write_planted(tmp_path, noise=0.3))
    result = forecast_study(truncate_study(study, {("full", "{}"): int(0.4 * sched.total_iters(8.0, ITERS_1X))}))
    arms = {a["init"]: a for a in result["arms"]}
    assert arms["random"]["weight_at_bound"] > 0.9 and arms["random"]["plateau_in_sight"] is False
    assert arms["pretrain"]["weight_at_bound"] == 0.0 and arms["pretrain"]["plateau_in_sight"] is True
    assert "no plateau in sight" in cell(result, "random", "8x")["note"]
    assert "no plateau in sight" not in (cell(result, "pretrain", "8x")["note"] or "")
    # the level the adaptive rule falls back on: random's AP at its latest evaluation before the drop
    assert arms["random"]["level_at_last_iter"] == pytest.approx(1.0 + 5.0 * arms["random"]["last_iter"] / ITERS_1X,
                                                                 abs=1.0)


def test_catch_up_schedule_matches_the_planted_curves(tmp_path):
    margin = 1.0
    result = forecast_study(load_results(write_planted(tmp_path, margin=margin)), factors=range(2, 31))
    best_pretrained, expected = -math.inf, None
    for factor in range(2, 31):
        best_pretrained = max(best_pretrained, planted_final("pretrain", factor))
        if planted_final("random", factor) >= best_pretrained - margin:
            expected = factor
            break
    assert expected is not None and expected > 8  # beyond the study's longest schedule: a real forecast
    (entry,) = result["catch_up"]
    assert entry["schedule"] == f"{expected}x"
    assert entry["probability"] > 0.5
    # with a horizon short of it the answer is "beyond the horizon", with a low probability
    short = forecast_study(load_results(tmp_path), factors=[2, 8, expected - 2])
    assert short["catch_up"][0]["schedule"] is None and short["catch_up"][0]["probability"] < 0.5


def test_catch_up_follows_the_verdicts_rule_on_the_report_fixture(tmp_path):
    # the report fixture's construction: random within the 1 AP margin at 4x with the full set, never at 500
    result = forecast_study(load_results(make_study(tmp_path, schedules=("2x", "4x"), sizes=(500, "full"))))
    by_size = {c["train_size"]: c for c in result["catch_up"]}
    assert by_size["full"]["schedule"] == "4x" and by_size["full"]["probability"] == 1.0
    assert by_size[500]["schedule"] is None and by_size[500]["probability"] == 0.0
    assert by_size[500]["horizon"] == "8x"


def test_forecast_curves_extend_beyond_what_was_run(tmp_path):
    study = load_results(write_planted(tmp_path, states={"random_8x_full_s0": "running",
                                                       "pretrain_8x_full_s0": "running"}))
    curves = forecast_curves(study)
    assert {c["init"] for c in curves} == {"random", "pretrain"}
    for arm in curves:
        assert arm["last_iter"] == 1200  # the running trunks stopped half-way through 8x
        assert arm["curve"][0]["iters"] == 1200 and arm["curve"][-1]["iters"] == sched.drop_iters(16.0, ITERS_1X)[0]
        for point in arm["curve"]:
            assert point["lo"] <= point["ap"] <= point["hi"]
        schedules = [f["schedule"] for f in arm["finals"]]
        assert "2x" not in schedules and schedules[0] == "8x" and schedules[-1] == "16x"
        truth = planted_final(arm["init"], 8.0)
        assert arm["finals"][0]["ap"] == pytest.approx(truth, abs=0.05)


# ---------------------------------------------------------------------------------------------
# Bad input: a clear answer, never a made-up number
# ---------------------------------------------------------------------------------------------


def test_no_curves_yet(tmp_path):
    write_planted(tmp_path, states={n: "pending" for n in ("random_2x_full_s0", "random_8x_full_s0",
                                                         "pretrain_2x_full_s0", "pretrain_8x_full_s0")})
    with pytest.raises(UserError, match="no run has an evaluation yet"):
        forecast_study(load_results(tmp_path))
    proc = run_cli("forecast", tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "no run has an evaluation yet" in proc.stderr


def test_too_few_evaluations_to_fit(tmp_path):
    # evaluations every 150 iterations: at most 3 before the 8x trunk's first drop at 2200 once cut at 450
    study = load_results(write_planted(tmp_path, eval_every=150))
    with pytest.raises(UserError, match="too few evaluations to fit"):
        forecast_study(truncate_study(study, {("full", "{}"): 450}))


def test_no_finished_run_to_learn_the_jump(tmp_path):
    study = load_results(write_planted(tmp_path))
    with pytest.raises(UserError, match="no run has finished yet"):
        forecast_study(truncate_study(study, {("full", "{}"): 500}))


def test_arm_without_enough_points_gets_a_note_not_a_number(tmp_path):
    write_planted(tmp_path / "a")
    study = load_results(tmp_path / "a")
    # only the random arm is cut short: it has 2 evaluations left, the pretrained arm keeps its curve
    runs = [r if r.init != "random" else type(r)(**{**r.__dict__, "evals": r.evals[:2], "state": "running",
                                                     "final": None}) for r in study.runs]
    result = forecast_study(type(study)(**{**study.__dict__, "runs": runs}))
    for c in result["cells"]:
        if c["init"] == "random":
            assert c["predicted_final_ap"] is None and "at least 4 are needed" in c["note"]
        else:
            assert c["predicted_final_ap"] is not None
    assert result["catch_up"][0]["schedule"] is None and result["catch_up"][0]["probability"] is None


def test_bad_schedules_argument(tmp_path):
    with pytest.raises(UserError, match="--schedules"):
        parse_schedules("2x,three")
    write_planted(tmp_path)
    proc = run_cli("forecast", tmp_path, "--schedules", "2x,,-1x")
    assert proc.returncode == 2 and "--schedules" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_json_shape(tmp_path):
    write_planted(tmp_path)
    proc = run_cli("forecast", tmp_path, "--json", "--schedules", "8x,10x")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {c["schedule"] for c in out["cells"]} == {"8x", "10x"}
    for c in out["cells"]:
        assert set(c) >= {"init", "train_size", "schedule", "iters", "predicted_final_ap", "interval",
                          "observed_final_ap"}
    assert set(out["catch_up"][0]) >= {"train_size", "schedule", "probability"}
    assert cell(out, "random", "10x")["predicted_final_ap"] == pytest.approx(planted_final("random", 10.0), abs=0.05)


def test_a_borrowed_jump_comes_from_the_nearest_training_set_size():
    """400 images with no finished run of its tail borrows the LR-drop jump from 100 images (log distance 1.4), not
    from 2,000 (1.6): a small set over-fits in the tail where a large one gains."""
    from rethink.study.curves import CurveFit
    from rethink.study.forecast import Arm, jump_source

    tail = (300, 450)
    flat = CurveFit(family="exp", params=(40.0, 1e-6, 1.0), sse=0.0, n=5, residuals=(0.0,) * 5)

    def arm(images, final=None):
        a = Arm(init="pretrain", train_size=images, train_images=images, other={}, seeds=[0], x=np.zeros(5),
                y=np.zeros(5), last_iter=0, jumps={tail: [(2.0, final, 1)]} if final is not None else {}, observed={})
        a.fits, a.weights = [flat], [1.0]
        return a

    small, middle, large = arm(100, final=38.0), arm(400), arm(2000, final=48.0)
    kind, jumps, _ = jump_source([small, middle, large], middle, tail)
    assert kind == "borrowed" and jumps == pytest.approx([38.0 - 40.0])  # in AP, not as a fraction
    nearer_large = arm(1500)
    kind, jumps, _ = jump_source([small, nearer_large, large], nearer_large, tail)
    assert jumps == pytest.approx([48.0 - 40.0])
