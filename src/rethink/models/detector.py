"""The detector: torchvision Faster/Mask R-CNN on a backbone with FPN, every part built explicitly.

The paper's recipe: FPN, a 4conv1fc box head and a 4conv mask head, all with the same norm as the backbone
(GN or SyncBN), nothing frozen. The two arms of a comparison call `build_detector` with the same config and
seed; only `init` differs, and it only touches the backbone body.
"""

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from rethink.config import DataConfig, ModelConfig
from rethink.errors import UserError
from rethink.models import backbone as bb

# Both arms normalize inputs the same way (ImageNet statistics, as the pretrained weights expect).
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


class TimmBackboneWithFPN(nn.Module):
    """Same contract as torchvision's BackboneWithFPN (`body`, `fpn`, `out_channels`) for timm feature models."""

    def __init__(self, features: nn.Module, in_channels_list, out_channels: int, norm_layer):
        super().__init__()
        self.body = bb.TimmFeatures(features)
        self.fpn = FeaturePyramidNetwork(in_channels_list, out_channels, LastLevelMaxPool(), norm_layer=norm_layer)
        self.out_channels = out_channels

    def forward(self, x):
        return self.fpn(self.body(x))


def build_backbone_with_fpn(m: ModelConfig) -> nn.Module:
    norm_layer = bb.norm_factory(m.norm, m.gn_groups)
    if m.backbone.startswith("timm:"):
        features, channels = bb.build_timm_features(m.backbone[len("timm:"):], m.norm, m.gn_groups)
        module = TimmBackboneWithFPN(features, channels, m.fpn_channels, norm_layer)
        body = module.body.body
    else:
        trunk, channels = bb.build_resnet(m.backbone, m.norm, m.tiny_widths, m.tiny_depths, m.gn_groups)
        module = BackboneWithFPN(
            trunk,
            return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
            in_channels_list=channels,
            out_channels=m.fpn_channels,
            extra_blocks=LastLevelMaxPool(),
            norm_layer=norm_layer,
        )
        body = module.body
    bb.freeze_stages(body, m.freeze_at)
    return module


def backbone_body(model: nn.Module) -> nn.Module:
    """The part that pretrained weights replace (the ResNet trunk without classifier)."""
    body = model.backbone.body
    return body.body if isinstance(body, bb.TimmFeatures) else body


def build_detector(m: ModelConfig, d: DataConfig, num_classes: int) -> nn.Module:
    """Faster or Mask R-CNN with FPN; `num_classes` excludes the background.

    Weights are random-initialized here (models.backbone.init_random, then Detectron's small normal init of the
    final predictors); loading pretrained backbone weights is a separate step.
    """
    if num_classes < 1:
        raise UserError("the training annotations define no categories")
    norm_layer = bb.norm_factory(m.norm, m.gn_groups)
    backbone = build_backbone_with_fpn(m)
    c = m.fpn_channels
    anchors = AnchorGenerator(sizes=tuple((s,) for s in m.anchor_sizes), aspect_ratios=(tuple(m.aspect_ratios),) * 5)
    rpn_head = RPNHead(c, anchors.num_anchors_per_location()[0], conv_depth=1)
    box_pool = MultiScaleRoIAlign(featmap_names=["0", "1", "2", "3"], output_size=7,
                                  sampling_ratio=m.roi_sampling_ratio)
    box_head = FastRCNNConvFCHead(
        (c, 7, 7), [m.box_head_conv_dim] * m.box_head_num_conv, [m.box_head_fc_dim], norm_layer=norm_layer
    )
    box_predictor = FastRCNNPredictor(m.box_head_fc_dim, num_classes + 1)
    common = dict(
        min_size=d.min_size_train,
        max_size=d.max_size,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
        rpn_anchor_generator=anchors,
        rpn_head=rpn_head,
        rpn_pre_nms_top_n_train=m.rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=m.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=m.rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=m.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=m.rpn_batch_size_per_image,
        box_roi_pool=box_pool,
        box_head=box_head,
        box_predictor=box_predictor,
        box_batch_size_per_image=m.box_batch_size_per_image,
        box_detections_per_img=m.box_detections_per_img,
        box_score_thresh=m.box_score_thresh,
    )
    if m.detector == "mask_rcnn":
        mask_pool = MultiScaleRoIAlign(featmap_names=["0", "1", "2", "3"], output_size=14,
                                       sampling_ratio=m.roi_sampling_ratio)
        mask_head = MaskRCNNHeads(c, [m.mask_head_conv_dim] * m.mask_head_num_conv, 1, norm_layer=norm_layer)
        mask_predictor = MaskRCNNPredictor(m.mask_head_conv_dim, m.mask_head_conv_dim, num_classes + 1)
        model = MaskRCNN(backbone, num_classes=None, mask_roi_pool=mask_pool, mask_head=mask_head,
                         mask_predictor=mask_predictor, **common)
    else:
        model = FasterRCNN(backbone, num_classes=None, **common)
    # The test-time size differs from the (possibly multi-scale) training sizes; see set_mode_sizes.
    model.rethink_sizes = (tuple(d.min_size_train), d.min_size_test)
    init_detector(model)
    if m.norm != "syncbn":
        bb.check_norms(model, m.norm, "the detector")
    return model


def init_detector(model: nn.Module) -> None:
    bb.init_random(model)
    # Detectron's final layers: small normal inits so the first losses are those of a uniform guess.
    for layer in model.rpn.head.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
    predictor = model.roi_heads.box_predictor
    nn.init.normal_(predictor.cls_score.weight, std=0.01)
    nn.init.normal_(predictor.bbox_pred.weight, std=0.001)
    nn.init.zeros_(predictor.cls_score.bias)
    nn.init.zeros_(predictor.bbox_pred.bias)
    if getattr(model.roi_heads, "mask_predictor", None) is not None:
        logits = model.roi_heads.mask_predictor.mask_fcn_logits
        nn.init.normal_(logits.weight, std=0.001)
        nn.init.zeros_(logits.bias)


def set_mode_sizes(model: nn.Module, training: bool) -> None:
    """Training picks a shorter side from data.min_size_train per image; evaluation uses data.min_size_test."""
    train_sizes, test_size = model.rethink_sizes
    model.transform.min_size = train_sizes if training else (test_size,)


@torch.no_grad()
def init_from_source(model: nn.Module, init: str, m: ModelConfig, imagenet_weights: str = "",
                     allow_bn_stats: bool = False) -> dict:
    """Apply `init` to the backbone body: random (already done), imagenet (the named `imagenet_weights`, else
    the default for the backbone and norm), or a weights file. See bb.load_backbone_weights for allow_bn_stats."""
    if init == "random":
        return {"source": "random", "loaded": 0, "missing": [], "unexpected": [], "ignored_classifier": []}
    body = backbone_body(model)
    if init == "imagenet":
        state, source = bb.imagenet_state_dict(m.backbone, m.norm, imagenet_weights)
    else:
        state, source = bb.read_weights_file(init), init
    return bb.load_backbone_weights(body, state, source, allow_bn_stats)


class Normalize:
    """uint8 batch -> float input with the detector's ImageNet mean/std, so features transfer as they are."""

    def __init__(self, device: torch.device):
        std = torch.tensor(IMAGE_STD, device=device).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGE_MEAN, device=device).view(1, 3, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.shift = mean / std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().mul_(self.scale).sub_(self.shift)
