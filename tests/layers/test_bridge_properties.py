"""Property-based checks: random tap counts, widths, batch sizes and dtypes never break the gate or the blocks."""
from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridgeattn import BridgeAttention
from bridgeattn.models.resnet import BABasicBlock, BABottleneck

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    widths=st.lists(st.integers(1, 48), min_size=1, max_size=5),
    channels=st.integers(1, 64),
    batch=st.integers(1, 6),
    version=st.sampled_from(["v1", "v2"]),
    selection=st.sampled_from(["linear", "softmax"]),
    rd_ratio=st.sampled_from([1 / 16, 1 / 4, 1.0]),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
    training=st.booleans(),
    spatial=st.sampled_from([0, 1, 3]),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
)
def test_bridge_attention_gate_is_finite_and_in_range(
    widths, channels, batch, version, selection, rd_ratio, dtype, training, spatial, scale
) -> None:
    if version == "v1":
        selection = "linear"
    ba = BridgeAttention(widths, channels, rd_ratio=rd_ratio, version=version, selection=selection).to(dtype)
    ba.train(training)
    taps = [
        (torch.randn(batch, c, spatial, spatial) if spatial else torch.randn(batch, c)).to(dtype) * scale
        for c in widths
    ]
    gate = ba(taps)
    assert gate.shape == (batch, channels, 1, 1)
    assert gate.dtype == dtype
    assert torch.isfinite(gate).all()
    assert (gate >= 0).all() and (gate <= 1).all()


@SETTINGS
@given(
    bottleneck=st.booleans(),
    planes=st.sampled_from([4, 8, 16]),
    stride=st.sampled_from([1, 2]),
    batch=st.integers(1, 4),
    size=st.integers(2, 9),
    version=st.sampled_from(["v1", "v2"]),
    training=st.booleans(),
    channels_last=st.booleans(),
)
def test_ba_blocks_keep_shapes_and_finiteness(
    bottleneck, planes, stride, batch, size, version, training, channels_last
) -> None:
    block_cls = BABottleneck if bottleneck else BABasicBlock
    inplanes = planes * block_cls.expansion
    downsample = None
    if stride != 1:
        downsample = torch.nn.Sequential(
            torch.nn.Conv2d(inplanes, inplanes, 1, stride=stride, bias=False), torch.nn.BatchNorm2d(inplanes)
        )
    block = block_cls(inplanes, planes, stride, downsample, ba_args=dict(version=version, rd_min_channels=2))
    block.train(training)
    x = torch.randn(batch, inplanes, size, size)
    if channels_last:
        block = block.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    if training and batch == 1 and size // stride <= 1:
        return  # BatchNorm2d itself needs more than one value per channel in training
    out = block(x)
    expected = (size + stride - 1) // stride
    assert out.shape == (batch, inplanes, expected, expected)
    assert torch.isfinite(out).all() and (out >= 0).all()
