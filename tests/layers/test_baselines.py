"""The attention baselines against their papers' formulas, computed independently on small inputs."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import bridgeattn
from bridgeattn.layers import FCA_TOP_FREQUENCIES, CoordAttention, FcaModule, SrmModule


def _basis_2d(u: int, v: int, h: int, w: int) -> torch.Tensor:
    """Orthonormal 2-D DCT-II basis function written out element by element (FcaNet eq. 1)."""
    out = torch.empty(h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            cu = math.sqrt((1 if u == 0 else 2) / h)
            cv = math.sqrt((1 if v == 0 else 2) / w)
            out[i, j] = cu * cv * math.cos(math.pi * u * (i + 0.5) / h) * math.cos(math.pi * v * (j + 0.5) / w)
    return out


def _identity_(linear_or_conv: nn.Module) -> None:
    with torch.no_grad():
        weight = linear_or_conv.weight
        weight.zero_()
        weight.view(weight.shape[0], -1)[:, : weight.shape[0]].copy_(torch.eye(weight.shape[0]))


def test_fca_constant_input_by_hand() -> None:
    # A constant map has only a DC coefficient: sum(1 / sqrt(49)) over 49 pixels = 7 for the (0, 0) channel
    # (channel 0 of top16), 0 for the 15 others. Identity excitation: w = sigmoid(relu(Freq)).
    fca = FcaModule(16, rd_channels=16).eval()
    _identity_(fca.fc1)
    _identity_(fca.fc2)
    x = torch.ones(1, 16, 7, 7)
    assert torch.allclose(fca.squeeze(x), torch.tensor([7.0] + [0.0] * 15)[None], atol=1e-5)
    gate = torch.tensor([1 / (1 + math.exp(-7.0))] + [0.5] * 15)
    assert torch.allclose(fca(x), x * gate[None, :, None, None], atol=1e-6)


@pytest.mark.parametrize("size", [7, 14, 9, 4])
def test_fca_squeeze_is_the_dct_coefficient_of_each_channels_frequency(size: int) -> None:
    # Channel c gets the top16 frequency (u, v) on the 7x7 grid, scaled to (u * H // 7, v * W // 7). Feeding each
    # channel its own orthonormal basis function must give 1, and the basis of frequency (0, 0) must give 0 on all
    # channels with a non-zero frequency.
    fca = FcaModule(32)
    freqs = [(u * size // 7, v * size // 7) for u, v in FCA_TOP_FREQUENCIES[:16]]
    x = torch.stack([_basis_2d(*freqs[c // 2], size, size) for c in range(32)])[None].float()
    assert torch.allclose(fca.squeeze(x), torch.ones(1, 32), atol=1e-5)
    dc = _basis_2d(0, 0, size, size).float().expand(1, 32, size, size)
    expected = torch.tensor([1.0 if freqs[c // 2] == (0, 0) else 0.0 for c in range(32)])
    assert torch.allclose(fca.squeeze(dc), expected[None], atol=1e-5)


def test_fca_matches_reference_scaling_and_pools_to_a_fixed_dct_size() -> None:
    # At 56x56 the paper's filters use the 7x7 frequencies times 8.
    filt = FcaModule(16).filters(56, 56, torch.device("cpu"), torch.float64)
    for c, (u, v) in enumerate(FCA_TOP_FREQUENCIES[:16]):
        assert torch.allclose(filt[c], _basis_2d(8 * u, 8 * v, 56, 56), atol=1e-6)
    pooled = FcaModule(16, dct_size=7)
    x = torch.randn(2, 16, 14, 10)
    ref = FcaModule(16)
    assert torch.allclose(pooled.squeeze(x), ref.squeeze(nn.functional.adaptive_avg_pool2d(x, 7)), atol=1e-5)
    assert pooled(x).shape == x.shape
    assert FcaModule(16)(torch.randn(2, 16, 5, 3)).shape == (2, 16, 5, 3)  # any size, non-square


def test_coord_attention_by_hand() -> None:
    # Identity convs, no norm, identity activation: g_h = sigmoid(row means), g_w = sigmoid(column means).
    ca = CoordAttention(1, rd_channels=1, bias=False, norm_layer=None, act_layer=nn.Identity)
    for conv in (ca.conv1, ca.conv_h, ca.conv_w):
        _identity_(conv)
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None, None]
    s = torch.sigmoid
    rows, cols = torch.tensor([1.5, 3.5]), torch.tensor([2.0, 3.0])
    expected = torch.tensor([[1 * s(rows[0]) * s(cols[0]), 2 * s(rows[0]) * s(cols[1])],
                             [3 * s(rows[1]) * s(cols[0]), 4 * s(rows[1]) * s(cols[1])]])
    assert torch.allclose(ca(x)[0, 0], expected, atol=1e-6)


def test_coord_attention_has_the_papers_defaults() -> None:
    # Hidden width max(8, C // 32), biased 1x1 convs, h-swish.
    for channels, hidden in [(16, 8), (64, 8), (512, 16), (2048, 64)]:
        assert CoordAttention(channels).conv1.out_channels == hidden
    ca = CoordAttention(64)
    assert ca.conv1.bias is not None and isinstance(ca.act, nn.Hardswish)


def test_srm_by_hand() -> None:
    # Channel [[1, 3], [1, 3]]: mean 2, population std 1. cfc = (1, 2): z = 2 + 2 * sqrt(1 + eps).
    # Eval BatchNorm with its initial running stats (0, 1): z / sqrt(1 + eps).
    srm = SrmModule(1).eval()
    with torch.no_grad():
        srm.cfc.copy_(torch.tensor([[1.0, 2.0]]))
    x = torch.tensor([[1.0, 3.0], [1.0, 3.0]])[None, None]
    eps = 1e-5
    z = (2 + 2 * math.sqrt(1 + eps)) / math.sqrt(1 + eps)
    assert torch.allclose(srm(x), x / (1 + math.exp(-z)), atol=1e-6)


def test_srm_starts_at_half_and_takes_a_batch_of_one() -> None:
    srm = SrmModule(8)
    x = torch.randn(4, 8, 3, 3)
    assert torch.allclose(srm.eval()(x), 0.5 * x)
    y = srm.train()(torch.randn(1, 8, 1, 1))  # a 1x1 map and one sample: finite, no crash
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["fca_resnet20", "ca_resnet20", "srm_resnet20"])
def test_baseline_models_train(name: str) -> None:
    model = bridgeattn.create_model(name, in_chans=1, num_classes=4)
    attn = model.layer2[0].se
    assert attn is not None and type(attn).__module__.startswith("bridgeattn.layers")
    before = [p.detach().clone() for p in attn.parameters()]
    x, y = torch.randn(8, 1, 16, 16), torch.arange(8) % 4
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(12):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.7
    assert any(not torch.equal(b, p) for b, p in zip(before, attn.parameters()))


def test_baseline_models_are_registered() -> None:
    names = bridgeattn.model_families()["baseline-resnet"]
    for prefix in ("fca_", "ca_", "srm_"):
        assert {f"{prefix}resnet{d}" for d in (18, 34, 50, 101, 152, 20, 56)} <= set(names)


def test_resnet50_parameter_counts_match_the_papers() -> None:
    # FcaNet-50: 28.07 M (FcaNet paper, Table 4); SRM-ResNet-50: 25.62 M (SRM paper, Table 1).
    from bridgeattn.tools.profile import count_params

    with torch.device("meta"):
        fca, srm = bridgeattn.create_model("fca_resnet50"), bridgeattn.create_model("srm_resnet50")
    assert round(count_params(fca) / 1e6, 2) == 28.07
    assert round(count_params(srm) / 1e6, 2) == 25.62
