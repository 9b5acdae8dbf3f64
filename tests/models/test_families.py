"""BAv1/BAv2 beyond ResNet: MobileNetV3, EfficientNet-B0, ConvNeXt-T, Swin-T, RegNetY-4.0GF."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
from timm.models.convnext import ConvNeXtBlock
from timm.models.regnet import Bottleneck as RegNetBottleneck
from timm.models.swin_transformer import SwinTransformerBlock

import bridgeattn
from bridgeattn.layers.bridge import BridgeAttention
from bridgeattn.models.efficientnet import InvertedResidual
from bridgeattn.tools.profile import count_params

# name -> (timm twin, gate version, bridged blocks, extra kwargs for small images)
MODELS = {
    "bav1_mobilenetv3_large_100": ("mobilenetv3_large_100", "v1", 8, {}),
    "bav2_mobilenetv3_large_100": ("mobilenetv3_large_100", "v2", 8, {}),
    "bav1_mobilenetv3_small_100": ("mobilenetv3_small_100", "v1", 8, {}),
    "bav2_mobilenetv3_small_100": ("mobilenetv3_small_100", "v2", 8, {}),
    "bav1_efficientnet_b0": ("efficientnet_b0", "v1", 15, {}),
    "bav2_efficientnet_b0": ("efficientnet_b0", "v2", 15, {}),
    "bav2_convnext_tiny": ("convnext_tiny", "v2", 18, {}),
    "bav2_swin_tiny_patch4_window7_224": ("swin_tiny_patch4_window7_224", "v2", 12, {"img_size": 64}),
    "bav2_regnety_040": ("regnety_040", "v2", 22, {}),
}

# Parameters added over the timm twin at num_classes=1000 (negative: the gates are smaller than the SE they replace).
OVERHEAD = {
    "bav1_mobilenetv3_large_100": -4_200,
    "bav2_mobilenetv3_large_100": -5_528,
    "bav1_mobilenetv3_small_100": -6_816,
    "bav2_mobilenetv3_small_100": -7_552,
    "bav1_efficientnet_b0": 3_130_092,
    "bav2_efficientnet_b0": 3_127_161,
    "bav2_convnext_tiny": 1_416_132,
    "bav2_swin_tiny_patch4_window7_224": 944_088,
    "bav2_regnety_040": -1_044_832,
}

FEATURE_CHANNELS = {
    "mobilenetv3_large_100": [16, 24, 40, 112, 960],
    "mobilenetv3_small_100": [16, 16, 24, 48, 576],
    "efficientnet_b0": [16, 24, 40, 112, 320],
    "convnext_tiny": [96, 192, 384, 768],
    "swin_tiny_patch4_window7_224": [96, 192, 384, 768],
    "regnety_040": [32, 128, 192, 512, 1088],
}


def _gate_params(version: str, taps: list[int], channels: int, r: int) -> int:
    """Parameters of one bridge gate, from the formulas of docs/spec.md, sections 2-3 (not from BridgeAttention)."""
    h = channels // r
    params = sum(taps) * h + h * channels  # integration W_i and generation W_g
    if version == "v1":
        return params + len(taps) * 2 * h  # one BatchNorm1d(h) per tap
    return params + len(taps) + 1 + 2 * h  # selection a, b and one BatchNorm1d(h)


def _se_params(se: nn.Module) -> int:
    """Parameters of a timm SE module (two 1x1 convs or linears with bias), from its widths."""
    layers = [m for m in se.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 2
    c = layers[0].weight.shape[1]
    rd = layers[0].weight.shape[0]
    return 2 * c * rd + rd + c


def _expected_overhead(twin: nn.Module, version: str) -> int:
    """Overhead predicted from the twin's block widths and the documented placement."""
    total = 0
    for m in twin.modules():
        if type(m) is InvertedResidual and not isinstance(m.se, nn.Identity):
            mid = m.conv_dw.out_channels
            total += _gate_params(version, [mid, mid], mid, 6) - _se_params(m.se)
        elif type(m) is ConvNeXtBlock:
            dim = m.conv_dw.out_channels
            total += _gate_params(version, [dim, 4 * dim, dim], dim, 16)
        elif type(m) is SwinTransformerBlock:
            dim = m.norm1.normalized_shape[0]
            total += _gate_params(version, [dim, 4 * dim, dim], dim, 16)
        elif type(m) is RegNetBottleneck:
            mid, out = m.conv2.conv.out_channels, m.conv3.conv.out_channels
            total += _gate_params(version, [mid, mid, out], out, 16) - _se_params(m.se)
    return total


