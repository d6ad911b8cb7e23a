"""`rethink study --adaptive`, replayed on finished studies: what it would stop, what it would train, and whether
its verdicts equal the full study's.

    python benchmarks/bench_adaptive.py [--study DIR ...] [--no-planted]

The replay follows study/adaptive.py segment by segment, with its decision functions (adaptive.unforecastable and
adaptive.decide, judged by pipeline.report_judge, as `rethink study --adaptive` does): at each share of the
trunks' iterations the study is cut where the unsettled trunks would stop (forecast.truncate_study: a run of T
iterations is done once its trunk passes T; a fork whose fork point is reached runs whole, as the adaptive study
runs it), the runs settled earlier read as settled, forecast unless no size can settle, and decided. A settled
size keeps its cut, and its runs that were not done there read as their settled.json would make them
(adaptive.with_settled). The replayed study's verdicts (every finding's status, every source and `other` group)
are then compared with the full study's, and the iterations it trains (each run's own: a fork starts at its
trunk's checkpoint) with the iterations the full study trained. The replay is exact when a trunk stopped at k has
the full trunk's curve up to k, which holds for seeded runs on one machine.

Studies: the report's fixture (tests/report/study_fixture.py: planted curves, one geometry where random catches
up on the full set and one where it does not), two planted three-seed studies with a wide seed-to-seed spread
(where a size's catch-up settles early and whether another finding does is the question), and any real study
directories given with --study (a demo's `runs/demo/study`, for example). The last line printed is one JSON object.
"""

import argparse
import dataclasses
import json
import math
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests" / "report"))

from rethink.errors import UserError  # noqa: E402
from rethink.pipeline import report_judge  # noqa: E402
from rethink.study.adaptive import SEGMENTS, decide, segment_stop, unforecastable, with_settled  # noqa: E402
from rethink.study.forecast import forecast_study, truncate_study  # noqa: E402
from rethink.study.plan import other_key  # noqa: E402
from rethink.study.results import load_results  # noqa: E402

HEADLINE = ("converges_faster", "catches_up", "small_data_hurts_random", "localization")


def eval_period(run) -> int:
    path = run.path / "config.yaml"
    if path.exists():
        return int(yaml.safe_load(path.read_text()).get("eval_period", 0))
    iters = [r["iter"] for r in run.evals]
    return min(b - a for a, b in zip(iters, iters[1:])) if len(iters) > 1 else 0


def own_iters(run, reached) -> int:
    start = run.fork_iter if run.trunk else 0
    return max(0, (reached or 0) - (start or 0))


def cut_as_adaptive(study, cuts: dict):
    """The study where each group's trunks stopped at cuts[(train_size, other_key)]: truncate_study, except that
    a fork whose fork point the trunk reached is done (the adaptive study runs it whole in that segment)."""
    cut = truncate_study(study, cuts)
    runs = []
    for r, full in zip(cut.runs, study.runs):
        c = cuts.get((r.train_size, r.other_key))
        whole = c is not None and full.trunk and full.fork_iter is not None and full.fork_iter <= c
        runs.append(full if whole and full.state == "done" else r)
    return dataclasses.replace(study, runs=runs)


