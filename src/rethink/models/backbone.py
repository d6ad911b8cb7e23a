"""Backbones with an explicit norm layer, the random init, and loading of pretrained backbone weights.

Every choice that could differ between the two arms of the comparison is made here, explicitly:
the norm layer in every layer, the frozen stages, and the init. torchvision's detection builders switch to
FrozenBatchNorm and freeze stages when weights are given; we never call them for that reason.
"""

import pickle
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.ops import FrozenBatchNorm2d

from rethink.errors import UNREADABLE, UserError, reason
from rethink.fileio import load_failure

NORM_TYPES = (nn.GroupNorm, nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d)


# ---------------------------------------------------------------------------------------------------------------
# norm layers


def gn_groups(channels: int, max_groups: int = 32) -> int:
    """Groups for GroupNorm: 32 (the paper's) where the layer is wide enough, fewer for narrow layers.

    The rule: the largest divisor of `channels` that is <= max_groups and leaves at least 2 channels per group
    (one channel per group would be InstanceNorm). ResNet-50/101 and FPN layers all get 32.
    """
    for groups in range(min(max_groups, channels // 2), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


def norm_factory(norm: str, max_groups: int = 32):
    """A callable channels -> norm module. `syncbn` builds BatchNorm2d, converted to SyncBatchNorm when the run
    is distributed on CUDA (torch's own conversion, see engine.distributed)."""
    if norm == "gn":
        def group_norm(channels: int, **kwargs):  # kwargs: device/dtype, which timm passes
            return nn.GroupNorm(gn_groups(channels, max_groups), channels, **kwargs)

        return group_norm
    if norm in ("bn", "syncbn"):
        return nn.BatchNorm2d
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    raise UserError(f"model.norm: '{norm}' is not one of gn, bn, frozen_bn, syncbn")


def norm_layer_types(module: nn.Module) -> set[str]:
    return {type(m).__name__ for m in module.modules() if isinstance(m, NORM_TYPES)}


# ---------------------------------------------------------------------------------------------------------------
# backbone bodies


class TinyResNet(nn.Module):
    """A small ResNet of BasicBlocks for CPU work; stage widths and depths are config values.

    Named like torchvision's ResNet (conv1, bn1, layer1..layer4, fc) so the same weight files, the same
    feature extraction and the same freezing rules apply to both.
    """

    def __init__(self, widths, depths, norm_layer, num_classes: int = 0):
        super().__init__()
        # A 3x3 stride-2 stem plus max-pool keeps the usual stride 4 at res2 while staying cheap on small images.
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = norm_layer(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = widths[0]
        for i, (width, depth) in enumerate(zip(widths, depths)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(depth):
                downsample = None
                if j == 0 and (stride != 1 or in_ch != width):
                    downsample = nn.Sequential(
                        nn.Conv2d(in_ch, width, kernel_size=1, stride=stride, bias=False), norm_layer(width)
                    )
                blocks.append(tv_resnet.BasicBlock(in_ch, width, stride if j == 0 else 1, downsample, norm_layer=norm_layer))
                in_ch = width
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes) if num_classes else nn.Identity()

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_resnet(backbone: str, norm: str, tiny_widths, tiny_depths, gn_max_groups: int = 32, num_classes: int = 0):
    """A torchvision-layout ResNet (conv1/bn1/layer1..4/fc) with the given norm everywhere.

    Returns (model, channels of res2..res5). num_classes=0 gives no classifier (detection); >0 a linear
    classifier (pre-training).
    """
    norm_layer = norm_factory(norm, gn_max_groups)
    if backbone == "tiny":
        model = TinyResNet(tiny_widths, tiny_depths, norm_layer, num_classes)
        return model, list(tiny_widths)
    builders = {
        "resnet18": (tv_resnet.resnet18, [64, 128, 256, 512]),
        "resnet34": (tv_resnet.resnet34, [64, 128, 256, 512]),
        "resnet50": (tv_resnet.resnet50, [256, 512, 1024, 2048]),
        "resnet101": (tv_resnet.resnet101, [256, 512, 1024, 2048]),
    }
    if backbone not in builders:
        raise UserError(f"model.backbone: '{backbone}' is not one of tiny, {', '.join(builders)}, timm:<name>")
    builder, channels = builders[backbone]
    # weights=None and an explicit norm_layer: nothing here depends on whether pretrained weights come later.
    model = builder(weights=None, norm_layer=norm_layer, num_classes=max(num_classes, 1))
    if not num_classes:
        model.fc = nn.Identity()
    return model, channels


class TimmFeatures(nn.Module):
    """A timm `features_only` model whose list output becomes the OrderedDict the FPN expects."""

    def __init__(self, model):
        super().__init__()
        self.body = model

    def forward(self, x):
        return OrderedDict((str(i), f) for i, f in enumerate(self.body(x)))


def build_timm_features(name: str, norm: str, gn_max_groups: int = 32, pretrained_file: str | None = None):
    import timm

    kwargs = dict(features_only=True, out_indices=(1, 2, 3, 4), norm_layer=norm_factory(norm, gn_max_groups))
    if pretrained_file:
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=pretrained_file))
    try:
        model = timm.create_model(name, **kwargs)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise UserError(f"model.backbone: timm has no model '{name}'") from None
        raise
    except TypeError as e:
        raise UserError(
            f"model.backbone: timm:{name} does not take an explicit norm layer ({e}); rethink needs one to keep "
            "both arms identical"
        ) from None
    channels = model.feature_info.channels()
    if len(channels) != 4:
        raise UserError(f"model.backbone: timm:{name} gives {len(channels)} feature levels, the FPN needs 4 (C2..C5)")
    return model, channels


def check_norms(module: nn.Module, norm: str, where: str) -> None:
    """Refuse a model whose norm layers are not all the requested kind (a silent confound between arms)."""
    expected = {"gn": {"GroupNorm"}, "bn": {"BatchNorm2d"}, "syncbn": {"BatchNorm2d", "SyncBatchNorm"},
                "frozen_bn": {"FrozenBatchNorm2d"}}[norm]
    found = norm_layer_types(module)
    stray = found - expected
    if stray:
        raise UserError(f"model.norm={norm}: {where} still contains {', '.join(sorted(stray))} layers")


def freeze_stages(body: nn.Module, freeze_at: int) -> None:
    """detectron2's freeze_at: 0 trains everything, 1 freezes the stem, k>1 the stem and res2..res(k)."""
    if freeze_at <= 0:
        return
    prefixes = ["conv1", "bn1"] + [f"layer{i}" for i in range(1, freeze_at)]
    for name, param in body.named_parameters():
        # timm feature models keep the same names (conv1, bn1, layer1...)
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            param.requires_grad_(False)


# ---------------------------------------------------------------------------------------------------------------
# random init


def c2_xavier_(layer: nn.Module) -> None:
    """detectron2's "c2_xavier_fill": kaiming_uniform with a=1 (Caffe2's XavierFill), bias 0."""
    nn.init.kaiming_uniform_(layer.weight, a=1)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def init_random(model: nn.Module) -> None:
    """The one random init of rethink, applied to the whole detector (or classifier) in module order.

    - convolutions (backbone, mask head, box head convs): MSRA, kaiming normal with fan_out and ReLU gain;
    - norm layers: weight 1, bias 0, everywhere; no zero-init of the last norm of each block, which
      detectron2 notes hurts GroupNorm from scratch;
    - fully connected layers and FPN convs: c2 xavier (see c2_xavier_);
    - the final classifiers/regressors get the small normal inits of Detectron (applied by the detector
      builder after this function, see models.detector).
    Because the draws happen in module order from the seeded generator, two builds with the same seed give the
    same weights: the FPN and heads of both arms are identical.
    """
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            if ".fpn." in f".{name}." or name.startswith("fpn"):
                c2_xavier_(m)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        elif isinstance(m, FrozenBatchNorm2d):
            m.weight.fill_(1.0)
            m.bias.zero_()
            m.running_mean.zero_()
            m.running_var.fill_(1.0)
        elif isinstance(m, nn.Linear):
            c2_xavier_(m)


# ---------------------------------------------------------------------------------------------------------------
# pretrained weights

_CLASSIFIER_PREFIXES = ("fc.", "head.", "classifier.", "head.fc.")
_STRIP_PREFIXES = ("module.", "backbone.body.body.", "backbone.body.", "body.", "model.")


def read_weights_file(path) -> dict:
    """A state dict from an untrusted file: safetensors, or a torch file read with weights_only=True.

    A pickle that would construct arbitrary objects (and so could run code) is refused, not executed.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"init: weights file {path} not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"{path}: not a readable safetensors file ({reason(e)})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        plain = load_failure(path, e)
        if not plain.startswith("it holds Python objects"):
            raise UserError(f"{path}: not a readable torch weights file ({plain})") from None
        raise UserError(
            f"{path}: refused to load: the file holds Python objects beyond tensors, and loading it could run code; "
            "convert it to safetensors or a plain state dict"
        ) from None
    except (*UNREADABLE, OSError) as e:
        raise UserError(f"{path}: not a readable torch weights file ({load_failure(path, e)})") from None
    for key in ("model", "state_dict", "backbone"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: expected a state dict of tensors (optionally under 'model' or 'state_dict')")
    return obj


def _normalize_keys(state: dict, wanted: set) -> dict:
    """Strip wrapper prefixes (DDP's module., a detector's backbone.body.) so keys match the body's names."""
    out = {}
    for key, value in state.items():
        k = key
        if k not in wanted:
            for prefix in _STRIP_PREFIXES:
                if k.startswith(prefix) and k[len(prefix):] in wanted:
                    k = k[len(prefix):]
                    break
        out[k] = value
    return out


def load_backbone_weights(body: nn.Module, state: dict, source: str, allow_bn_stats: bool = False) -> dict:
    """Load a backbone state dict into `body`; every body key must be present with the right shape.

    Returns a report {loaded, missing, unexpected, ignored_classifier}. Unexpected keys (a classifier head) are
    reported and ignored. BatchNorm running statistics that the body has no place for (BN-trained weights into a
    GN body) are refused unless `allow_bn_stats`: each layer's weights were learned on activations normalized
    with those statistics, so the pretrained arm would start from a different function than its source, a
    confound the paper avoids by fine-tuning GN-pretrained weights with GN.
    """
    own = body.state_dict()
    state = _normalize_keys(state, set(own))
    bn_stats = [k for k in state if k not in own and k.endswith((".running_mean", ".running_var"))]
    if bn_stats and not allow_bn_stats:
        raise UserError(
            f"{source}: holds BatchNorm running statistics ({len(bn_stats)} keys, e.g. {bn_stats[0]}), which the "
            f"{', '.join(sorted(norm_layer_types(body))) or 'norm-free'} body has no place for: these weights were "
            "trained with BatchNorm; use weights trained with the run's norm, or set init_allow_bn_stats: true to "
            "load them without their statistics"
        )
    # FrozenBatchNorm2d keeps running stats as buffers; a GN body has none: only compare keys the body has.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise UserError(
            f"{source}: does not fit model.backbone: missing {len(missing)} keys, e.g. {', '.join(missing[:5])}{more}"
        )
    for k, v in own.items():
        if k in state and tuple(state[k].shape) != tuple(v.shape):
            raise UserError(
                f"{source}: key {k} has shape {tuple(state[k].shape)}, the backbone expects {tuple(v.shape)}"
            )
    classifier = [k for k in state if k not in own and k.startswith(_CLASSIFIER_PREFIXES)]
    unexpected = [k for k in state if k not in own and k not in classifier]
    to_load = {k: state[k] for k in own if k in state}
    result = body.load_state_dict(to_load, strict=False)
    assert not result.unexpected_keys
    return {
        "source": source,
        "loaded": len(to_load),
        "missing": [],
        "unexpected": unexpected,
        "ignored_classifier": classifier,
    }