def _gates(model: nn.Module) -> list[BridgeAttention]:
    return [m for m in model.modules() if isinstance(m, BridgeAttention)]


@pytest.mark.parametrize("name", list(MODELS))
def test_parameter_overhead_matches_gate_shapes(name: str) -> None:
    twin_name, version, n_blocks, _ = MODELS[name]
    with torch.device("meta"):
        model = bridgeattn.create_model(name)
        twin = timm.create_model(twin_name)
    assert len(_gates(model)) == n_blocks
    assert all(g.version == version for g in _gates(model))
    overhead = count_params(model) - count_params(twin)
    assert overhead == _expected_overhead(twin, version)
    assert overhead == OVERHEAD[name]


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_backward_small_grayscale(name: str) -> None:
    _, _, n_blocks, extra = MODELS[name]
    model = bridgeattn.create_model(name, num_classes=10, in_chans=1, **extra)
    model.train()
    x = torch.randn(2, 1, 64, 64)
    out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    gates = _gates(model)
    assert len(gates) == n_blocks
    # Every gate steers the output: its generation weights receive a gradient.
    for gate in gates:
        assert gate.generation.weight.grad is not None
        assert gate.generation.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(MODELS))
def test_unit_gate_reproduces_timm_forward(name: str) -> None:
    """With every gate forced to 1 the bridged network computes exactly timm's (SE-free) network."""
    twin_name, _, _, extra = MODELS[name]
    # MobileNetV3-Small's first block applies its SE before the ReLU (the BAv1 reference); timm's order on request.
    order = {"ba_pre_act": False} if "mobilenetv3_small" in name else {}
    model = bridgeattn.create_model(name, num_classes=10, **extra, **order).eval()
    twin = timm.create_model(twin_name, num_classes=10, **extra).eval()
    for block in twin.modules():
        if hasattr(block, "se") and type(block).__name__ != "DepthwiseSeparableConv":
            block.se = nn.Identity()
    missing, unexpected = model.load_state_dict(twin.state_dict(), strict=False)
    assert not unexpected and all(".ba." in k for k in missing)
    for gate in _gates(model):
        gate.forward = lambda taps, c=gate.channels: torch.ones(taps[0].shape[0], c, 1, 1)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), twin(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["bav1_mobilenetv3_small_100", "bav2_efficientnet_b0", "bav2_convnext_tiny",
                                  "bav2_swin_tiny_patch4_window7_224", "bav2_regnety_040"])
def test_features_only_channels(name: str) -> None:
    twin_name, _, _, extra = MODELS[name]
    model = bridgeattn.create_model(name, features_only=True, **extra)
    assert model.feature_info.channels() == FEATURE_CHANNELS[twin_name]
    assert _gates(model)
    feats = model(torch.randn(1, 3, 64, 64))
    channel_dim = -1 if "swin" in name else 1  # timm's Swin features are NHWC
    assert [f.shape[channel_dim] for f in feats] == FEATURE_CHANNELS[twin_name]


@pytest.mark.parametrize("name", list(MODELS))
def test_registered_with_pretrained_cfg(name: str) -> None:
    assert name in timm.list_models("bav*") and name in bridgeattn.list_models()
    cfg = timm.models.get_pretrained_cfg(name)
    assert cfg.input_size == (3, 224, 224) and len(cfg.mean) == 3 and len(cfg.std) == 3
    if cfg.tag and cfg.tag.startswith("from_"):  # a warm-start tag: the plain twin's timm weights
        assert cfg.hf_hub_id == f"timm/{MODELS[name][0]}.{cfg.tag[len('from_'):]}"
    else:
        assert cfg.url == "" and not cfg.hf_hub_id
    model = bridgeattn.create_model(name, **MODELS[name][3])
    assert model.pretrained_cfg["architecture"] == name