def replay(study, judge=report_judge) -> dict:
    """`rethink study --adaptive` on a finished study (module docstring): its decisions, iterations and verdicts."""
    trunks = {}
    for r in study.runs:
        g = (r.train_size, r.other_key)
        if g not in trunks or (r.iters or 0) > (trunks[g].iters or 0):
            trunks[g] = r
    group = {(str(g[0]), g[1]): g for g in trunks}  # a decision's (train_size, other) -> the cut's key

    def group_of(d):
        return group[(str(d["train_size"]), other_key(d.get("other") or {}))]

    cuts_settled, finals, log = {}, {}, []
    for share in SEGMENTS:
        cuts = {g: cuts_settled.get(g, segment_stop(t.iters, share, eval_period(t))) for g, t in trunks.items()}
        now = with_settled(cut_as_adaptive(study, cuts), finals)
        blocked = unforecastable(now, judge)
        if not blocked:
            break  # every size done or settled
        if all(blocked.values()):
            log.append({"share": share, "note": "no size can settle yet: " + "; ".join(
                f"train_size {g[0]}: {why}" for g, why in blocked.items())})
            continue
        try:
            forecast = forecast_study(now)
        except UserError as e:
            log.append({"share": share, "note": str(e)})
            continue
        decisions, held = decide(now, forecast, study.margin_ap, judge)
        for d in decisions:
            g = group_of(d)
            cuts_settled[g] = cuts[g]
            finals.update(d["finals"])
            log.append({"share": share, "train_size": d["train_size"], "verdict": d["verdict"], "cut": cuts[g],
                        "random": d["random"], "pretrained_best": d["pretrained_best"]})
        log += [{"share": share, "cut": cuts[group_of(h)], **h, "held": True} for h in held]
    adaptive = with_settled(cut_as_adaptive(study, cuts_settled), finals)
    trained = sum(own_iters(r, r.iters if r.state == "done" and r.settled is None else r.last_iter)
                  for r in adaptive.runs)
    full = sum(own_iters(r, r.iters if r.state == "done" else r.last_iter) for r in study.runs)
    want, got = judge(study)["statuses"], judge(adaptive)["statuses"]
    verdicts = {k: {"full": want[k], "adaptive": got.get(k)} for k in want}
    return {"decisions": log, "iters_trained": trained, "iters_full": full,
            "share": trained / full if full else None, "verdicts": verdicts,
            "same_verdicts": all(v["full"] == v["adaptive"] for v in verdicts.values()),
            "settled_finals": {n: {k: v for k, v in f.items() if k != "interval"} for n, f in finals.items()}}


def fixture_studies(root: Path) -> dict:
    from study_fixture import make_study

    return {
        "fixture: random catches up on the full set":
            make_study(root / "a", schedules=("2x", "4x", "8x"), sizes=(500, "full"), seeds=(0,), margin_ap=1.0),
        "fixture: random stays behind on the full set":
            make_study(root / "b", schedules=("2x", "4x", "8x"), sizes=(500, "full"), seeds=(0,), margin_ap=1.0,
                       random_plateau_scale=0.8),
    }


def planted_studies(root: Path) -> dict:
    """Three seeds whose curves differ by a persistent offset (spread SPREAD AP); at 500 images random stays well
    behind, so its catch-up settles early, and small_data_hurts_random's paired interval is as wide as the spread
    makes it: clear of the margin with a small spread, straddling it with a wide one."""
    from study_fixture import make_study, plateau, tau

    def curve(spread):
        def ap(t, *, init, images, drops, seed):
            d1, d2 = drops
            level = 1.0 - math.exp(-min(t, d1) / tau(init, ("random", "pretrain")))
            level += (0.07 if t > d1 else 0.0) + (0.01 if t > d2 else 0.0)
            offset = spread * math.sin(2.1 * seed + (0.0 if init == "random" else 1.3))
            return plateau(init, images, ("random", "pretrain")) * level + offset
        return ap

    return {f"planted, three seeds, spread {spread:g} AP":
            make_study(root / f"planted{spread:g}", schedules=("2x", "4x", "8x"), sizes=(500, "full"),
                       seeds=(0, 1, 2), margin_ap=1.0, ap_fn=curve(spread))
            for spread in (0.5, 2.0)}


def show(name: str, r: dict) -> None:
    changed = [f"{k}: {v['full']} -> {v['adaptive']}" for k, v in r["verdicts"].items() if v["full"] != v["adaptive"]]
    headline = [f"{k} {v['full']}" for k, v in r["verdicts"].items() if k.split(" ")[0] in HEADLINE]
    print(f"{name}: trains {r['iters_trained']:,} of {r['iters_full']:,} iterations ({r['share']:.2f}); verdicts "
          + ("the same: " + ", ".join(headline) if not changed else "DIFFER: " + "; ".join(changed)))
    for d in r["decisions"]:
        if "note" in d:
            continue
        what = "held" if d.get("held") else "settled"
        print(f"  at {d['share']:.0%} (iteration {d['cut']:,}): train_size {d['train_size']} {what}, random "
              f"{d['verdict']} the margin" + (f": {d['reason']}" if d.get("held") else
                                               f", random [{d['random'][0]:.1f}, {d['random'][1]:.1f}]"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", action="append", default=[], help="a finished study directory (repeatable)")
    parser.add_argument("--no-planted", action="store_true", help="only the studies given with --study")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        studies = {} if args.no_planted else {**fixture_studies(Path(tmp)), **planted_studies(Path(tmp))}
        studies.update({str(p): Path(p) for p in args.study})
        for name, path in studies.items():
            results[name] = replay(load_results(path))
            show(name, results[name])
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
