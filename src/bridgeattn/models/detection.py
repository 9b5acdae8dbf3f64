"""BA-ResNets as backbones for torchvision's detection and segmentation models.

    image (B, 3, H, W) -> timm ``features_only`` BA-ResNet -> stage maps -> torchvision FPN -> Faster/Mask R-CNN
                                                          -> last map -> DeepLabV3 / FCN head

``frozen_bn=True`` (the default, as in torchvision's detection backbones) applies :func:`bridgeattn.freeze_bn`:
every BatchNorm2d *and* the gates' BatchNorm1d keep their statistics, whatever the (tiny) batch size.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.segmentation import FCN, DeepLabV3
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ..errors import UserError
from ..layers.freeze import freeze_bn
from .registry import create_model

__all__ = ["BridgeFeaturePyramid", "LastFeature", "create_features", "create_fpn_backbone", "create_detector",
           "create_segmentation_model"]


def create_features(model_name: str = "bav2_resnet50", frozen_bn: bool = True, trainable_stages: int | None = None,
                    **model_kwargs: Any) -> nn.Module:
    """The ``features_only`` trunk: ``forward(x)`` -> list of maps (stem, stage 1, ..., stage N).

    ``trainable_stages`` (torchvision's ``trainable_layers``): only the last that many stages train; the
    stem and lower stages are frozen. ``None``: everything trains. ``model_kwargs`` reach ``create_model``
    (e.g. ``pretrained=True, pretrained_cfg_overlay=dict(file="model.safetensors")``, ``output_stride=8``).
    """
    body = create_model(model_name, features_only=True, **model_kwargs)
    if frozen_bn:
        body = freeze_bn(body)
    if trainable_stages is not None:
        stages = [name for name, _ in body.named_children() if name.startswith("layer")]
        if not 0 <= trainable_stages <= len(stages):
            raise UserError(f"trainable_stages must be between 0 and {len(stages)}, got {trainable_stages}")
        train = set(stages[len(stages) - trainable_stages:])
        for name, module in body.named_children():
            if name not in train:
                module.requires_grad_(False)
    return body


class BridgeFeaturePyramid(nn.Module):
    """A features_only trunk followed by torchvision's FPN; ``out_channels`` as torchvision detectors expect.

    ``forward(x)`` -> ``OrderedDict`` of ``(B, out_channels, H/s, W/s)`` maps keyed ``"0", "1", ...`` (one per
    stage, finest first) plus ``"pool"`` (the extra max-pooled level).
    """

    def __init__(self, body: nn.Module, out_channels: int = 256) -> None:
        super().__init__()
        self.body = body
        # Feature 0 is the stem: the pyramid starts at the first stage, as in torchvision's ResNet FPN.
        self.featmap_names = [str(i) for i in range(len(body.feature_info) - 1)]
        self.fpn = FeaturePyramidNetwork(body.feature_info.channels()[1:], out_channels, LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(OrderedDict(zip(self.featmap_names, self.body(x)[1:])))


class LastFeature(nn.Module):
    """``forward(x)`` -> ``{"out": last stage map}``, the backbone interface of torchvision's segmentation models."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.out_channels = body.feature_info.channels()[-1]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.body(x)[-1]}


def create_fpn_backbone(model_name: str = "bav2_resnet50", out_channels: int = 256, frozen_bn: bool = True,
                        trainable_stages: int | None = None, **model_kwargs: Any) -> BridgeFeaturePyramid:
    """A BA-ResNet + FPN backbone for torchvision's Faster/Mask/Keypoint R-CNN (see :func:`create_features`)."""
    return BridgeFeaturePyramid(create_features(model_name, frozen_bn, trainable_stages, **model_kwargs), out_channels)


def create_detector(num_classes: int, model_name: str = "bav2_resnet50", mask: bool = False, min_size: int = 800,
                    max_size: int = 1333, anchor_sizes: Sequence[int] | None = None, fpn_channels: int = 256,
                    frozen_bn: bool = True, trainable_stages: int | None = None,
                    model_kwargs: dict[str, Any] | None = None, **detector_kwargs: Any) -> FasterRCNN:
    """torchvision Faster R-CNN (``mask=False``) or Mask R-CNN on a BA-ResNet-FPN backbone.

    ``num_classes`` counts the background (torchvision's convention). ``anchor_sizes``: one size per pyramid
    level (default: torchvision's 32..512 for images of 512 px and more, else ``min_size // 8`` doubling per
    level). ``detector_kwargs`` go to the torchvision class (``box_score_thresh``, ``rpn_*``, ...).
    """
    backbone = create_fpn_backbone(model_name, fpn_channels, frozen_bn, trainable_stages, **(model_kwargs or {}))
    names = backbone.featmap_names
    levels = len(names) + 1  # + the max-pooled level
    if anchor_sizes is None:
        base = 32 if min_size >= 512 else max(4, min_size // 8)
        anchor_sizes = [base * 2**i for i in range(levels)]
    if len(anchor_sizes) != levels:
        raise UserError(f"anchor_sizes needs {levels} entries (one per pyramid level), got {len(anchor_sizes)}")
    anchors = AnchorGenerator(tuple((int(s),) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * levels)
    box_pool = MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2)
    kwargs: dict[str, Any] = dict(num_classes=num_classes, min_size=min_size, max_size=max_size,
                                  rpn_anchor_generator=anchors, box_roi_pool=box_pool, **detector_kwargs)
    if mask:
        return MaskRCNN(backbone, mask_roi_pool=MultiScaleRoIAlign(names, output_size=14, sampling_ratio=2), **kwargs)
    return FasterRCNN(backbone, **kwargs)


def create_segmentation_model(num_classes: int, model_name: str = "bav2_resnet50", head: str = "deeplabv3",
                              frozen_bn: bool = True, trainable_stages: int | None = None,
                              **model_kwargs: Any) -> nn.Module:
    """torchvision DeepLabV3 (``head="deeplabv3"``) or FCN (``head="fcn"``) on the last BA-ResNet stage.

    ``forward(x)`` -> ``{"out": (B, num_classes, H, W)}``. Pass ``output_stride=8`` or ``16`` for a dilated
    trunk, as torchvision's segmentation backbones use.
    """
    heads = {"deeplabv3": (DeepLabV3, DeepLabHead), "fcn": (FCN, FCNHead)}
    if head not in heads:
        raise UserError(f"head must be 'deeplabv3' or 'fcn', got {head!r}")
    segmentation, head_layer = heads[head]
    backbone = LastFeature(create_features(model_name, frozen_bn, trainable_stages, **model_kwargs))
    return segmentation(backbone, head_layer(backbone.out_channels, num_classes))
