"""A fake but fully-formed study directory whose findings are known by construction.

`make_study(root)` writes root/study.json, root/runs/<name>/{metrics.jsonl,final.json|FAILED} and
root/pretrain/<source>/pretrain.json in the formats the study runner writes, with curves from simple
formulas instead of training:

    AP(t) = P * (base(t) + 0.07*[t > drop1] + 0.01*[t > drop2]) - overfit * max(0, t - drop1)/1000 + noise(seed)
    base(t) = 1 - exp(-min(t, drop1) / tau)          (progress freezes after the first LR drop)

- tau: 150 iterations for the first pretrained init (fast; +100 for each further one), 600 for random;
- plateau P: pretrained 38*n/(n+10) (1% lower for each further source), random 38*n^2/(n^2+200^2)
  for n training images, so random is ~5 AP behind at 500 images and within ~0.5 AP from 2,000 on;
- overfit: 2*(500/n)^2 AP per 1,000 iterations after the first drop (visible only for small n);
- noise: 0.1*sin(1.7*seed + phase(init)), a different pattern per arm so paired differences vary;
- AP50 = 1.45*AP + 2, AP75 = 1.1*AP (+random_ap75_bonus, default 0.8, for random init: random init
  localizes slightly better, as in the paper);
- 1x = 900 iterations; LR drops at the last 2/3 and 2/9 of 1x (the paper's last 60k/20k of 90k),
  1x itself drops at 600 and 800; shorter schedules fork from the longest one at their first drop,
  so their metrics.jsonl start with the trunk's lines, as the study runner writes them.

With the defaults (random + "pretrain", schedules 1x/2x/4x, sizes 500/2000/full=8000, seeds 0-2,
margin 1.0) the findings are: converges_faster holds, catches_up holds (first within the margin at
4x), small_data_hurts_random holds (random within the margin from 2,000 images), localization holds.
"""

import json
import math
from pathlib import Path

UNIT_ITERS = 900  # iterations of a 1x schedule in the fixture
BATCH_SIZE = 2
EVAL_EVERY = 100
TRAIN_EVERY = 50
INSTANCES_PER_IMAGE = 7
IMAGE_PIXELS = 64 * 64


def schedule_factor(schedule: str) -> float:
    return float(schedule.rstrip("x"))


def schedule_iters(schedule: str) -> int:
    return int(round(schedule_factor(schedule) * UNIT_ITERS))


