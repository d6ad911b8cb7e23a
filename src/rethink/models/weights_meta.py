"""What published ImageNet weights say about their own training: the data set and the resolution.

Used by the report to count what a pretrained init cost (the paper's finding 5). timm's pretrained configs and
torchvision's weight enums record the training data (in their tag or name) and the input size; neither records
the number of epochs, which the study states (report.init_cost) when it is known.
"""

IMAGENET_1K_TRAIN_IMAGES = 1_281_167  # the ILSVRC-2012 train split


def weights_metadata(source: str) -> dict | None:
    """{"dataset", "images_per_epoch", "resolution", "from"} for `timm:<name>` or `torchvision:<Enum.MEMBER>`,
    None for anything else (a file, random init) or weights these libraries do not describe."""
    kind, _, name = source.partition(":")
    if kind == "timm":
        import timm

        try:
            cfg = timm.models.get_pretrained_cfg(name)
        except (RuntimeError, KeyError, ValueError):
            return None
        if cfg is None:
            return None
        tag, resolution = cfg.tag or "", int(cfg.input_size[-1])
    elif kind == "torchvision":
        from torchvision.models import get_weight

        try:
            weights = get_weight(name.split(".", 1)[-1] if name.count(".") > 1 else name)
        except (KeyError, ValueError, AttributeError):
            return None
        tag, resolution = weights.name.lower(), int(weights.transforms().crop_size[0])
    else:
        return None
    in1k = "in1k" in tag or "imagenet1k" in tag
    return {"dataset": "ImageNet-1k" if in1k else None,
            "images_per_epoch": IMAGENET_1K_TRAIN_IMAGES if in1k else None,
            "resolution": resolution, "from": f"{kind}'s metadata of {name}"}
