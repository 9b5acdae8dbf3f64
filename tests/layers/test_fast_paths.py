"""The fast BA blocks against a naive formula, gate fusion, and the benchmark / profile commands."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn as nn

import bridgeattn
from bridgeattn.cli.main import main
from bridgeattn.layers.bridge import BridgeAttention, FusedBridgeAttention
from bridgeattn.layers.ops import gated_residual
from bridgeattn.models.resnet import BABasicBlock, BABottleneck
from bridgeattn.tools.profile import activation_memory, count_params, profile_model


def _bn1d(u: torch.Tensor, bn: nn.BatchNorm1d, training: bool) -> torch.Tensor:
    mean, var = (u.mean(0), u.var(0, unbiased=False)) if training else (bn.running_mean, bn.running_var)
    return (u - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias


def naive_gate(ba: BridgeAttention, maps: list[torch.Tensor], training: bool) -> torch.Tensor:
    """docs/spec.md, sections 2 and 3 tap by tap: separate pools, one Linear per tap, then the gate."""
    s = [m.mean((2, 3)) for m in maps]
    z = [si @ fc.weight.T for si, fc in zip(s, ba.integration)]
    if ba.version == "v2":
        a, b = ba.selection.weight[0], ba.selection.bias[0]
        h = torch.relu(_bn1d(sum(a[i] * z[i] for i in range(len(z))) + b, ba.norm, training))
    else:
        h = torch.relu(sum(_bn1d(zi, bn, training) for zi, bn in zip(z, ba.integration_norm)))
    return torch.sigmoid(h @ ba.generation.weight.T)[:, :, None, None]


def naive_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The block as the reference writes it: taps, gate, a separate multiply, then the residual add."""
    shortcut = x if block.downsample is None else block.downsample(x)
    y1 = block.act1(block.bn1(block.conv1(x)))
    if isinstance(block, BABottleneck):
        y2 = block.act2(block.bn2(block.conv2(y1)))
        taps, last, act = [y1, y2], block.bn3(block.conv3(y2)), block.act3
    else:
        taps, last, act = [y1], block.bn2(block.conv2(y1)), block.act2
    gated = last * naive_gate(block.ba, [*taps, last], block.training)
    return act(gated + shortcut)


def _downsample(cin: int, cout: int, stride: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


BLOCKS = {
    "basic": lambda v: BABasicBlock(16, 16, ba_args=dict(version=v, rd_channels=4)),
    "basic-stride": lambda v: BABasicBlock(8, 16, stride=2, downsample=_downsample(8, 16, 2), ba_args=dict(version=v)),
    "bottleneck": lambda v: BABottleneck(64, 16, ba_args=dict(version=v)),
    "grouped-bottleneck": lambda v: BABottleneck(
        32, 16, stride=2, cardinality=4, base_width=16, downsample=_downsample(32, 64, 2), ba_args=dict(version=v)
    ),
}


def _randomise_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_(1, 0.2)
            m.bias.data.normal_(0, 0.2)


@pytest.mark.parametrize("kind", list(BLOCKS))
@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_block_equals_naive_formula(kind: str, version: str, training: bool, channels_last: bool) -> None:
    block = BLOCKS[kind](version).double()
    _randomise_bn(block)
    fast, naive = copy.deepcopy(block).train(training), copy.deepcopy(block).train(training)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, block.conv1.in_channels, 8, 8, dtype=torch.float64).to(memory_format=fmt).requires_grad_()
    out_fast, out_naive = fast(x), naive_block(naive, x)
    torch.testing.assert_close(out_fast, out_naive, atol=1e-5, rtol=0)
    grad = torch.randn_like(out_fast)
    g_fast = torch.autograd.grad(out_fast, [x, *fast.parameters()], grad)
    g_naive = torch.autograd.grad(out_naive, [x, *naive.parameters()], grad)
    for name, a, b in zip(["x", *dict(fast.named_parameters())], g_fast, g_naive):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=lambda m, name=name: f"{name}: {m}")
    if training:  # the trunk's running statistics move the same way (the naive gate normalises by hand)
        naive_buffers = dict(naive.named_buffers())
        for name, a in fast.named_buffers():
            if not name.startswith("ba."):
                torch.testing.assert_close(a.double(), naive_buffers[name].double(), atol=1e-5, rtol=0)


def test_inference_paths_equal_naive_formula() -> None:
    """no_grad (in-place merge, last tap derived from the second) and frozen BatchNorm (derived tap with autograd)."""
    block = BLOCKS["grouped-bottleneck"]("v2").double().eval()
    _randomise_bn(block)
    x = torch.randn(2, 32, 8, 8, dtype=torch.float64)
    expected = naive_block(block, x)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=0)
    with torch.inference_mode():
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=0)
    frozen = bridgeattn.freeze_bn(copy.deepcopy(block)).double().train()  # fixed statistics, training mode
    xg = x.clone().requires_grad_()
    out = frozen(xg)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    (g,) = torch.autograd.grad(out.sum(), xg)
    xr = x.clone().requires_grad_()
    (g_ref,) = torch.autograd.grad(naive_block(block, xr).sum(), xr)
    torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=0)
    traced = torch.jit.trace(block, x, check_trace=False)  # exporters see the out-of-place formula
    torch.testing.assert_close(traced(x), expected, atol=1e-5, rtol=0)


def test_gated_residual_drop_path_and_double_use() -> None:
    """The linked backward also holds when the shortcut is the gated map's own input."""
    y = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)

    def gate_fn(s: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(s @ w)[:, :, None, None]

    out = gated_residual(y * 2, y, gate_fn)
    ref = y * 2 * gate_fn((y * 2).mean((2, 3))) + y
    torch.testing.assert_close(out, ref)
    g = torch.autograd.grad((out**2).sum(), [y, w])
    g_ref = torch.autograd.grad((ref**2).sum(), [y, w])
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b)


