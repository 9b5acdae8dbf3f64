"""Deployment exports: ONNX (checked with onnxruntime), TorchScript, safetensors and hub-style folders.

ONNX opset 18 goes through ``torch.export``; opset 17 through the TorchScript-based exporter, since the new
exporter's graph does not convert down to 17 (docs/interop.md). Both keep the batch dimension dynamic.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.nn as nn
from timm.models import get_model_args

from ..errors import UserError, first_line
from ..files import atomic_path, publish_mode
from ..models.cost import default_input_size as resolve_input_size  # ``(C, H, W)`` of the example input
from .formats import DEFAULT_OPSET, FORMATS
from .hub import save_pretrained
from .loading import load_model, model_preprocessing

__all__ = ["FORMATS", "convert_checkpoint", "export_model", "export_onnx", "export_torchscript", "resolve_input_size",
           "save_safetensors", "verify_onnx", "verify_torchscript"]

MIN_OPSET = 17


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[Path]:
    """``atomic_path`` (its folder created) whose failure to write (a full disk, a lost mount) is one ``UserError``
    line; the temp file is removed and an earlier ``path`` is kept."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            yield tmp
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def weights_metadata(model: nn.Module, metrics: Mapping[str, Any] | None = None) -> dict[str, str]:
    """What a weights file needs to rebuild its model: ``architecture``, ``model_args`` and ``preprocessing``
    (timm's data-config keys), plus ``metrics``; values JSON-encoded (safetensors metadata is strings)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "architecture" not in cfg:
        raise UserError("only models from bridgeattn.create_model (or timm.create_model) can be saved with "
                        "their architecture")
    try:
        args = json.dumps(get_model_args(model))
        extra = json.dumps(dict(metrics or {}))
    except (TypeError, ValueError) as exc:
        raise UserError(f"cannot record the model's arguments or metrics as JSON: {exc}") from None
    return {"format": "pt", "architecture": cfg["architecture"], "model_args": args,
            "preprocessing": json.dumps(model_preprocessing(model).to_dict()), "metrics": extra}


def _metadata_or_empty(model: nn.Module) -> dict[str, str]:
    """:func:`weights_metadata` for models that have it (a fused or hand-built model may not)."""
    try:
        return weights_metadata(model)
    except UserError:
        return {}


def save_safetensors(model: nn.Module, path: str | Path, metrics: Mapping[str, Any] | None = None) -> Path:
    """Write ``model``'s state dict to ``path`` (``.safetensors``) with :func:`weights_metadata`, mode 0644."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise UserError(f"the output must end in .safetensors, got {path}")
    metadata = weights_metadata(model, metrics)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with _writing(path) as tmp:
        safetensors.torch.save_file(tensors, str(tmp), metadata=metadata)
    publish_mode(path)
    return path


def convert_checkpoint(path: str | Path, output: str | Path, model_name: str, version: str = "auto",
                       unsafe: bool = False, num_classes: int | None = None) -> dict[str, Any]:
    """Convert a reference BA-Net checkpoint (any location ``load_model`` takes) to ``output`` (``.safetensors``),
    checked against ``model_name`` (``num_classes``: the checkpoint's classifier rows unless given); a summary."""
    if Path(output).suffix != ".safetensors":  # refused before the checkpoint is read
        raise UserError(f"the output must end in .safetensors, got {output}")
    if not Path(path).exists():  # a file or folder: a timm name holds no reference layout
        raise UserError(f"no such file: {path}")
    overrides = {"num_classes": num_classes} if num_classes is not None else {}
    loaded = load_model(path, model_name, unsafe=unsafe, reference=version, **overrides)
    save_safetensors(loaded.model, output)
    return {"layout": loaded.layout or "ours", "model": model_name, "num_classes": loaded.model.num_classes,
            "tensors": len(loaded.model.state_dict()), "output": str(output)}


@torch.no_grad()
def check_input_size(model: nn.Module, input_size: tuple[int, ...]) -> None:
    """``UserError`` (one line) when ``model`` cannot run on ``(C, H, W)`` = ``input_size`` (e.g. too small)."""
    name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture", type(model).__name__)
    try:
        model.eval()(_example(input_size, 1))
    except Exception as exc:  # shape errors surface as RuntimeError, ValueError or AssertionError by model
        raise UserError(f"{name} cannot run on {'x'.join(map(str, input_size))} inputs ({first_line(exc)}); "
                        "pass a larger --img-size") from None


def _example(input_size: tuple[int, ...], batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(seed + batch))


