"""Deployment exports: ONNX (checked with onnxruntime), TorchScript, safetensors and hub-style folders.

ONNX uses PyTorch's ``torch.export``-based exporter (opset 18, its native opset) and falls back to the
TorchScript-based exporter when an older opset (17) is asked for, since the down-conversion of the new
exporter's graph to opset 17 fails. Both keep the batch dimension dynamic.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import UserError

__all__ = [
    "FORMATS",
    "build_export_model",
    "export_model",
    "export_onnx",
    "export_torchscript",
    "load_weights",
    "resolve_input_size",
    "verify_onnx",
    "verify_torchscript",
]

FORMATS = ("onnx", "torchscript", "safetensors", "hub")
DEFAULT_OPSET = 18
MIN_OPSET = 17


def resolve_input_size(model: nn.Module, img_size: int | None = None, in_chans: int | None = None) -> tuple[int, ...]:
    """``(C, H, W)`` for the example input: the model's pretrained_cfg size with the given overrides."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    chans, height, width = cfg.get("input_size", (3, 224, 224))
    chans = in_chans or getattr(model, "in_chans", chans)
    if img_size:
        height = width = img_size
    return int(chans), int(height), int(width)


def load_weights(model: nn.Module, checkpoint: str | Path, unsafe: bool = False) -> None:
    """Load a state dict file (ours, a training checkpoint, or a reference BA-Net checkpoint) strictly."""
    from .convert import convert_official_state_dict, load_state_dict_strict, unwrap_checkpoint
    from .safe_load import load_file

    raw = load_file(checkpoint, unsafe=unsafe)
    state_dict = unwrap_checkpoint(raw)
    if any(".ba." in k and ".ba.integration" not in k for k in state_dict):
        state_dict = convert_official_state_dict(state_dict, "auto")
    load_state_dict_strict(model, state_dict, source=f"checkpoint {Path(checkpoint).name}")


def _checkpoint_shapes(model_name: str, checkpoint: str | Path, unsafe: bool) -> dict[str, int]:
    """``num_classes`` and ``in_chans`` read off a checkpoint's classifier and first conv."""
    import timm

    from .convert import unwrap_checkpoint
    from .safe_load import load_file

    cfg = timm.get_pretrained_cfg(model_name)
    if cfg is None:
        return {}
    state_dict = unwrap_checkpoint(load_file(checkpoint, unsafe=unsafe))
    found = {}
    head = state_dict.get(f"{cfg.classifier}.weight") if isinstance(cfg.classifier, str) else None
    if head is not None and head.dim() == 2:
        found["num_classes"] = int(head.shape[0])
    stem = state_dict.get(f"{cfg.first_conv}.weight") if isinstance(cfg.first_conv, str) else None
    if stem is not None and stem.dim() == 4:
        found["in_chans"] = int(stem.shape[1])
    return found


def build_export_model(
    model_name: str | None,
    checkpoint: str | Path | None = None,
    in_chans: int | None = None,
    num_classes: int | None = None,
    unsafe: bool = False,
    **model_kwargs: Any,
) -> nn.Module:
    """The model to export, in eval mode: built by name, or from a hub-style folder given as ``checkpoint``.

    With a checkpoint file, ``num_classes`` and ``in_chans`` default to what its weights hold.
    """
    from . import create_model
    from .hub import from_pretrained

    overrides = {k: v for k, v in dict(in_chans=in_chans, num_classes=num_classes).items() if v is not None}
    if checkpoint is not None and Path(checkpoint).is_dir():
        run_checkpoint = _run_folder_checkpoint(Path(checkpoint))
        if run_checkpoint is None:
            model = from_pretrained(checkpoint, **overrides, **model_kwargs)
            return model.eval()
        checkpoint = run_checkpoint
    if not model_name and checkpoint is not None:
        model_name, stored_kwargs = _training_checkpoint_model(checkpoint, unsafe)
        model_kwargs = {**stored_kwargs, **model_kwargs}
    if not model_name:
        raise UserError(
            "--model is required unless --checkpoint is a training checkpoint or run folder, "
            "or a folder written by save_pretrained"
        )
    if checkpoint is not None:
        overrides = {**_checkpoint_shapes(model_name, checkpoint, unsafe), **overrides}
    model = create_model(model_name, **overrides, **model_kwargs)
    if checkpoint is not None:
        load_weights(model, checkpoint, unsafe=unsafe)
    return model.eval()


def _run_folder_checkpoint(folder: Path) -> Path | None:
    """The best (else last) checkpoint of a ``bridgeattn train`` run folder; ``None`` for other folders."""
    for name in ("best.pth", "last.pth"):
        if (folder / "checkpoints" / name).exists():
            return folder / "checkpoints" / name
    return None


def _training_checkpoint_model(checkpoint: str | Path, unsafe: bool) -> tuple[str | None, dict[str, Any]]:
    """Model name and keyword arguments stored in a ``bridgeattn train`` checkpoint (``None`` if absent)."""
    from .safe_load import load_file

    raw = load_file(checkpoint, unsafe=unsafe)
    config = raw.get("config") if isinstance(raw, dict) else None
    if isinstance(config, dict) and isinstance(config.get("model"), str):
        return config["model"], dict(config.get("model_kwargs") or {})
    return None, {}