def _trained_statistics(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """A few training-mode forwards so every BatchNorm has non-trivial running statistics."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(shape) * 2 + 0.5)
    return model.eval()


@pytest.mark.parametrize("name", ["bav1_resnet20", "bav2_resnet20", "bav1_resnet50", "bav2_resnext50_32x4d"])
def test_fused_equals_unfused(name: str) -> None:
    small = name.endswith("20")
    shape = (4, 3, 16, 16) if small else (2, 3, 32, 32)
    model = _trained_statistics(bridgeattn.create_model(name, num_classes=10), shape)
    x = torch.randn(shape)
    with torch.no_grad():
        expected = model(x)
        fused = bridgeattn.fuse(model)
        got = fused(x)
    assert fused is model
    assert not any(isinstance(m, BridgeAttention) for m in model.modules())
    assert any(isinstance(m, FusedBridgeAttention) for m in model.modules())
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_timm_reparameterize_model_fuses_the_gates() -> None:
    from timm.utils import reparameterize_model

    model = _trained_statistics(bridgeattn.create_model("bav1_resnet20"), (4, 3, 16, 16))
    x = torch.randn(2, 3, 16, 16)
    fused = reparameterize_model(model)  # timm's walk: a copy with each gate's fuse() in its place
    assert not any(isinstance(m, BridgeAttention) for m in fused.modules())
    assert sum(isinstance(m, FusedBridgeAttention) for m in fused.modules()) == 9  # 3 stages x 3 blocks
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="model.eval"):
        reparameterize_model(bridgeattn.create_model("bav1_resnet20"))


def test_fused_state_dict_round_trip() -> None:
    model = bridgeattn.fuse(_trained_statistics(bridgeattn.create_model("bav2_resnet20"), (4, 3, 16, 16)))
    state = model.state_dict()
    assert state["layer1.0.ba.integration.weight"].shape == (8, 32)  # taps 16 + 16 -> hidden 8
    again = bridgeattn.fuse(bridgeattn.create_model("bav2_resnet20").eval())
    again.load_state_dict(state)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
    with pytest.raises(RuntimeError, match="integration.bias"):
        bridgeattn.create_model("bav2_resnet20").load_state_dict(state)


def test_fuse_refuses_softmax_selection_and_training_mode() -> None:
    model = bridgeattn.create_model("bav2_resnet20", selection="softmax").eval()
    with pytest.raises(bridgeattn.UserError, match="softmax selection depends on the input"):
        bridgeattn.fuse(model)
    assert not any(isinstance(m, FusedBridgeAttention) for m in model.modules())  # left unchanged
    with pytest.raises(bridgeattn.UserError, match="model.eval"):
        bridgeattn.fuse(bridgeattn.create_model("bav2_resnet20"))
    plain = bridgeattn.create_model("plain_resnet20").eval()
    assert bridgeattn.fuse(plain) is plain  # nothing to fold


def test_benchmark_command_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    args = ["benchmark", "--models", "bav2_resnet20,plain_resnet20", "--batch-size", "2", "--img-size", "16"]
    rc = main([*args, "--repeats", "2", "--warmup", "1", "--train", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert [r["model"] for r in report["results"]] == ["bav2_resnet20", "plain_resnet20"]
    assert report["settings"]["train"] is True and report["settings"]["batch_size"] == 2
    first, second = report["results"]
    assert first["time_ratio"] == 1.0 and len(first["round_s"]) == 2
    assert second["time_ratio"] == pytest.approx(second["step_ms"] / first["step_ms"])
    assert first["img_per_s"] > 0 and first["params"] > second["params"]
    assert "bav2_resnet20" in capsys.readouterr().out
    rc = main([*args, "--repeats", "1", "--warmup", "0", "--fuse", "--channels-last", "--json", str(out)])
    assert rc == 0 and json.loads(out.read_text())["settings"]["fuse"] is True
    assert main([*args, "--fuse", "--train"]) == 2  # user error, one line


def test_profile_command_writes_json(tmp_path) -> None:
    out = tmp_path / "profile.json"
    assert main(["profile", "bav2_resnet20", "--img-size", "16", "--batch-size", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    model = bridgeattn.create_model("bav2_resnet20")
    assert report["params"] == count_params(model) and report["input_size"] == [3, 16, 16]
    names = [s["name"] for s in report["stages"]]
    assert names[:2] == ["conv1", "bn1"] and "layer3" in names and names[-1] == "fc"
    assert sum(s["params"] for s in report["stages"]) == report["params"]
    assert sum(s["macs"] for s in report["stages"]) == pytest.approx(report["macs"], rel=0.01)
    assert report["activation_bytes"] == sum(s["activation_bytes"] for s in report["stages"]) > 0
    # Measured on the meta device; the same count on real tensors.
    total, _ = activation_memory(model, (3, 16, 16), batch_size=2)
    assert total == report["activation_bytes"]
    # Activation memory grows with the batch: a training step of 4 keeps about twice as much.
    four = profile_model("bav2_resnet20", img_size=16, batch_size=4)["activation_bytes"]
    assert 1.8 < four / total < 2.1
    assert main(["profile", "no_such_model"]) == 2


def test_v2_integration_runs_each_linear_once() -> None:
    """BAv2's integration runs its per-tap Linears, each once (hooks and quantization see the stored layers)."""
    ba = BridgeAttention([8, 16, 32], 32, rd_channels=4).eval()
    calls = []
    handles = [fc.register_forward_hook(lambda *a: calls.append(1)) for fc in ba.integration]
    ba([torch.randn(2, c) for c in (8, 16, 32)])
    for h in handles:
        h.remove()
    assert calls == [1, 1, 1]
