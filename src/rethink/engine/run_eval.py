"""`rethink eval CONFIG --weights CKPT [--predictions FILE]`: score saved weights on the config's validation set,
with each category's AP, and optionally write the detections as a COCO results file."""

from pathlib import Path

import torch

from rethink.config import RunConfig
from rethink.engine import checkpoint as ckpt
from rethink.engine.evaluate import evaluate
from rethink.engine.loop import amp_dtype, resolve_device
from rethink.engine.train import load_datasets
from rethink.errors import UserError
from rethink.models.detector import build_detector


def evaluate_weights(cfg: RunConfig, weights: Path, per_category: bool = False,
                     predictions: Path | None = None) -> dict:
    device = resolve_device(cfg.device, cfg.model.norm)
    _, val_set, train_check, val_check = load_datasets(cfg)
    torch.manual_seed(cfg.seed)
    model = build_detector(cfg.model, cfg.data, len(val_set.cat_ids))
    state = ckpt.load(weights)
    state = state.get("model", state) if isinstance(state, dict) else state
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        keys = (result.missing_keys or result.unexpected_keys)[:3]
        raise UserError(f"{weights}: does not fit the config's model (e.g. {', '.join(keys)})")
    model.to(device)
    return evaluate(model, val_set, val_check.coco, device, batch_size=max(1, cfg.solver.batch_size),
                    amp_dtype=amp_dtype(device, cfg.solver.amp), per_category=per_category, predictions=predictions)
