"""Baselines and initialisations as in their reference code: GCNet, FcaNet, SRM, the BAv1 MobileNetV3 gate."""
from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.optim import create_optimizer_v2

import bridgeattn
from bridgeattn.config import add_train_arguments, config_from_args
from bridgeattn.tools.profile import count_params


def _block_widths(model: nn.Module) -> list[int]:
    """Output channels of every residual block (where the attention module sits)."""
    return [b.bn3.num_features if hasattr(b, "bn3") else b.bn2.num_features
            for name in ("layer1", "layer2", "layer3", "layer4") for b in getattr(model, name)]


def test_gc_is_gcnets_additive_block_with_r16() -> None:
    """GCNet (arXiv 1904.11492): attention pooling conv (C + 1), 1x1 C->h (+h), LayerNorm (2h), 1x1 h->C (+C)."""
    model = bridgeattn.create_model("gc_resnet50")
    plain = count_params(bridgeattn.create_model("plain_resnet50"))
    gc = sum(c + 1 + c * (c // 16) + c // 16 + 2 * (c // 16) + (c // 16) * c + c for c in _block_widths(model))
    assert count_params(model) == plain + gc == 28_105_032
    block = model.layer1[0].se
    assert block.mlp_add is not None and block.mlp_scale is None and block.mlp_add.fc1.out_channels == 256 // 16
    x = torch.randn(2, 256, 8, 8)
    assert torch.equal(block(x), x)  # additive fusion, last conv zero at init: the block starts as the identity


def test_fca_hidden_width_is_the_official_c_over_16() -> None:
    """FcaNet's official code: Linear(C, C // 16, bias=False) twice; 4 hidden units at 64 channels."""
    assert bridgeattn.create_model("fca_resnet18").layer1[0].se.fc1.out_features == 4
    model = bridgeattn.create_model("fca_resnet50")
    plain = count_params(bridgeattn.create_model("plain_resnet50"))
    assert count_params(model) == plain + sum(2 * c * (c // 16) for c in _block_widths(model))


def test_srm_style_weights_get_no_weight_decay() -> None:
    model = bridgeattn.create_model("srm_resnet20")
    names = model.no_weight_decay()
    assert names == {n for n, _ in model.named_parameters() if n.endswith(".cfc")} and len(names) == 9
    optimizer = create_optimizer_v2(model, opt="sgd", lr=0.1, weight_decay=1e-4)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    params = dict(model.named_parameters())
    assert not any(id(params[n]) in decayed for n in names)
    assert id(params["conv1.weight"]) in decayed


def test_mobilenetv3_gate_linear_init_follows_the_reference() -> None:
    """The BAv1 MobileNetV3 reference draws every Linear weight from N(0, 0.01); the ResNet gates keep PyTorch's."""
    torch.manual_seed(0)
    model = bridgeattn.create_model("bav1_mobilenetv3_large_100")
    weights = torch.cat([m.weight.flatten() for b in model.modules() if hasattr(b, "ba")
                         for m in b.ba.modules() if isinstance(m, nn.Linear)])
    assert abs(weights.std().item() - 0.01) < 0.0005 and abs(weights.mean().item()) < 0.0005
    resnet_gate = bridgeattn.create_model("bav2_resnet50").layer3[0].ba.generation.weight
    assert resnet_gate.std().item() > 0.03  # kaiming-uniform default of Linear(64, 1024): std 1/sqrt(3 * 64)


def test_mobilenetv3_small_first_block_applies_se_before_the_relu() -> None:
    """BAv1 reference order in the expansion-free first block: relu(SE(bn(dwconv(x)))), then the pointwise conv;
    ``ba_pre_act=False`` keeps timm's relu-then-SE."""
    torch.manual_seed(0)
    model = bridgeattn.create_model("bav1_mobilenetv3_small_100").eval()
    block = model.blocks[0][0]
    x = torch.randn(2, 16, 16, 16)
    with torch.no_grad():
        y = F.batch_norm(F.conv2d(x, block.conv_dw.weight, None, 2, 1, 1, 16), block.bn1.running_mean,
                         block.bn1.running_var, block.bn1.weight, block.bn1.bias, False, 0.0, block.bn1.eps)
        se = block.se
        gate = F.hardsigmoid(se.conv_expand(se.act1(se.conv_reduce(y.mean((2, 3), keepdim=True)))))
        expected = block.bn2(block.conv_pw(F.relu(y * gate)))
        torch.testing.assert_close(block(x), expected)
        timm_order = bridgeattn.create_model("bav1_mobilenetv3_small_100", ba_pre_act=False).eval()
        timm_order.load_state_dict(model.state_dict())
        assert (timm_order.blocks[0][0](x) - expected).abs().max() > 1e-3


def _recipe_model(recipe: str) -> nn.Module:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    cfg, _ = config_from_args(parser.parse_args(["--config", recipe]))
    return bridgeattn.create_model(cfg.model.name, num_classes=10, **cfg.model.kwargs)


def test_bav1_efficientnet_recipe_builds_the_reference_trunk() -> None:
    """BatchNorm eps 1e-3 / momentum 0.01, TF 'same' padding, dropout and drop-connect 0.2 (docs/spec.md, section 3)."""
    model = _recipe_model("imagenet_bav1_efficientnet")
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.eps == 1e-3 and m.momentum == 0.01 for m in norms)
    assert type(model.conv_stem).__name__ == "Conv2dSame"  # asymmetric padding at stride 2
    assert model.drop_rate == 0.2 and model.blocks[-1][0].drop_path.drop_prob == pytest.approx(0.2 * 15 / 16)


def test_bav1_mobilenetv3_recipe_sets_the_reference_dropout() -> None:
    assert _recipe_model("imagenet_bav1_mobilenetv3").drop_rate == 0.2