def schedule_drops(schedule: str) -> list:
    total = schedule_iters(schedule)
    if schedule_factor(schedule) >= 2:
        return [total - 2 * UNIT_ITERS // 3, total - 2 * UNIT_ITERS // 9]
    return [2 * total // 3, 8 * total // 9]


def run_name(init: str, schedule: str, size, seed: int, other: dict | None = None) -> str:
    extra = "".join(f"_{k.split('.')[-1]}-{v}" for k, v in sorted((other or {}).items()))
    return f"{init}_{schedule}_{size}{extra}_s{seed}"


def plateau(init: str, images: int, inits: tuple, random_scale: float = 1.0) -> float:
    if init == "random":
        return random_scale * 38.0 * images**2 / (images**2 + 200.0**2)
    # a second or third pretrained source sits a little lower, so the curves can be told apart
    k = [i for i in inits if i != "random"].index(init)
    return 38.0 * images / (images + 10.0) * (1.0 - 0.01 * k)


def tau(init: str, inits: tuple) -> float:
    if init == "random":
        return 600.0
    return 150.0 + 100.0 * [i for i in inits if i != "random"].index(init)


def noise(init: str, seed: int, inits: tuple, amplitude: float = 0.1) -> float:
    return amplitude * math.sin(1.7 * seed + float(inits.index(init)))


def ap_at(t: int, *, init: str, images: int, drops: list, seed: int, inits: tuple, shape: dict) -> float:
    d1, d2 = drops
    base = 1.0 - math.exp(-min(t, d1) / tau(init, inits))
    # an evaluation at a drop iteration sees the model before the drop, hence ">" not ">="
    level = base + (0.07 if t > d1 else 0.0) + (0.01 if t > d2 else 0.0)
    overfit = 2.0 * (500.0 / images) ** 2 * max(0, t - d1) / 1000.0
    if init != "random":
        # a pretrained arm that degrades with training on this size, from iteration 300 on, LR drop or not
        overfit += shape["pretrained_decay"].get(images, 0.0) * max(0, t - 300) / 1000.0
    return (plateau(init, images, inits, shape["random_plateau_scale"]) * level - overfit
            + noise(init, seed, inits, shape["noise_ap"]))


def eval_row(t: int, ap: float, init: str, images: int, mask: bool, shape: dict) -> dict:
    random = init == "random"
    ap75_bonus = shape["random_ap75_bonus"] if random else shape["pretrained_ap75_bonus"]
    ap50_bonus = 0.0 if random else shape["pretrained_ap50_bonus"]
    row = {"type": "eval", "iter": t, "bbox/AP": ap, "bbox/AP50": 1.45 * ap + 2.0 + ap50_bonus,
           "bbox/AP75": 1.1 * ap + ap75_bonus,
           # too few small objects in the smallest subsets: COCO eval gives NaN there
           "bbox/APs": float("nan") if images <= 500 else 0.5 * ap,
           "bbox/APm": 1.05 * ap, "bbox/APl": 1.3 * ap}
    if mask:
        for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            row[f"segm/{key}"] = 0.9 * row[f"bbox/{key}"]
    return row


def train_row(t: int, *, init: str, images: int, drops: list, mask: bool, inits: tuple) -> dict:
    # Training loss falls with the LR drops and keeps falling on small data (memorization).
    floor = 0.3 * min(1.0, images / 2000.0)
    loss = floor + 1.5 * math.exp(-t / (tau(init, inits) * 1.5)) + 0.4 * math.exp(-t / 3000.0)
    loss -= 0.05 * sum(t >= d for d in drops)
    lr = 0.02 * 0.1 ** sum(t >= d for d in drops)
    row = {"type": "train", "iter": t, "loss": loss, "loss_classifier": 0.4 * loss, "loss_box_reg": 0.3 * loss,
           "loss_objectness": 0.2 * loss, "loss_rpn_box_reg": 0.1 * loss, "lr": lr, "grad_norm": 5.0 * loss,
           "img_per_s": 20.0, "images_seen": t * BATCH_SIZE}
    if mask:
        row["loss_mask"] = 0.25 * loss
    return row


def _metrics_lines(init, images, schedule, seed, inits, mask, stop_at, shape):
    drops = schedule_drops(schedule)
    total = schedule_iters(schedule)
    lines = []
    for t in range(TRAIN_EVERY, total + 1, TRAIN_EVERY):
        if t > stop_at:
            break
        lines.append(train_row(t, init=init, images=images, drops=drops, mask=mask, inits=inits))
        if t % EVAL_EVERY == 0 or t == total:
            if shape["ap_fn"] is not None:
                ap = shape["ap_fn"](t, init=init, images=images, drops=drops, seed=seed)
            else:
                ap = ap_at(t, init=init, images=images, drops=drops, seed=seed, inits=inits, shape=shape)
            lines.append(eval_row(t, ap, init, images, mask, shape))
    return lines


def _write_jsonl(path: Path, rows: list) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_study(root, *, name: str = "fixture", inits=("random", "pretrain"), schedules=("1x", "2x", "4x"),
               sizes=(500, 2000, "full"), seeds=(0, 1, 2), others=({},), full_images: int = 8000,
               states: dict | None = None, margin_ap: float | None = 1.0, pretrain_records=("pretrain",),
               mask: bool = False, random_ap75_bonus: float = 0.8, pretrained_ap50_bonus: float = 0.0,
               pretrained_ap75_bonus: float = 0.0, pretrained_decay: dict | None = None,
               random_plateau_scale: float = 1.0, noise_ap: float = 0.1, init_cost: dict | None = None,
               ap_fn=None) -> Path:
    """Write a study directory under `root` and return its path.

    states: run name -> "failed" | "running" | "pending" to leave some runs unfinished (a failed run
    stops with a FAILED marker at its first LR drop, a running one half-way, a pending one has no dir).
    pretrain_records: the pretrained sources that get a pretrain.json (others are "not recorded").
    margin_ap None leaves the key out of study.json (the reader's default applies).
    random_ap75_bonus: AP75 points random init gets on top of 1.1*AP (negative: pretrained localizes better);
    pretrained_ap50_bonus / pretrained_ap75_bonus: the same for the pretrained arms at AP50 and AP75.
    pretrained_decay: {images: AP lost per 1,000 iterations from iteration 300 on} for the pretrained arms
    (an arm that peaks early and degrades with longer training); random_plateau_scale scales random's plateau;
    noise_ap: the amplitude of the per-seed noise; init_cost: written as study.json's init_cost.
    ap_fn: a planted curve in place of the formula above, ap_fn(t, init=, images=, drops=, seed=) -> box AP at
    evaluation iteration t (drops: the run's LR drops); AP50/AP75 follow from it as above.
    """
    shape = {"random_ap75_bonus": random_ap75_bonus, "pretrained_ap50_bonus": pretrained_ap50_bonus,
             "pretrained_ap75_bonus": pretrained_ap75_bonus, "pretrained_decay": dict(pretrained_decay or {}),
             "random_plateau_scale": random_plateau_scale, "noise_ap": noise_ap, "ap_fn": ap_fn}
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    states = dict(states or {})
    inits = tuple(inits)
    longest = max(schedules, key=schedule_factor)
    entries = []
    for other in others:
        for size in sizes:
            images = full_images if size == "full" else int(size)
            for init in inits:
                for schedule in schedules:
                    for seed in seeds:
                        name_ = run_name(init, schedule, size, seed, other)
                        state = states.pop(name_, "done")
                        total = schedule_iters(schedule)
                        drops = schedule_drops(schedule)
                        forked = schedule != longest
                        entry = {
                            "name": name_, "path": f"runs/{name_}", "state": state, "reason": None,
                            "init": init, "schedule": schedule, "schedule_factor": schedule_factor(schedule),
                            "train_size": size, "train_images": images, "seed": seed, "iters": total,
                            "drops": drops, "batch_size": BATCH_SIZE,
                            "trunk": run_name(init, longest, size, seed, other) if forked else None,
                            "fork_iter": drops[0] if forked else None, "other": dict(other),
                        }
                        run_dir = root / entry["path"]
                        if state == "pending":
                            entries.append(entry)
                            continue
                        run_dir.mkdir(parents=True, exist_ok=True)
                        stop_at = {"done": total, "running": total // 2, "failed": drops[0]}[state]
                        lines = _metrics_lines(init, images, schedule, seed, inits, mask, stop_at, shape)
                        _write_jsonl(run_dir / "metrics.jsonl", lines)
                        if state == "failed":
                            last = [r for r in lines if r["type"] == "train"][-1]
                            entry["reason"] = f"non-finite loss at iteration {stop_at}"
                            (run_dir / "FAILED").write_text(json.dumps({
                                "iter": stop_at, "reason": entry["reason"],
                                "losses": {"loss_box_reg": float("nan"), "loss_classifier": last["loss_classifier"]},
                            }), encoding="utf-8")
                        elif state == "done":
                            evals = [r for r in lines if r["type"] == "eval"]
                            best = max(evals, key=lambda r: r["bbox/AP"])
                            metric = lambda r: {k: v for k, v in r.items() if "/" in k}  # noqa: E731
                            images_seen = total * BATCH_SIZE
                            (run_dir / "final.json").write_text(json.dumps({
                                "status": "done", "final": metric(evals[-1]), "best": metric(best),
                                "best_iter": best["iter"], "iters": total, "images_seen": images_seen,
                                "instances_seen": images_seen * INSTANCES_PER_IMAGE,
                                "pixels_seen": images_seen * IMAGE_PIXELS,
                                "wall_time_s": total * 0.05 * (1.0 + 0.01 * seed),
                            }), encoding="utf-8")
                        entries.append(entry)
    if states:
        raise ValueError(f"states name runs that the matrix does not have: {sorted(states)}")

    pretrain = {}
    for source in pretrain_records:
        if source in inits:
            rel = f"pretrain/{source}/pretrain.json"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            images_seen = 20000 * 64
            (root / rel).write_text(json.dumps({
                "top1": 61.2, "iters": 20000, "images_seen": images_seen, "pixels_seen": images_seen * IMAGE_PIXELS,
                "wall_time_s": 3600.0, "config": {"data": "synthetic classification"},
            }), encoding="utf-8")
            pretrain[source] = rel
    study = {"name": name, "pretrain": pretrain, "runs": entries}
    if margin_ap is not None:
        study["margin_ap"] = margin_ap
    if init_cost is not None:
        study["init_cost"] = init_cost
    (root / "study.json").write_text(json.dumps(study, indent=1), encoding="utf-8")
    return root


# ---------------------------------------------------------------------------------------------
# A planted study whose forecast errors at each cut are known
# ---------------------------------------------------------------------------------------------

# Each arm's curve is exactly a - b * exp(-x / tau) (x in units of 1x) until a run's first LR drop, then that value
# plus the jump. Every schedule here (2x, 4x, 8x) trains the same tail after its first drop, so the forecast learns
# the jump from the runs done. The 4x and 8x runs end PLANTED_BIAS AP above that, so a forecast made before they
# finished misses by exactly that much.
PLANTED_ARMS = {"random": (40.0, 39.0, 2.0, 4.0), "pretrain": (41.0, 38.0, 0.5, 2.5)}  # a, b, tau, jump
PLANTED_BIAS = {"4x": 3.0, "8x": 1.0}


def planted_ap(t: int, *, init: str, images: int, drops: list, seed: int) -> float:
    a, b, tau_, jump = PLANTED_ARMS[init]
    d1, d2 = drops
    total = d2 + 2 * UNIT_ITERS // 9  # schedules of 2x and longer drop the second time 2/9 of 1x before the end
    ap = a - b * math.exp(-min(t, d1) / UNIT_ITERS / tau_) + (jump if t > d1 else 0.0)
    if t == total:
        ap += PLANTED_BIAS.get(f"{total // UNIT_ITERS}x", 0.0)
    return ap


def make_planted_study(root, states: dict | None = None) -> Path:
    """2x/4x/8x on the full set, one seed, random and pretrain on `planted_ap`'s curves.

    Cut at 30% or 40% of 8x (2x done, 4x and 8x not), the forecast misses 4x by -3 AP and 8x by -1 AP. Cut at
    60% or 80% (4x done too), 8x's jump is the mean of 2x's (exact) and 4x's (3 AP high), and it misses 8x by
    +0.5 AP; its interval spans the two jumps, [exact, exact + 3].
    """
    return make_study(root, name="planted", schedules=("2x", "4x", "8x"), sizes=("full",), seeds=(0,),
                      states=states, ap_fn=planted_ap)
