"""Input checks shared by the models: one clear ValueError instead of a shape error deep inside."""
from __future__ import annotations

import torch


def check_image_batch(x: torch.Tensor, in_chans: int, min_size: int, model_name: str) -> None:
    """Raise ``ValueError`` unless ``x`` is a float ``(B, in_chans, H, W)`` batch with ``H, W >= min_size``."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or isinstance(x, torch.fx.Proxy):
        return
    expected = f"a float tensor of shape (B, {in_chans}, H, W) with H, W >= {min_size}"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{model_name} expects {expected}; got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{model_name} expects {expected}; got dtype {x.dtype} (convert with .float())")
    if x.dim() != 4:
        raise ValueError(f"{model_name} expects {expected}; got shape {tuple(x.shape)}")
    if x.shape[1] != in_chans:
        raise ValueError(
            f"{model_name} expects {expected}; got {x.shape[1]} channels "
            f"(create the model with in_chans={x.shape[1]} to change it)"
        )
    if min(x.shape[-2:]) < min_size:
        raise ValueError(
            f"{model_name} expects {expected}; got {tuple(x.shape[-2:])}, too small for its stride "
            "(use a small-input model such as bav2_resnet20, or small_input=True)"
        )
