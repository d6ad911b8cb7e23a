"""`rethink forecast` on bad input: a one-line error with exit 2, or a forecast flagged as unavailable; never a
traceback, never a made-up number."""

import json
import math

import pytest

from conftest import run_cli
from rethink.errors import UserError
from rethink.study.forecast import forecast_study, parse_schedules
from rethink.study.results import load_results
from test_forecast import cell, write_planted


def rewrite_ap(root, name, change):
    """Apply change(row) to every evaluation of one run's metrics.jsonl."""
    path = root / "runs" / name / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for k, row in enumerate(rows):
        change(k, row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def one_line_error(proc, *words):
    assert proc.returncode == 2, proc.stdout
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_ap_leaves_its_arm_without_a_forecast(tmp_path, bad):
    write_planted(tmp_path)

    def poison(k, row):
        if k == 5:
            row["bbox/AP"] = bad  # json writes NaN / Infinity, which Python's reader takes back

    rewrite_ap(tmp_path, "random_8x_full_s0", poison)
    result = forecast_study(load_results(tmp_path))
    for c in result["cells"]:
        if c["init"] == "random":
            assert c["predicted_final_ap"] is None and c["interval"] is None
            assert "random_8x_full_s0 iteration 180" in c["note"] and "not a finite number" in c["note"]
        else:
            assert c["predicted_final_ap"] is not None and math.isfinite(c["predicted_final_ap"])
    (entry,) = result["catch_up"]
    # the catch-up goes only as far as random's measured cells: its 8x, not the forecast horizon of 16x
    assert entry["schedule"] is None and entry["horizon"] == "8x" and entry["probability"] == 0.0
    if math.isnan(bad):  # the command once: it prints the note where the number would be
        proc = run_cli("forecast", tmp_path)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr
        assert "not a finite number" in proc.stdout


def test_every_arm_non_finite_is_a_one_line_error(tmp_path):
    write_planted(tmp_path)
    for name in ("random_8x_full_s0", "pretrain_8x_full_s0"):
        rewrite_ap(tmp_path, name, lambda k, row: row.update({"bbox/AP": math.nan}) if k == 3 else None)
    with pytest.raises(UserError, match="no arm can be forecast"):
        forecast_study(load_results(tmp_path))
    one_line_error(run_cli("forecast", tmp_path), "no arm can be forecast", "iteration 120")


def falling(root, names):
    """AP that falls steadily (50 at the start, 1 AP per 100 iterations down), finals to match."""
    for name in names:
        rewrite_ap(root, name, lambda k, row: row.update({"bbox/AP": 50.0 - row["iter"] / 100}))
        path = root / "runs" / name / "final.json"
        if path.exists():
            final = json.loads(path.read_text())
            final["final"]["bbox/AP"] = 50.0 - final["iters"] / 100
            path.write_text(json.dumps(final))


def test_a_falling_curve_is_flagged_not_forecast(tmp_path):
    write_planted(tmp_path)
    falling(tmp_path, ["random_8x_full_s0", "random_2x_full_s0"])
    result = forecast_study(load_results(tmp_path))
    assert cell(result, "random", "12x")["predicted_final_ap"] is None
    assert "falls before the first LR drop" in cell(result, "random", "12x")["note"]
    assert cell(result, "pretrain", "12x")["predicted_final_ap"] is not None
    # every arm falling: nothing to forecast, one line
    falling(tmp_path, ["pretrain_8x_full_s0", "pretrain_2x_full_s0"])
    one_line_error(run_cli("forecast", tmp_path), "no arm can be forecast", "falls")


def test_a_flat_curve_is_a_plateau_not_an_error(tmp_path):
    write_planted(tmp_path)
    for name in ("random_8x_full_s0", "random_2x_full_s0"):
        rewrite_ap(tmp_path, name, lambda k, row: row.update({"bbox/AP": 20.0}))
        final = json.loads((tmp_path / "runs" / name / "final.json").read_text())
        final["final"]["bbox/AP"] = 20.0
        (tmp_path / "runs" / name / "final.json").write_text(json.dumps(final))
    c = cell(forecast_study(load_results(tmp_path)), "random", "12x")
    assert c["predicted_final_ap"] == pytest.approx(20.0, abs=1e-6) and c["interval"] == pytest.approx([20.0, 20.0])


def test_a_study_without_iterations(tmp_path):
    write_planted(tmp_path)
    study = json.loads((tmp_path / "study.json").read_text())
    for entry in study["runs"]:
        del entry["iters"]
    (tmp_path / "study.json").write_text(json.dumps(study))
    one_line_error(run_cli("forecast", tmp_path), "study.json", "'iters'")


def test_an_empty_schedules_argument(tmp_path):
    for text in (" , ", ",,"):
        with pytest.raises(UserError, match="names no schedule"):
            parse_schedules(text)
    write_planted(tmp_path)
    one_line_error(run_cli("forecast", tmp_path, "--schedules", ""), "--schedules", "names no schedule")


def test_a_folder_that_is_not_a_study(tmp_path):
    (tmp_path / "images").mkdir()
    one_line_error(run_cli("forecast", tmp_path / "images"), "no study.json")
    one_line_error(run_cli("forecast", tmp_path / "missing"), "missing")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "study.json").write_text("{not json")
    one_line_error(run_cli("forecast", tmp_path / "broken"), "study.json")
