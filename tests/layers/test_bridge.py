"""BridgeAttention against an independent functional computation of the formulas in docs/spec.md."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bridgeattn import BridgeAttention
from bridgeattn.layers.bridge import GateBatchNorm1d, bridge_hidden_channels


def _bn(u: torch.Tensor, bn: torch.nn.BatchNorm1d, training: bool) -> torch.Tensor:
    if training:
        mean, var = u.mean(0), u.var(0, unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    return (u - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias


def reference_v2(ba: BridgeAttention, taps: list[torch.Tensor], training: bool) -> torch.Tensor:
    """docs/spec.md, section 2, written tap by tap: z_i = W_i s_i, u = sum a_i z_i + b, w = sigmoid(W_g relu(BN(u)))."""
    z = [s @ fc.weight.T for s, fc in zip(taps, ba.integration)]
    a, b = ba.selection.weight[0], ba.selection.bias[0]
    u = sum(a[i] * z[i] for i in range(len(z))) + b
    return torch.sigmoid(torch.relu(_bn(u, ba.norm, training)) @ ba.generation.weight.T)


def reference_v1(ba: BridgeAttention, taps: list[torch.Tensor], training: bool) -> torch.Tensor:
    """docs/spec.md, section 3: z_i = BN_i(W_i s_i), u = sum z_i, w = sigmoid(W_g relu(u))."""
    u = sum(_bn(s @ fc.weight.T, bn, training) for s, fc, bn in zip(taps, ba.integration, ba.integration_norm))
    return torch.sigmoid(torch.relu(u) @ ba.generation.weight.T)


def _randomise(module: torch.nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters, so eval mode is really tested."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_(1, 0.2)
            m.bias.data.normal_(0, 0.2)


@pytest.mark.parametrize("version,ref", [("v2", reference_v2), ("v1", reference_v1)])
@pytest.mark.parametrize("training", [True, False])
def test_matches_spec_formula(version: str, ref, training: bool) -> None:
    widths, channels = [16, 24, 64], 64
    ba = BridgeAttention(widths, channels, version=version).double()
    _randomise(ba)
    ba.train(training)
    taps = [torch.randn(5, c, dtype=torch.float64) for c in widths]
    expected = ref(ba, taps, training)
    got = ba(taps)
    assert got.shape == (5, channels, 1, 1)
    torch.testing.assert_close(got[:, :, 0, 0], expected, atol=1e-6, rtol=0)


def test_accepts_4d_taps_and_pools_spatial_ones() -> None:
    ba = BridgeAttention([8, 8], 8, rd_channels=4).eval()
    maps = [torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5)]
    pooled = [m.mean((2, 3)) for m in maps]
    torch.testing.assert_close(ba(maps), ba([p[:, :, None, None] for p in pooled]))
    torch.testing.assert_close(ba(maps), ba(pooled))


def test_hidden_width_and_minimum() -> None:
    assert bridge_hidden_channels(256) == 16
    assert bridge_hidden_channels(16) == 1
    assert bridge_hidden_channels(16, rd_min_channels=8) == 8
    assert bridge_hidden_channels(72, rd_ratio=1 / 6, rd_divisor=8) == 16
    assert BridgeAttention([32, 32], 32, rd_channels=5).hidden_channels == 5


def test_gradients_reach_every_parameter() -> None:
    for version, selection in [("v2", "linear"), ("v2", "softmax"), ("v1", "linear")]:
        ba = BridgeAttention([8, 16, 32], 32, rd_channels=4, version=version, selection=selection)
        taps = [torch.randn(4, c) for c in (8, 16, 32)]
        ba(taps).sum().backward()
        for name, p in ba.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (version, selection, name)


def test_softmax_selection_is_input_adaptive() -> None:
    ba = BridgeAttention([8, 8, 8], 8, rd_channels=4, selection="softmax").eval()
    z = torch.randn(3, 4, 3)
    p = ba.selection.probabilities(z)
    torch.testing.assert_close(p.sum(-1), torch.ones(3))
    assert not torch.allclose(p[0], p[1])  # per-sample weights, unlike the paper's shared operator


def test_training_batch_of_one_uses_running_statistics() -> None:
    bn = GateBatchNorm1d(4)
    bn.running_mean.fill_(1.0)
    bn.running_var.fill_(4.0)
    x = torch.full((1, 4), 3.0)
    out = bn.train()(x)
    torch.testing.assert_close(out, torch.full((1, 4), 1.0), atol=1e-5, rtol=0)
    assert bn.running_mean[0] == 1.0  # statistics untouched by the single sample
    ba = BridgeAttention([8, 8], 8, rd_channels=4).train()
    assert ba([torch.randn(1, 8), torch.randn(1, 8)]).shape == (1, 8, 1, 1)


def test_fused_equals_unfused() -> None:
    for version in ("v1", "v2"):
        ba = BridgeAttention([8, 16, 32], 32, rd_channels=4, version=version).double()
        _randomise(ba)
        ba.eval()
        taps = [torch.randn(6, c, dtype=torch.float64) for c in (8, 16, 32)]
        torch.testing.assert_close(ba.fuse()(taps), ba(taps), atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(version="v3"), "version"),
        (dict(selection="max"), "selection"),
        (dict(version="v1", selection="softmax"), "v2"),
    ],
)
def test_bad_arguments_are_clear(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BridgeAttention([8, 8], 8, **kwargs)


def test_wrong_taps_are_clear() -> None:
    ba = BridgeAttention([8, 16], 16)
    with pytest.raises(ValueError, match="expects 2 taps"):
        ba([torch.randn(2, 8)])
    with pytest.raises(ValueError, match="tap 1 has 8 channels, expected 16"):
        ba([torch.randn(2, 8), torch.randn(2, 8)])


def test_gate_range_and_hard_sigmoid() -> None:
    ba = BridgeAttention([8, 8], 8, rd_channels=4, gate_layer="hard_sigmoid").eval()
    w = ba([torch.randn(3, 8) * 10, torch.randn(3, 8) * 10])
    assert (w >= 0).all() and (w <= 1).all()
    assert torch.allclose(F.hardsigmoid(torch.tensor([0.0])), torch.tensor([0.5]))
