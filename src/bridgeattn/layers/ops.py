"""Feature-map operations of the bridge blocks, written for few passes over memory.

A bridge block adds little arithmetic to a residual block (three pooled taps, a tiny MLP), so its
real cost is memory traffic: every pass over a ``(B, C, H, W)`` feature map costs about as much as
the MLP's whole arithmetic. PyTorch's generic autograd formulas spend more passes than needed:

- ``mean``'s backward materialises ``grad / (H * W)`` as a full map before it is added to the tap's
  other gradient; ``sum``'s backward is a broadcast view, so :func:`spatial_mean` pools with ``sum``.
- ``addcmul``'s backward copies the feature map (``tensor1 * value``), multiplies it by the gradient
  and reduces; the gradient of the gated map is then added to the pooling gradient in one more pass.
  :func:`gated_residual` computes ``shortcut + y * gate`` with a backward that forms the gate's
  gradient in one product-and-reduce and the map's whole gradient, gate and pooling terms together,
  in a single ``addcmul``.

The math is unchanged: forward values equal ``shortcut + y * gate_fn(mean(y))`` and gradients equal
autograd's (up to float rounding). The backward is made of differentiable ops, so double backward
(``create_graph=True``, gradient penalties) and ``torch.func.grad``/``vmap`` (per-sample gradients) give
the plain formula's results, and so does forward-mode AD (``torch.func.jvp``, ``jacfwd``). Under
``torch.compile``, ``torch.export``, TorchScript and jit/fx tracing the plain formula is used,
which compilers fuse by themselves.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["gated_residual", "is_fx_proxy", "spatial_mean"]


def spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """Global average pool ``(B, C, H, W) -> (B, C)``; its backward adds a broadcast view, not a new map.

    Equal to ``x.mean((2, 3))`` bit for bit in float32/64 (PyTorch's mean is this sum and division), which fx graphs
    record instead: quantization would observe the shape arithmetic as a tensor.
    """
    if not torch.jit.is_scripting() and is_fx_proxy(x):
        return x.mean((2, 3))
    return x.sum((2, 3)) / (x.shape[-2] * x.shape[-1])


@torch.jit.unused
def is_fx_proxy(x):  # unannotated: TorchScript compiles the stub of an unused function as (Tensor) -> bool
    """Whether ``x`` is a symbolic value of an fx trace (no shapes or flags to branch on)."""
    return isinstance(x, torch.fx.Proxy)


class _Link:
    """Carries the output gradient from the merge's backward to the pooling's backward.

    Autograd runs the merge's backward first (the gate depends on the pooled tap), then the gate's,
    then the pooling's; at that point both gradient terms of the map are known and are summed in
    one pass instead of being materialised separately and added.
    """

    __slots__ = ("grad_out", "gate")

    def __init__(self) -> None:
        self.grad_out: torch.Tensor | None = None
        self.gate: torch.Tensor | None = None


class _LinkedPool(torch.autograd.Function):
    # Written in setup_context style with a backward made of differentiable ops: double backward
    # (gradient penalties) and torch.func (grad, vmap: per-sample gradients) work through it.
    generate_vmap_rule = True

    @staticmethod
    def forward(y: torch.Tensor, link: _Link) -> torch.Tensor:  # type: ignore[override]
        return y.mean((-2, -1))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        y, link = inputs
        ctx.link = link
        ctx.shape = y.shape

    @staticmethod
    def jvp(ctx: Any, y_t: torch.Tensor, _link_t: None) -> torch.Tensor:
        return y_t.mean((-2, -1))

    @staticmethod
    def backward(ctx: Any, grad_pooled: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        link: _Link = ctx.link
        shape = ctx.shape
        grad_pooled = (grad_pooled * (1.0 / (shape[-2] * shape[-1])))[..., None, None]
        if link.grad_out is None:  # the merged output received no gradient
            return grad_pooled.expand(shape), None
        grad = torch.addcmul(grad_pooled, link.grad_out, link.gate)
        link.grad_out = link.gate = None
        return grad, None


class _LinkedMerge(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(  # type: ignore[override]
        y: torch.Tensor, gate: torch.Tensor, shortcut: torch.Tensor, link: _Link | None
    ) -> torch.Tensor:
        return torch.addcmul(shortcut, y, gate)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        y, gate, _, link = inputs
        ctx.save_for_backward(y, gate)
        ctx.save_for_forward(y, gate)
        ctx.link = link

    @staticmethod
    def jvp(ctx: Any, y_t: torch.Tensor | None, gate_t: torch.Tensor | None, shortcut_t: torch.Tensor | None,
            _link_t: None) -> torch.Tensor:
        y, gate = ctx.saved_tensors
        out_t = torch.zeros_like(y) if shortcut_t is None else shortcut_t.expand_as(y)
        if y_t is not None:
            out_t = out_t + y_t * gate
        if gate_t is not None:
            out_t = out_t + y * gate_t
        return out_t

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor):  # type: ignore[override]
        y, gate = ctx.saved_tensors
        need_y, need_gate, need_shortcut, _ = ctx.needs_input_grad
        grad_gate = (grad_out * y).sum((-2, -1), keepdim=True) if need_gate else None
        grad_y = None
        if need_y:
            if ctx.link is not None:
                ctx.link.grad_out, ctx.link.gate = grad_out, gate
            else:
                grad_y = grad_out * gate
        return grad_y, grad_gate, grad_out if need_shortcut else None, None


def gated_residual(
    y: torch.Tensor,
    shortcut: torch.Tensor,
    gate_fn: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``shortcut + y * gate_fn(mean_hw(y))`` with a lean backward.

    Args:
        y: the gated map ``(B, C, H, W)``.
        shortcut: the residual branch, broadcastable to ``y``.
        gate_fn: maps the pooled map ``(B, C)`` to the gate ``(B, C, 1, 1)``; it must be differentiable
            in its input (the gradient of ``y`` is completed when the pooled tap's gradient arrives).

    Under ``torch.no_grad``/``inference_mode`` the result is written into ``y``'s memory, as timm's blocks add
    their shortcut in place.
    """
    needs_grad = torch.is_grad_enabled() and (y.requires_grad or shortcut.requires_grad)
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or is_fx_proxy(y):
        # Compilers fuse the plain formula themselves; exporters need it out of place.
        return torch.addcmul(shortcut, y, gate_fn(spatial_mean(y)))
    if not needs_grad:
        gate = gate_fn(spatial_mean(y))
        if torch.is_grad_enabled():  # no graph, yet a transform such as torch.func.jvp may be differentiating
            return torch.addcmul(shortcut, y, gate)
        # In place, like timm's ``x += shortcut``: a fresh output map costs more than the arithmetic.
        return torch.addcmul(shortcut, y, gate, out=y if shortcut.shape == y.shape else None)
    link = _Link() if y.requires_grad else None
    gate = gate_fn(_LinkedPool.apply(y, link) if link is not None else spatial_mean(y))
    return _LinkedMerge.apply(y, gate, shortcut, link)