def named_weights_state_dict(name: str, hint: str) -> tuple[dict, str]:
    """Weights named `timm:<model name>` (timm's pretrained weights of that model) or `torchvision:<weights>`
    (a torchvision weights enum member, e.g. ResNet50_Weights.IMAGENET1K_V2)."""
    kind, _, weights = name.partition(":")
    if kind == "timm":
        return _timm_state(weights, "imagenet_weights", hint), name
    from torchvision.models import get_weight

    try:
        weights_enum = get_weight(weights)
    except (KeyError, ValueError, AttributeError):
        raise UserError(f"imagenet_weights: torchvision has no weights '{weights}' (e.g. ResNet50_Weights.IMAGENET1K_V2)") from None
    return _torchvision_state(weights_enum, "imagenet_weights", hint), name


def _timm_state(name: str, key: str, hint: str) -> dict:
    try:
        import timm

        model = timm.create_model(name, pretrained=True)
    except Exception as e:  # hub errors come in many types (network, cache, missing package); all mean "not here"
        raise UserError(f"{key}: could not get timm weights '{name}' ({type(e).__name__}); {hint}") from None
    return model.state_dict()


def _torchvision_state(weights_enum, key: str, hint: str) -> dict:
    try:
        return weights_enum.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # download errors come in many types (network, cache, hash); all mean "not here"
        raise UserError(f"{key}: could not get torchvision weights {weights_enum} ({type(e).__name__}); {hint}") from None


