"""`rethink eval CONFIG --weights CKPT [--predictions FILE]`: score saved weights on the config's validation set,
with each category's AP, and optionally write the detections as a COCO results file."""

from pathlib import Path

import torch

from rethink.config import RunConfig
from rethink.data.coco import load_datasets
from rethink.engine import checkpoint as ckpt
from rethink.engine.evaluate import evaluate
from rethink.engine.loop import amp_dtype, resolve_device
from rethink.errors import UserError
from rethink.models.detector import build_detector


def evaluate_weights(cfg: RunConfig, weights: Path, per_category: bool = False,
                     predictions: Path | None = None) -> dict:
    device = resolve_device(cfg.device, cfg.model.norm)
    _, val_set, train_check, val_check = load_datasets(cfg)
    torch.manual_seed(cfg.seed)
    model = build_detector(cfg.model, cfg.data, len(val_set.cat_ids))
    if Path(weights).is_dir():
        newest = ckpt.latest(weights)
        example = newest[1] if newest else Path(weights) / "checkpoints" / "iter_XXXXXXX.pt"
        raise UserError(f"{weights}: is a folder; pass one checkpoint file, e.g. {example}")
    state = ckpt.load(weights)
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"{weights}: holds no model weights; pass a run's checkpoints/iter_*.pt")
    check_fits(weights, model.state_dict(), state)
    model.load_state_dict(state)
    model.to(device)
    return evaluate(model, val_set, val_check.coco, device, batch_size=max(1, cfg.solver.batch_size),
                    amp_dtype=amp_dtype(device, cfg.solver.amp), per_category=per_category, predictions=predictions)


CLASS_KEY = "roi_heads.box_predictor.cls_score.weight"


def check_fits(weights: Path, own: dict, state: dict) -> None:
    """Every key of the model present with its shape, and nothing else: checked before load_state_dict, which
    raises a page-long error on the first shape it cannot copy. The number of categories gets its own words."""
    if CLASS_KEY in own and CLASS_KEY in state and state[CLASS_KEY].shape != own[CLASS_KEY].shape:
        raise UserError(f"{weights}: was trained on {state[CLASS_KEY].shape[0] - 1} categories, the config's data has "
                        f"{own[CLASS_KEY].shape[0] - 1}; evaluate it with the config and data it was trained on")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        keys = (missing or unexpected)[:3]
        what = "lacks" if missing else "has keys the model lacks"
        raise UserError(f"{weights}: does not fit the config's model ({what}: {', '.join(keys)}"
                        f"{' ...' if len(missing or unexpected) > 3 else ''}); evaluate it with the config it was "
                        "trained with (its run's config.yaml)")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise UserError(f"{weights}: does not fit the config's model: {k} has shape {tuple(state[k].shape)}, the "
                            f"model {tuple(v.shape)}; evaluate it with the config it was trained with (its run's "
                            "config.yaml)")
