"""Autograd through the lean bridge merge: double backward and torch.func equal the plain formula's."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.func import functional_call, grad, vmap

import bridgeattn
import bridgeattn.models.resnet as resnet_module
from bridgeattn.models.resnet import BABasicBlock, BABottleneck


def _plain_merge(y, shortcut, gate_fn, pooled=None):  # the formula the lean path must reproduce
    return torch.addcmul(shortcut, y, gate_fn(y.mean((2, 3)) if pooled is None else pooled))


def _naive_bottleneck(block: BABottleneck, x: torch.Tensor) -> torch.Tensor:
    """The BAv2 bottleneck written out: three pooled taps, the gate, rescale, residual add."""
    y1 = block.act1(block.bn1(block.conv1(x)))
    y2 = block.act2(block.bn2(block.conv2(y1)))
    y3 = block.bn3(block.conv3(y2))
    gate = block.ba([y1.mean((2, 3)), y2.mean((2, 3)), y3.mean((2, 3))])
    shortcut = x if block.downsample is None else block.downsample(x)
    return block.act3(y3 * gate + shortcut)


def _naive_basic(block: BABasicBlock, x: torch.Tensor) -> torch.Tensor:
    y1 = block.act1(block.bn1(block.conv1(x)))
    y2 = block.bn2(block.conv2(y1))
    gate = block.ba([y1.mean((2, 3)), y2.mean((2, 3))])
    shortcut = x if block.downsample is None else block.downsample(x)
    return block.act2(y2 * gate + shortcut)


def _bottleneck() -> BABottleneck:
    return BABottleneck(16, 4, ba_args={"version": "v2", "rd_channels": 4}).double().train()


def _gradient_penalty(forward, block: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """d/dparams of ||d loss / d x||^2: a double backward through the block."""
    x = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(forward(block, x).square().sum(), x, create_graph=True)
    return list(torch.autograd.grad(gx.square().sum(), list(block.parameters())))


def test_double_backward_equals_naive_formula() -> None:
    block, x = _bottleneck(), torch.randn(3, 16, 6, 6, dtype=torch.float64)
    lean = _gradient_penalty(lambda b, t: b(t), block, x)
    naive = _gradient_penalty(_naive_bottleneck, block, x)
    for a, b in zip(lean, naive):
        torch.testing.assert_close(a, b)


def test_func_grad_equals_naive_formula() -> None:
    block, x = _bottleneck(), torch.randn(3, 16, 6, 6, dtype=torch.float64)
    params = {k: v.detach() for k, v in block.named_parameters()}

    def loss(p: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], naive: bool) -> torch.Tensor:
        state = {**p, **buffers}  # BatchNorm updates its buffers in training mode: pass them in, not captured
        out = _naive_bottleneck(_Bound(block, state), x) if naive else functional_call(block, state, (x,))
        return out.square().sum()

    def fresh_buffers() -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in block.named_buffers()}

    lean = grad(loss)(params, fresh_buffers(), False)
    naive = grad(loss)(params, fresh_buffers(), True)
    for key in params:
        torch.testing.assert_close(lean[key], naive[key])


class _Bound:
    """``block`` with its parameters and buffers replaced by ``state`` (the naive formula under torch.func)."""

    def __init__(self, block: nn.Module, state: dict[str, torch.Tensor]) -> None:
        self._block, self._state = block, state

    def __getattr__(self, name: str):
        sub = getattr(self._block, name)
        if isinstance(sub, nn.Module):
            inner = {k[len(name) + 1 :]: v for k, v in self._state.items() if k.startswith(f"{name}.")}
            return lambda *args: functional_call(sub, inner, args)
        return sub


def test_per_sample_gradients_with_vmap() -> None:
    """vmap(grad) (per-sample gradients, as Opacus-style training uses) equals a loop of single-sample grads."""
    block = BABasicBlock(8, 8, ba_args={"version": "v2", "rd_channels": 4}).double().eval()
    params = {k: v.detach() for k, v in block.named_parameters()}
    xs = torch.randn(4, 8, 5, 5, dtype=torch.float64)

    def loss(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(block, p, (x[None],)).square().sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0))(params, xs)
    for i in range(xs.shape[0]):
        single = grad(lambda p, x=xs[i : i + 1]: _naive_basic(_Bound(block, p), x).square().sum())(params)
        for key in params:
            torch.testing.assert_close(per_sample[key][i], single[key])


@pytest.mark.parametrize("name", ["bav2_resnet20", "bav1_resnet20"])
def test_model_double_backward_equals_plain_merge(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole BA model: gradient-penalty gradients with the lean merge equal those with the plain formula."""
    torch.manual_seed(0)
    model = bridgeattn.create_model(name, num_classes=3).double().train()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    lean = _gradient_penalty(lambda m, t: m(t), model, x)
    monkeypatch.setattr(resnet_module, "gated_residual", _plain_merge)
    plain = _gradient_penalty(lambda m, t: m(t), model, x)
    for a, b in zip(lean, plain):
        torch.testing.assert_close(a, b)


def test_forward_mode_equals_naive_formula() -> None:
    """Forward-mode AD through the lean merge (its own jvp: the parameters require grad, so the lean functions
    run) equals torch.func.jvp of the naive block."""
    import torch.autograd.forward_ad as fwad
    from torch.func import jvp

    block = BABasicBlock(8, 8, ba_args={"version": "v2", "rd_channels": 4}).double().eval()
    x, tangent = torch.randn(2, 8, 5, 5, dtype=torch.float64), torch.randn(2, 8, 5, 5, dtype=torch.float64)
    with fwad.dual_level():
        out = block(fwad.make_dual(x, tangent))
        value, lean = fwad.unpack_dual(out)
    expected, naive = jvp(lambda t: _naive_basic(block, t), (x,), (tangent,))
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(lean, naive)
