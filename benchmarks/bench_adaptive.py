"""`rethink study --adaptive`, replayed on finished studies: what it would stop, what it would train, and whether
its verdicts equal the full study's.

    python benchmarks/bench_adaptive.py [--study DIR ...]

The replay follows study/adaptive.py segment by segment: at each share of the trunks' iterations the study is cut
where the unsettled trunks would stop (forecast.truncate_study: a run of T iterations is done once its trunk
passes T), forecast, and settled by adaptive.settle. A settled size keeps its cut; its runs that were not done
there get the forecast as their final AP, as settled.json gives the report. The replayed study's findings are then
compared with the full study's, and the iterations it trains (each run's own: a fork starts at its trunk's
checkpoint) with the iterations the full study trained. The replay is exact when a trunk stopped at k has the full
trunk's curve up to k, which holds for seeded runs on one machine (a resumed run continues the same trajectory).

Studies: the report's fixture (tests/report/study_fixture.py: planted curves, one geometry where random catches
up on the full set and one where it does not), and any real study directories given with --study (a demo's
`runs/demo/study`, for example). The last line printed is one JSON object.
"""

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests" / "report"))

from rethink import schedule as sched  # noqa: E402
from rethink.errors import UserError  # noqa: E402
from rethink.report.findings import summarize  # noqa: E402
from rethink.study.results import _settled_final, load_results  # noqa: E402
from rethink.study.adaptive import SEGMENTS, segment_stop, settle  # noqa: E402
from rethink.study.forecast import forecast_study, truncate_study  # noqa: E402

VERDICTS = ("converges_faster", "catches_up", "small_data_hurts_random", "localization")


def eval_period(run) -> int:
    path = run.path / "config.yaml"
    if path.exists():
        return int(yaml.safe_load(path.read_text()).get("eval_period", 0))
    iters = [r["iter"] for r in run.evals]
    return min(b - a for a, b in zip(iters, iters[1:])) if len(iters) > 1 else 0


def own_iters(run, reached) -> int:
    start = run.fork_iter if run.trunk else 0
    return max(0, (reached or 0) - (start or 0))


def replay(study) -> dict:
    groups = {}
    for r in study.runs:
        groups.setdefault((r.train_size, r.other_key), []).append(r)
    trunks = {g: max(runs, key=lambda r: r.iters or 0) for g, runs in groups.items()}
    settled: dict = {}  # group -> (cut, decision, cells by (init, schedule))
    log = []
    for share in SEGMENTS:
        cuts = {g: settled[g][0] if g in settled else segment_stop(t.iters, share, eval_period(t))
                for g, t in trunks.items()}
        cut_study = truncate_study(study, cuts)
        try:
            forecast = forecast_study(cut_study)
        except UserError as e:
            log.append({"share": share, "note": str(e)})
            continue
        planned = {(r.init, str(r.train_size), sched.format_schedule(r.schedule_factor)) for r in study.runs}
        for cell in forecast["cells"]:
            cell["planned"] = (cell["init"], str(cell["train_size"]), cell["schedule"]) in planned
        for d in settle(forecast, study.margin_ap):
            g = next(g for g in groups if str(g[0]) == str(d["train_size"])
                     and json.loads(g[1]) == (d.get("other") or {}))
            if g in settled or cuts[g] >= trunks[g].iters:
                continue
            cells = {(c["init"], c["schedule"]): c for c in forecast["cells"] if str(c["train_size"]) == str(g[0])}
            settled[g] = (cuts[g], d, cells)
            log.append({"share": share, "train_size": d["train_size"], "verdict": d["verdict"], "cut": cuts[g],
                        "random": d["random"], "pretrained_best": d["pretrained_best"]})
    cuts = {g: settled[g][0] for g in settled}
    cut_study = truncate_study(study, cuts)
    runs, trained, full = [], 0, 0
    for r, orig in zip(cut_study.runs, study.runs):
        g = (r.train_size, r.other_key)
        full += own_iters(orig, orig.iters if orig.state == "done" else orig.last_iter)
        if g in settled and r.state != "done":
            cell = settled[g][2].get((r.init, sched.format_schedule(r.schedule_factor)))
            info = {"predicted_final_ap": cell["predicted_final_ap"], "interval": cell["interval"],
                    "stopped_at_iter": r.last_iter if r.trunk is None else None}
            r = dataclasses.replace(r, state="done", settled=info, final=_settled_final(info, r.evals))
            trained += own_iters(r, r.last_iter) if r.evals and (r.trunk is None or r.last_iter > r.fork_iter) else 0
        else:
            trained += own_iters(r, r.iters if r.state == "done" else r.last_iter)
        runs.append(r)
    adaptive = summarize(dataclasses.replace(study, runs=runs))["findings"]
    reference = summarize(study)["findings"]
    verdicts = {k: {"full": reference[k]["status"], "adaptive": adaptive[k]["status"]} for k in VERDICTS}
    return {"decisions": log, "iters_trained": trained, "iters_full": full,
            "share": trained / full if full else None, "verdicts": verdicts,
            "same_verdicts": all(v["full"] == v["adaptive"] for v in verdicts.values())}


def fixture_studies(root: Path) -> dict:
    from study_fixture import make_study

    return {
        "fixture: random catches up on the full set":
            make_study(root / "a", schedules=("2x", "4x", "8x"), sizes=(500, "full"), seeds=(0,), margin_ap=1.0),
        "fixture: random stays behind on the full set":
            make_study(root / "b", schedules=("2x", "4x", "8x"), sizes=(500, "full"), seeds=(0,), margin_ap=1.0,
                       random_plateau_scale=0.8),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", action="append", default=[], help="a finished study directory (repeatable)")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        studies = fixture_studies(Path(tmp))
        studies.update({str(p): Path(p) for p in args.study})
        for name, path in studies.items():
            r = replay(load_results(path))
            results[name] = r
            print(f"{name}: trains {r['iters_trained']:,} of {r['iters_full']:,} iterations ({r['share']:.2f}); "
                  f"verdicts {'the same' if r['same_verdicts'] else 'DIFFER'}: "
                  + ", ".join(f"{k} {v['full']}" + ("" if v["full"] == v["adaptive"] else f" -> {v['adaptive']}")
                              for k, v in r["verdicts"].items()))
            for d in r["decisions"]:
                if "verdict" in d:
                    print(f"  at {d['share']:.0%} (iteration {d['cut']:,}): train_size {d['train_size']} settled, "
                          f"random {d['verdict']} the margin, random {d['random']}")
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