def test_taps_and_placement_are_configurable() -> None:
    with torch.device("meta"):
        convnext = bridgeattn.create_model("bav2_convnext_tiny", ba_taps=("dw", "out"))
        swin = bridgeattn.create_model("bav2_swin_tiny_patch4_window7_224", ba_taps=["hidden", "out"])
        mnv3 = bridgeattn.create_model("bav2_mobilenetv3_small_100", ba_placement="output")
        regnet = bridgeattn.create_model("bav2_regnety_040", ba_placement="se", rd_ratio=1 / 8)
    assert _gates(convnext)[0].in_channels == (96, 96)
    assert _gates(swin)[0].in_channels == (384, 96)
    gate = _gates(mnv3)[0]  # first bridged block: 24 -> 96 (e4) -> 40, gate on the 40-wide projection
    assert gate.in_channels == (96, 96, 40) and gate.channels == 40
    gate = _gates(regnet)[0]
    assert gate.num_taps == 2 and gate.channels == gate.in_channels[1] and gate.hidden_channels == gate.channels // 8
    with pytest.raises(ValueError, match="ba_taps"):
        bridgeattn.create_model("bav2_convnext_tiny", ba_taps=("attn",))
    with pytest.raises(ValueError, match="ba_placement"):
        bridgeattn.create_model("bav2_efficientnet_b0", ba_placement="input")


def test_mobilenetv3_gate_is_hard_sigmoid_before_activation() -> None:
    model = bridgeattn.create_model("bav1_mobilenetv3_large_100", num_classes=10)
    block = next(m for m in model.modules() if hasattr(m, "ba"))
    assert block.pre_act and isinstance(block.ba.act, nn.ReLU)
    assert type(block.ba.gate).__name__ in ("HardSigmoid", "Hardsigmoid")
    effnet = bridgeattn.create_model("bav1_efficientnet_b0", num_classes=10)
    block = next(m for m in effnet.modules() if hasattr(m, "ba"))
    assert not block.pre_act and isinstance(block.ba.act, nn.SiLU)
    # A training batch of one sample works (the gate's BatchNorm1d falls back to running statistics).
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


@pytest.mark.parametrize("name", ["bav2_mobilenetv3_small_100", "bav1_efficientnet_b0", "bav2_regnety_040"])
def test_small_input_stem_doubles_the_feature_maps(name: str) -> None:
    plain = bridgeattn.create_model(name, features_only=True, in_chans=1)
    small = bridgeattn.create_model(name, features_only=True, in_chans=1, small_input=True)
    assert small.feature_info.reduction() == [r // 2 for r in plain.feature_info.reduction()] == [1, 2, 4, 8, 16]
    x = torch.randn(2, 1, 28, 28)  # Fashion-MNIST size
    assert [f.shape[-1] for f in small(x)] == [28, 14, 7, 4, 2]
    model = bridgeattn.create_model(name, num_classes=10, in_chans=1, small_input=True)
    assert model(x).shape == (2, 10)
    with pytest.raises(ValueError, match="small_input"):
        bridgeattn.create_model("bav2_convnext_tiny", small_input=True)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("bav2_mobilenetv3_small_100", {"ba_placement": "output"}),
        ("bav1_efficientnet_b0", {"ba_placement": "output", "drop_path_rate": 0.1}),
        ("bav2_regnety_040", {"ba_placement": "se"}),
        ("bav2_swin_tiny_patch4_window7_224", {"img_size": 32, "window_size": 4, "ba_taps": ("attn", "out")}),
    ],
)
def test_alternative_placements_train(name: str, kwargs: dict) -> None:
    model = bridgeattn.create_model(name, num_classes=10, **kwargs).train()
    model(torch.randn(2, 3, 32, 32)).logsumexp(1).sum().backward()
    gates = _gates(model)
    assert gates and all(g.generation.weight.grad.abs().sum() > 0 for g in gates)
