"""Input checks shared by the models (one clear ValueError instead of a shape error deep inside); the input size."""
from __future__ import annotations

import timm
import torch

from ..config import REMOTE_KWARGS
from ..errors import UserError, first_line
from .cost import count_macs, default_input_size, meta_model


def check_image_batch(x: torch.Tensor, in_chans: int, min_size: int, model_name: str,
                      small_input: bool = False) -> None:
    """Raise ``ValueError`` unless ``x`` is a float ``(B, in_chans, H, W)`` batch with ``H, W >= min_size``.

    ``small_input``: the model already has the small-input stem, so the message suggests no other model.
    """
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or isinstance(x, torch.fx.Proxy):
        return
    if not isinstance(x, torch.Tensor):
        got = type(x).__name__
    elif not x.is_floating_point():
        got = f"dtype {x.dtype} (convert with .float())"
    elif x.dim() != 4:
        got = f"shape {tuple(x.shape)}"
    elif x.shape[1] != in_chans:
        got = f"{x.shape[1]} channels (create the model with in_chans={x.shape[1]} to change it)"
    elif min(x.shape[-2:]) < min_size:
        other = "" if small_input else ", a small-input model such as bav2_resnet20, or small_input=True"
        got = f"{tuple(x.shape[-2:])}, too small for its stride (use at least {min_size} px{other})"
    else:
        return
    raise ValueError(f"{model_name} expects a float tensor of shape (B, {in_chans}, H, W) with H, W >= {min_size}; "
                     f"got {got}")


def _runs(model: torch.nn.Module, in_chans: int, size: int) -> str | None:
    """None when ``model`` takes a ``(1, in_chans, size, size)`` batch (on the meta device), else the error."""
    try:
        count_macs(model, (in_chans, size, size))
    except (AssertionError, RuntimeError, ValueError, TypeError, IndexError) as exc:
        return first_line(exc)
    return None


def check_model_input(name: str, img_size: int | None, in_chans: int | None = None, **kwargs) -> None:
    """Build ``name`` with ``kwargs`` on the meta device (no memory, no arithmetic) and, with ``img_size``, pass it
    one image of that size: ``UserError`` before any work when the arguments or the size do not fit the model.

    For a size that does not fit, the message names one that does: the model's total stride (its smallest input,
    for convolutional networks) or its default input size (the only one, for fixed-size models such as Swin).
    """
    if not timm.is_model(name):
        return  # create_model names the similar models
    kwargs = {k: v for k, v in kwargs.items() if k not in REMOTE_KWARGS}  # a shape check never fetches weights
    chans = {"in_chans": in_chans} if in_chans else {}
    try:
        model = meta_model(name, **chans, **kwargs)
    except (AssertionError, RuntimeError, ValueError, TypeError, KeyError) as exc:
        given = " ".join(f"{k}={v}" for k, v in kwargs.items())
        raise UserError(f"{name} cannot be built with --model-kwargs '{given}': {first_line(exc)}") from None
    if img_size is None:
        return
    chans_in = in_chans or int(getattr(model, "in_chans", 3))
    problem = _runs(model, chans_in, img_size)
    if problem is None:
        return
    strides = [int(f["reduction"]) for f in getattr(model, "feature_info", None) or [] if "reduction" in f]
    default = default_input_size(model)[-1]
    candidates = sorted({s for s in (getattr(model, "min_input_size", None), max(strides, default=0), default)
                         if s and s > img_size})
    works = next((s for s in candidates if _runs(model, chans_in, s) is None), None)
    hint = f"; it runs on {works} px (--img-size {works})" if works else ""
    raise UserError(f"--img-size {img_size} does not fit {name} ({problem}){hint}")