def imagenet_state_dict(backbone: str, norm: str, weights: str = "") -> tuple[dict, str]:
    """ImageNet weights for a named backbone, from timm or torchvision (needs network or a warm cache).

    `weights` (the config's imagenet_weights) names them explicitly; by default GN runs take timm's GroupNorm
    ResNet-50 (the paper fine-tunes GN-pretrained weights with GN) and BN/SyncBN/FrozenBN runs torchvision's BN
    weights.
    """
    hint = (
        "no network here? download the weights where you have one and pass the file instead: "
        "--set init=/path/to/weights.safetensors"
    )
    if weights:
        return named_weights_state_dict(weights, hint)
    if backbone == "tiny":
        raise UserError("init: imagenet has no weights for the `tiny` backbone; pre-train it with `rethink pretrain`")
    if backbone.startswith("timm:"):
        name = backbone[len("timm:"):]
        return _timm_state(name, "init: imagenet", hint), f"timm:{name}"
    if norm == "gn":
        timm_names = {"resnet50": "resnet50_gn.a1h_in1k"}
        if backbone not in timm_names:
            raise UserError(
                f"init: imagenet: no GroupNorm ImageNet weights are published for {backbone}; "
                "pass a file of GN-pretrained weights with --set init=PATH"
            )
        return _timm_state(timm_names[backbone], "init: imagenet", hint), f"timm:{timm_names[backbone]}"
    weights_enum = {
        "resnet18": tv_resnet.ResNet18_Weights.IMAGENET1K_V1,
        "resnet34": tv_resnet.ResNet34_Weights.IMAGENET1K_V1,
        "resnet50": tv_resnet.ResNet50_Weights.IMAGENET1K_V1,
        "resnet101": tv_resnet.ResNet101_Weights.IMAGENET1K_V1,
    }[backbone]
    return _torchvision_state(weights_enum, "init: imagenet", hint), f"torchvision:{weights_enum}"


def norm_parameter_ids(model: nn.Module) -> set:
    ids = set()
    for m in model.modules():
        if isinstance(m, NORM_TYPES):
            for p in m.parameters(recurse=False):
                ids.add(id(p))
    return ids


def body_state_dict(model) -> dict:
    """The backbone body's tensors: everything but the classifier, under the keys a detector body uses."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
