"""Compute (the paper's finding 5): what a pretrained init cost in images, instances and pixels, and what each
arm has seen, pre-training included, for the two models the catches_up finding compares.
"""

from rethink.report.cells import Grid
from rethink.report.stats import NOT_ENOUGH
from rethink.study.results import RANDOM


def pretraining_cost(record: dict | None, stated: dict | None, meta: dict | None) -> dict:
    """Images, instances and pixels that went into a pretrained init, and where the numbers come from.

    `record`: rethink's own pretrain.json (measured while pre-training; one labelled instance per image) wins.
    Otherwise `meta` (the published weights' metadata: data set, images per epoch, resolution, see
    models/weights_meta.py) and `stated` (the study's report.init_cost.<source>: images, instances, pixels,
    or images_per_epoch, epochs, resolution) are combined, a stated value overriding the metadata. Without a
    number of epochs the totals stay unknown (None) and `from` says what to state.
    """
    if record is not None and record.get("images_seen") is not None:
        images = record["images_seen"]
        return {"images": images, "instances": record.get("instances_seen", images),
                "pixels": record.get("pixels_seen"), "from": "measured by rethink pretrain (pretrain.json)"}
    stated, meta = dict(stated or {}), dict(meta or {})
    per_epoch = stated.get("images_per_epoch", meta.get("images_per_epoch"))
    resolution = stated.get("resolution", meta.get("resolution"))
    epochs = stated.get("epochs")
    images = stated.get("images", per_epoch * epochs if per_epoch and epochs else None)
    pixels = stated.get("pixels", images * resolution * resolution if images and resolution else None)
    origin = []
    if meta:
        origin.append(f"{meta.get('dataset') or 'data set not named'}, {meta.get('resolution')} px from {meta['from']}")
    if stated:
        origin.append("stated in the study (report.init_cost)" + (f": {stated['note']}" if stated.get("note") else ""))
    if images is None and per_epoch:
        origin.append("the number of epochs is not recorded: state it as report.init_cost.<source>.epochs")
    return {"images": images, "instances": stated.get("instances", images), "pixels": pixels,
            "images_per_epoch": per_epoch, "epochs": epochs, "resolution": resolution,
            "from": "; ".join(origin) or "not recorded"}


def _seen(cell: dict | None) -> dict:
    return {k: (cell or {}).get(f"{k}_seen", {}).get("mean") for k in ("images", "instances", "pixels")}


def compute_comparison(grid: Grid, catches_up: dict, cost: dict) -> dict | None:
    """What each arm has seen, pre-training included, for the two models catches_up compares: pretrained at
    its best schedule and random init at the longest, on the largest training set."""
    if catches_up["status"] == NOT_ENOUGH and "schedule_longest" not in catches_up:
        return None
    size = catches_up["train_size"]
    fine_tuning = _seen(grid.cell(grid.source, catches_up["schedule_best_pretrained"], size))
    random = _seen(grid.cell(RANDOM, catches_up["schedule_longest"], size))
    total = {k: (fine_tuning[k] + cost[k] if fine_tuning[k] is not None and cost.get(k) is not None else None)
             for k in fine_tuning}
    ratio = {k: (total[k] / random[k] if total[k] is not None and random[k] else None) for k in total}
    return {"train_size": size, "schedule_pretrained": catches_up["schedule_best_pretrained"],
            "schedule_random": catches_up["schedule_longest"], "pretraining": cost, "fine_tuning": fine_tuning,
            "pretrained_total": total, "random": random, "pretrained_over_random": ratio}