def _onnx_module(name: str) -> Any:
    """Import an ONNX package; without the ``onnx`` extra, one line that says how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise UserError(f"ONNX export needs {name}: pip install 'bridgeattn[onnx]'") from None


def export_onnx(model: nn.Module, path: str | Path, input_size: tuple[int, ...], opset: int = DEFAULT_OPSET,
                exporter: str = "auto") -> dict[str, Any]:
    """Write ``model`` (eval mode) as ONNX with a dynamic batch axis: input ``input`` ``(B, C, H, W)``,
    output ``output``. ``exporter``: ``"dynamo"`` (torch.export), ``"legacy"`` (TorchScript) or ``"auto"``
    (dynamo for opset >= 18). Returns ``{"path", "opset", "exporter"}``."""
    onnx = _onnx_module("onnx")
    if exporter != "legacy":
        _onnx_module("onnxscript")  # torch's dynamo exporter writes through it
    if opset < MIN_OPSET:
        raise UserError(f"--opset must be at least {MIN_OPSET}, got {opset}")
    if exporter == "auto":
        exporter = "dynamo" if opset >= 18 else "legacy"
    if exporter not in ("dynamo", "legacy"):
        raise UserError(f"exporter must be 'auto', 'dynamo' or 'legacy', got {exporter!r}")
    check_input_size(model, input_size)  # also puts the model in eval mode
    with _writing(Path(path)) as tmp:  # a failed export leaves no file behind
        _write_onnx(model, tmp, input_size, opset, exporter)
        proto = onnx.load(str(tmp), load_external_data=False)
        meta = _metadata_or_empty(model)
        if meta:  # the preprocessing and provenance, readable by onnxruntime (modelmeta.custom_metadata_map)
            onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, **meta})
            onnx.save(proto, str(tmp))
    written = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=opset)
    return {"path": str(path), "opset": int(written), "exporter": exporter}


def _write_onnx(model: nn.Module, path: Path, input_size: tuple[int, ...], opset: int, exporter: str) -> None:
    example, names = (_example(input_size, 2),), dict(input_names=["input"], output_names=["output"])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation notices about code paths that do not apply
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.onnx.export(model, example, dynamo=True, opset_version=opset, dynamic_shapes=({0: batch},),
                                        verbose=False, **names)
            program.save(str(path))
        else:
            # Without autograd the blocks merge in place (addcmul with out=), which the TorchScript-based
            # exporter cannot express; with it enabled they take their out-of-place path (same values).
            with torch.enable_grad():
                torch.onnx.export(model, example, str(path), dynamo=False, opset_version=opset,
                                  dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, **names)


@torch.no_grad()
def _max_diff(exported: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, input_size: tuple[int, ...],
              batch_sizes: tuple[int, ...]) -> float:
    """Max absolute difference between ``exported`` and ``model`` on random batches of each size."""
    diff = 0.0
    for batch in batch_sizes:
        x = _example(input_size, batch, seed=1)
        got, expected = exported(x), model.eval()(x)
        if got.shape != expected.shape:
            raise RuntimeError(f"exported output shape {tuple(got.shape)} != PyTorch {tuple(expected.shape)}")
        diff = max(diff, (got - expected).abs().max().item())
    return diff


def verify_onnx(model: nn.Module, path: str | Path, input_size: tuple[int, ...],
                batch_sizes: tuple[int, ...] = (1, 3)) -> float:
    """Max absolute difference between onnxruntime (CPU) and PyTorch on random batches of each size."""
    session = _onnx_module("onnxruntime").InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return _max_diff(lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0]), model, input_size,
                     batch_sizes)


def export_torchscript(model: nn.Module, path: str | Path, input_size: tuple[int, ...]) -> dict[str, Any]:
    """Trace ``model`` (eval mode) with a batch of 2 and save it. Returns ``{"path"}``."""
    check_input_size(model, input_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # shape checks that are constant for a fixed model
        traced = torch.jit.trace(model.eval(), _example(input_size, 2), check_trace=False)
    # torch.jit.load(path, _extra_files={"bridgeattn.json": ""}) reads the preprocessing back. Saved to memory
    # first: TorchScript's own file writer aborts the process (SIGABRT) when the disk is full.
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={"bridgeattn.json": json.dumps(_metadata_or_empty(model))})
    with _writing(Path(path)) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return {"path": str(path)}


def verify_torchscript(model: nn.Module, path: str | Path, input_size: tuple[int, ...],
                       batch_sizes: tuple[int, ...] = (1, 3)) -> float:
    """Max absolute difference between the saved TorchScript module and ``model`` on other batch sizes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path), map_location="cpu").eval()
    return _max_diff(loaded, model, input_size, batch_sizes)


def export_model(model: nn.Module, fmt: str, output: str | Path, input_size: tuple[int, ...],
                 opset: int = DEFAULT_OPSET, exporter: str = "auto", verify: bool = True, atol: float = 1e-4,
                 reference: nn.Module | None = None, metrics: Mapping[str, Any] | None = None,
                 command: str | None = None, run: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Export ``model`` in ``fmt`` (one of :data:`FORMATS`), with its preprocessing, and check it against
    ``reference`` (default: itself). ``metrics``, ``command``, ``run``: as :func:`~.hub.save_pretrained` takes them.
    Returns ``format``, ``path`` and for onnx/torchscript ``max_abs_diff`` and ``ok`` (``<= atol``)."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    summary: dict[str, Any] = {"format": fmt, "input_size": list(input_size)}
    if fmt == "onnx":
        summary.update(export_onnx(model, output, input_size, opset=opset, exporter=exporter))
    elif fmt == "torchscript":
        summary.update(export_torchscript(model, output, input_size))
    elif fmt == "safetensors":
        summary["path"] = str(save_safetensors(model, output, metrics=metrics))
    else:
        summary["path"] = str(save_pretrained(model, output, metrics=metrics, command=command, run=run))
    if verify and fmt in ("onnx", "torchscript"):
        check = verify_onnx if fmt == "onnx" else verify_torchscript
        diff = check(model if reference is None else reference, output, input_size)
        summary.update(max_abs_diff=diff, atol=atol, ok=bool(diff <= atol))
    return summary