def _example(input_size: tuple[int, ...], batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + batch)
    return torch.randn(batch, *input_size, generator=g)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: tuple[int, ...],
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
) -> dict[str, Any]:
    """Write ``model`` (eval mode) as ONNX with a dynamic batch axis: input ``input`` ``(B, C, H, W)``,
    output ``output``. ``exporter``: ``"dynamo"`` (torch.export), ``"legacy"`` (TorchScript) or ``"auto"``
    (dynamo for opset >= 18). Returns ``{"path", "opset", "exporter"}``.
    """
    import onnx

    if opset < MIN_OPSET:
        raise UserError(f"--opset must be at least {MIN_OPSET}, got {opset}")
    if exporter == "auto":
        exporter = "dynamo" if opset >= 18 else "legacy"
    if exporter not in ("dynamo", "legacy"):
        raise UserError(f"exporter must be 'auto', 'dynamo' or 'legacy', got {exporter!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = (_example(input_size, 2),)
    names = dict(input_names=["input"], output_names=["output"])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation notices about code paths that do not apply
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.onnx.export(
                model, example, dynamo=True, opset_version=opset, dynamic_shapes=({0: batch},), verbose=False,
                **names,
            )
            program.save(str(path))
        else:
            # Without autograd the blocks merge in place (addcmul with out=), which the TorchScript-based
            # exporter cannot express; with it enabled they take their out-of-place path (same values).
            with torch.enable_grad():
                torch.onnx.export(
                    model, example, str(path), dynamo=False, opset_version=opset,
                    dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, **names,
                )
    proto = onnx.load(str(path), load_external_data=False)
    written = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=opset)
    return {"path": str(path), "opset": int(written), "exporter": exporter}


@torch.no_grad()
def verify_onnx(
    model: nn.Module, path: str | Path, input_size: tuple[int, ...], batch_sizes: tuple[int, ...] = (1, 3)
) -> float:
    """Max absolute difference between onnxruntime (CPU) and PyTorch on random batches of each size."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    diff = 0.0
    for batch in batch_sizes:
        x = _example(input_size, batch, seed=1)
        expected = model.eval()(x)
        got = torch.from_numpy(session.run(None, {input_name: x.numpy()})[0])
        if got.shape != expected.shape:
            raise RuntimeError(f"ONNX output shape {tuple(got.shape)} != PyTorch {tuple(expected.shape)}")
        diff = max(diff, (got - expected).abs().max().item())
    return diff


def export_torchscript(model: nn.Module, path: str | Path, input_size: tuple[int, ...]) -> dict[str, Any]:
    """Trace ``model`` (eval mode) with a batch of 2 and save it. Returns ``{"path"}``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # shape checks that are constant for a fixed model
        traced = torch.jit.trace(model.eval(), _example(input_size, 2), check_trace=False)
        traced.save(str(path))
    return {"path": str(path)}


@torch.no_grad()
def verify_torchscript(
    model: nn.Module, path: str | Path, input_size: tuple[int, ...], batch_sizes: tuple[int, ...] = (1, 3)
) -> float:
    """Max absolute difference between the saved TorchScript module and ``model`` on other batch sizes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path), map_location="cpu").eval()
    diff = 0.0
    for batch in batch_sizes:
        x = _example(input_size, batch, seed=1)
        diff = max(diff, (loaded(x) - model.eval()(x)).abs().max().item())
    return diff


def export_model(
    model: nn.Module,
    fmt: str,
    output: str | Path,
    input_size: tuple[int, ...],
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
    verify: bool = True,
    atol: float = 1e-4,
    reference: nn.Module | None = None,
) -> dict[str, Any]:
    """Export ``model`` in ``fmt`` (one of :data:`FORMATS`) and check it against ``reference`` (default: itself).

    Returns a summary with ``format``, ``path``, and for onnx/torchscript ``max_abs_diff`` and ``ok``
    (``max_abs_diff <= atol``).
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    reference = model if reference is None else reference
    summary: dict[str, Any] = {"format": fmt, "input_size": list(input_size)}
    if fmt == "onnx":
        summary.update(export_onnx(model, output, input_size, opset=opset, exporter=exporter))
        if verify:
            summary["max_abs_diff"] = verify_onnx(reference, output, input_size)
    elif fmt == "torchscript":
        summary.update(export_torchscript(model, output, input_size))
        if verify:
            summary["max_abs_diff"] = verify_torchscript(reference, output, input_size)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        if Path(output).suffix != ".safetensors":
            raise UserError(f"the output must end in .safetensors, got {output}")
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(output))
        summary["path"] = str(output)
    else:
        from .hub import save_pretrained

        summary["path"] = str(save_pretrained(model, output))
    if "max_abs_diff" in summary:
        summary["atol"] = atol
        summary["ok"] = bool(summary["max_abs_diff"] <= atol)
    return summary
