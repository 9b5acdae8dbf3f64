"""The BA-ResNet family as timm models: exact sizes, the block math of docs/spec.md, timm features, compile/trace."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

import bridgeattn
from bridgeattn import freeze_bn
from bridgeattn.models.resnet import BABasicBlock, BABottleneck

# docs/spec.md, section 4 (num_classes=1000).
PARAMS = {
    "bav1_resnet18": 11_820_552, "bav2_resnet18": 11_820_336,
    "bav1_resnet34": 22_034_392, "bav2_resnet34": 22_033_968,
    "bav1_resnet50": 28_706_376, "bav2_resnet50": 28_702_664,
    "bav1_resnet101": 50_490_312, "bav2_resnet101": 50_482_316,
    "bav1_resnet152": 68_433_480, "bav2_resnet152": 68_421_712,
    "plain_resnet50": 25_557_032, "se_resnet50": 28_088_024, "se_resnet101": 49_326_872,
}


def _count_on_meta(name: str, **kwargs) -> int:
    with torch.device("meta"):
        model = timm.create_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,expected", sorted(PARAMS.items()))
def test_parameter_counts_match_spec(name: str, expected: int) -> None:
    assert _count_on_meta(name) == expected


def test_resnext_gate_sits_on_the_grouped_width() -> None:
    plain = _count_on_meta("resnext50_32x4d")
    ba = _count_on_meta("bav2_resnext50_32x4d")
    # Per block: taps (w, w, 4p), h = 4p // 16, n = 3: h*(2w + 4p) + 4 + 2h + 4p*h, w = 2p for 32x4d.
    expected = sum(
        n * ((4 * p // 16) * (2 * 2 * p + 4 * p) + 4 + 2 * (4 * p // 16) + 4 * p * (4 * p // 16))
        for p, n in [(64, 3), (128, 4), (256, 6), (512, 3)]
    )
    assert ba - plain == expected == 3_774_368


def _bn2d(x: torch.Tensor, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _gate_v2(ba, taps: list[torch.Tensor]) -> torch.Tensor:
    s = [t.mean((2, 3)) for t in taps]
    z = [si @ fc.weight.T for si, fc in zip(s, ba.integration)]
    a, b = ba.selection.weight[0], ba.selection.bias[0]
    u = sum(a[i] * z[i] for i in range(len(z))) + b
    u = F.batch_norm(u, ba.norm.running_mean, ba.norm.running_var, ba.norm.weight, ba.norm.bias, False, 0.0, 1e-5)
    return torch.sigmoid(torch.relu(u) @ ba.generation.weight.T)[:, :, None, None]


def _randomise_bn(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.normal_(1, 0.1)
            m.bias.data.normal_(0, 0.1)


def test_bottleneck_block_equals_spec_formula() -> None:
    model = bridgeattn.create_model("bav2_resnet50").double().eval()
    _randomise_bn(model)
    block = model.layer2[0]
    assert isinstance(block, BABottleneck)
    x = torch.randn(2, 256, 16, 16, dtype=torch.float64)
    y1 = torch.relu(_bn2d(F.conv2d(x, block.conv1.weight), block.bn1))
    y2 = torch.relu(_bn2d(F.conv2d(y1, block.conv2.weight, stride=2, padding=1), block.bn2))
    y3 = _bn2d(F.conv2d(y2, block.conv3.weight), block.bn3)
    shortcut = _bn2d(F.conv2d(x, block.downsample[0].weight, stride=2), block.downsample[1])
    expected = torch.relu(y3 * _gate_v2(block.ba, [y1, y2, y3]) + shortcut)
    torch.testing.assert_close(block(x), expected, atol=1e-6, rtol=0)


def test_basic_block_equals_spec_formula() -> None:
    model = bridgeattn.create_model("bav2_resnet18").double().eval()
    _randomise_bn(model)
    block = model.layer1[1]
    assert isinstance(block, BABasicBlock)
    x = torch.randn(2, 64, 8, 8, dtype=torch.float64)
    y1 = torch.relu(_bn2d(F.conv2d(x, block.conv1.weight, padding=1), block.bn1))
    y2 = _bn2d(F.conv2d(y1, block.conv2.weight, padding=1), block.bn2)
    expected = torch.relu(y2 * _gate_v2(block.ba, [y1, y2]) + x)
    torch.testing.assert_close(block(x), expected, atol=1e-6, rtol=0)


def test_initialisation_follows_the_references() -> None:
    model = bridgeattn.create_model("bav2_resnet18")
    # No zero-init of the last BN; conv weights kaiming fan_out: std = sqrt(2 / (k*k*out)).
    assert torch.all(model.layer1[0].bn2.weight == 1)
    w = model.layer4[0].conv2.weight
    assert abs(w.std().item() - (2 / (9 * 512)) ** 0.5) < 2e-3


@pytest.mark.parametrize("name,size,chans", [("bav2_resnet18", 224, 3), ("bav1_resnet50", 64, 3),
                                             ("bav2_resnet20", 28, 1), ("bav1_resnet56", 32, 3)])
def test_output_shapes(name: str, size: int, chans: int) -> None:
    model = bridgeattn.create_model(name, num_classes=10, in_chans=chans).eval()
    with torch.no_grad():
        assert model(torch.randn(2, chans, size, size)).shape == (2, 10)


def test_small_input_option_keeps_resolution() -> None:
    model = bridgeattn.create_model("bav2_resnet18", small_input=True, num_classes=10).eval()
    feats = model.forward_features(torch.randn(1, 3, 32, 32))
    assert feats.shape == (1, 512, 4, 4)  # stride 8 instead of 32
    assert model.maxpool.__class__.__name__ == "Identity"


def test_gradients_reach_every_bridge_parameter() -> None:
    model = bridgeattn.create_model("bav2_resnet20", num_classes=10)
    model(torch.randn(4, 3, 16, 16)).logsumexp(1).sum().backward()
    names = [n for n, _ in model.named_parameters() if ".ba." in n]
    assert len(names) == 9 * 7  # 9 blocks x (2 integration, selection w+b, norm w+b, generation)
    for name, p in model.named_parameters():
        if ".ba." in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_small_family_gate_has_a_sane_minimum_width() -> None:
    model = bridgeattn.create_model("bav2_resnet20")
    assert model.layer1[0].ba.hidden_channels == 8  # 16 // 16 would be 1
    assert bridgeattn.create_model("bav2_resnet18").layer1[0].ba.hidden_channels == 4  # paper's 64 // 16


def test_timm_integration() -> None:
    model = timm.create_model("bav2_resnet50", features_only=True, out_indices=(1, 2, 3, 4))
    assert model.feature_info.channels() == [256, 512, 1024, 2048]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    feats = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [256, 512, 1024, 2048]
    small = timm.create_model("bav2_resnet20", features_only=True)
    assert small.feature_info.channels() == [16, 16, 32, 64]
    assert small.feature_info.reduction() == [1, 1, 2, 4]

    net = timm.create_model("bav2_resnet20", num_classes=7, in_chans=1).eval()
    x = torch.randn(2, 1, 20, 20)
    feats = net.forward_features(x)
    torch.testing.assert_close(net.forward_head(feats), net(x))
    assert net.forward_head(feats, pre_logits=True).shape == (2, 64)
    net.reset_classifier(3)
    assert net(x).shape == (2, 3)
    assert net.pretrained_cfg["input_size"] == (3, 32, 32)
    assert "bav2_resnet50" in bridgeattn.list_models("bav2_*")
    assert "resnet50" in bridgeattn.list_models()


def test_gradient_checkpointing_and_drop_path_train() -> None:
    model = bridgeattn.create_model("bav2_resnet20", drop_path_rate=0.2)
    model.set_grad_checkpointing(True)
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    assert model.layer3[2].drop_path is not None
    assert model.layer1[0].ba.generation.weight.grad is not None


def test_eval_batch_of_one_and_train_batch_of_one() -> None:
    model = bridgeattn.create_model("bav2_resnet20")
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 16, 16)).shape == (1, 10)  # small family: 10 classes by default
    model.train()(torch.randn(1, 3, 16, 16)).sum().backward()  # the gate's BN1d copes with one sample


@pytest.mark.compile
def test_jit_trace_and_compile_match_eager(tmp_path, monkeypatch) -> None:
    # a cache of its own: kernels cached by a run on another CPU kind (or under the AVX2 emulation) are not reused
    # (docs/speed.md, "torch.compile and the inductor cache")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    model = bridgeattn.create_model("bav2_resnet20", num_classes=10).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        eager = model(x)
        traced = torch.jit.trace(model, x)
        torch.testing.assert_close(traced(x), eager, atol=1e-5, rtol=1e-5)
        compiled = torch.compile(model)
        torch.testing.assert_close(compiled(x), eager, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "x,match",
    [
        (torch.randn(1, 1, 64, 64), "got 1 channels"),
        (torch.randn(1, 3, 16, 16), "too small"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "dtype"),
        (torch.randn(3, 64, 64), "shape"),
    ],
)
def test_bad_input_is_a_clear_value_error(x: torch.Tensor, match: str) -> None:
    model = bridgeattn.create_model("bav2_resnet50").eval()
    with pytest.raises(ValueError, match=match) as info:
        model(x)
    assert "(B, 3, H, W)" in str(info.value)


def test_unknown_model_and_stray_arguments() -> None:
    with pytest.raises(bridgeattn.UserError, match="unknown model"):
        bridgeattn.create_model("bav3_resnet50")
    with pytest.raises(ValueError, match="no bridge gate"):
        bridgeattn.create_model("se_resnet18", rd_ratio=0.25)
    model = bridgeattn.create_model("bav2_resnet18", rd_ratio=1 / 8, selection="softmax")
    assert model.layer1[0].ba.hidden_channels == 8


def test_freeze_bn_covers_the_gate() -> None:
    model = bridgeattn.create_model("bav2_resnet20").eval()
    _randomise_bn(model)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        before = model(x)
    frozen = freeze_bn(model).train()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in frozen.modules())
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), before)
        torch.testing.assert_close(frozen(x[:1]), before[:1])  # batch of 1 in train mode: same per-sample output
    names = {n for n, _ in frozen.named_parameters()}
    assert not any(".ba.norm." in n or ".bn" in n for n in names)
