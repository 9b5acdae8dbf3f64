"""Feature-map operations of the bridge blocks, written for few passes over memory (docs/speed.md).

:func:`spatial_mean` pools with ``sum``, whose backward is a broadcast view; :func:`gated_residual` computes
``shortcut + y * gate_fn(mean(y))`` with a backward that forms the map's whole gradient (gate and pooling terms)
in one ``addcmul``. Values and gradients equal the plain formula's; the backward is made of differentiable ops, so
double backward and ``torch.func`` (grad, vmap, jvp) work. Compilers, exporters and tracers get the plain formula.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["gated_residual", "is_fx_proxy", "spatial_mean"]


def spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """Global average pool ``(B, C, H, W) -> (B, C)``, bit for bit ``x.mean((2, 3))`` in float32/64, which fx graphs
    record instead (quantization would observe the shape arithmetic as a tensor)."""
    if not torch.jit.is_scripting() and is_fx_proxy(x):
        return x.mean((2, 3))
    return x.sum((2, 3)) / (x.shape[-2] * x.shape[-1])


@torch.jit.unused
def is_fx_proxy(x):  # unannotated: TorchScript compiles the stub of an unused function as (Tensor) -> bool
    """Whether ``x`` is a symbolic value of an fx trace (no shapes or flags to branch on)."""
    return isinstance(x, torch.fx.Proxy)


@dataclass(slots=True)
class _Link:
    """Carries the output gradient from the merge's backward to the pooling's backward, which autograd runs last
    (the gate depends on the pooled tap): there both gradient terms of the map are summed in one pass."""

    grad_out: torch.Tensor | None = None
    gate: torch.Tensor | None = None


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


def gated_residual(y: torch.Tensor, shortcut: torch.Tensor,
                   gate_fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``shortcut + y * gate_fn(mean_hw(y))`` with a lean backward. ``y``: the gated map ``(B, C, H, W)``;
    ``shortcut``: broadcastable to ``y``; ``gate_fn``: ``(B, C)`` -> ``(B, C, 1, 1)``, differentiable in its input
    (``y``'s gradient is completed when the pooled tap's arrives). Under ``torch.no_grad``/``inference_mode`` the
    result is written into ``y``'s memory, as timm's blocks add their shortcut in place.
    """
    needs_grad = torch.is_grad_enabled() and (y.requires_grad or shortcut.requires_grad)
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or is_fx_proxy(y):
        # Compilers fuse the plain formula themselves; exporters need it out of place.
        return torch.addcmul(shortcut, y, gate_fn(spatial_mean(y)))
    if not needs_grad:
        # In place, like timm's ``x += shortcut`` (a fresh output map costs more than the arithmetic), unless grad
        # mode is on: no graph, yet a transform such as torch.func.jvp may be differentiating.
        in_place = not torch.is_grad_enabled() and shortcut.shape == y.shape
        return torch.addcmul(shortcut, y, gate_fn(spatial_mean(y)), out=y if in_place else None)
    link = _Link() if y.requires_grad else None
    gate = gate_fn(_LinkedPool.apply(y, link) if link is not None else spatial_mean(y))
    return _LinkedMerge.apply(y, gate, shortcut, link)
