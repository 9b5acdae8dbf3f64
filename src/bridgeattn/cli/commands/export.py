"""``bridgeattn export``: ONNX (checked with onnxruntime), TorchScript, safetensors or a hub-style folder."""
from __future__ import annotations

import argparse
import copy
import dataclasses
import shlex
from pathlib import Path

from ...errors import UserError
from ...files import check_writable
from ..arguments import (
    add_int_argument,
    add_json_arguments,
    add_weights_arguments,
    emit_json,
    model_from_args,
    positive_float,
    switch,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ...weights.formats import DEFAULT_OPSET, FORMATS

    add_weights_arguments(parser, "weights: a run folder, a training or reference checkpoint, a .safetensors file "
                                  "or a saved model folder (default: random init)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    parser.add_argument("--output", required=True, help="output file (or folder for --format hub)")
    add_int_argument(parser, "--img-size", "input side (default: the weights' own, else the model's)")
    add_int_argument(parser, "--in-chans", "input channels (default: the checkpoint's or the model's)")
    add_int_argument(parser, "--num-classes", "classifier size (default: the checkpoint's or the model's)")
    switch(parser, "--fuse", "fold each bridge gate's selection and BatchNorm into one Linear (onnx/torchscript)")
    add_int_argument(parser, "--opset", f"ONNX opset, >= 17 (default {DEFAULT_OPSET}; 17 uses the TorchScript-based "
                     "exporter)", default=DEFAULT_OPSET)
    parser.add_argument("--exporter", choices=("auto", "dynamo", "legacy"), default="auto",
                        help="ONNX exporter (default: torch.export-based for opset >= 18)")
    parser.add_argument("--atol", type=positive_float, default=1e-4,
                        help="largest accepted |export - PyTorch| (fp32; default: 1e-4)")
    switch(parser, "--verify", "check the export against PyTorch numerically", default=True)
    switch(parser, "--overwrite", "replace an existing --output (default: refuse; never the --checkpoint itself)")
    add_json_arguments(parser, "summary")


def _check_output(output: Path, inputs: list[Path], overwrite: bool) -> None:
    """Refuse, before any work, an --output that is one of the inputs, or that exists without --overwrite."""
    target = output.resolve()
    for item in map(Path.resolve, inputs):  # the same file (or a link to it), or a folder that holds it
        if target == item or target in item.parents:
            raise UserError(f"--output {output} would overwrite the weights being exported ({item}); choose "
                            "another --output")
    if (output.is_dir() and any(output.iterdir()) or output.is_file()) and not overwrite:
        raise UserError(f"--output {output} already exists; pass --overwrite to replace it")


def run(args: argparse.Namespace) -> int:
    from ...layers.fusion import fuse
    from ...weights.export import export_model, resolve_input_size
    from ...weights.loading import model_preprocessing, set_preprocessing

    check_writable(args.output, folder=args.format == "hub")  # before loading or exporting anything
    _check_output(Path(args.output), [Path(args.checkpoint)] if args.checkpoint else [], args.overwrite)
    if args.fuse and args.format in ("safetensors", "hub"):
        raise UserError("--fuse is for inference exports (onnx, torchscript); weights are saved unfused")
    metrics, command, run_info = None, None, None
    model, loaded = model_from_args(args)
    if loaded is not None:
        _check_output(Path(args.output), [loaded.source], args.overwrite)  # a run folder's checkpoint
        metrics = loaded.metrics or None
        cfg = loaded.train_config
        if cfg is not None:  # a training run: the card says which, on what data, from where
            folder = loaded.source.parent.parent if loaded.source.parent.name == "checkpoints" else None
            run_info = {"name": folder.name if folder else None, "data": cfg.data.spec,
                        "init_from": cfg.model.init_from}
        if loaded.config is not None and metrics:  # the command that measures them again
            command = shlex.join(["bridgeattn", "eval", "--checkpoint", str(loaded.source)])
    if args.img_size:  # the size asked for becomes the exported model's input size
        prep = model_preprocessing(model)
        set_preprocessing(model, dataclasses.replace(prep, input_size=(prep.in_chans, args.img_size, args.img_size)))
    input_size = resolve_input_size(model, args.img_size, args.in_chans)
    reference = model
    if args.fuse:
        fused = copy.deepcopy(model)
        model = (fuse(fused) or fused).eval()  # fuse may work in place
    summary = export_model(model, args.format, args.output, input_size, opset=args.opset, exporter=args.exporter,
                           verify=args.verify, atol=args.atol, reference=reference, metrics=metrics,
                           command=command, run=run_info)
    summary["fused"] = bool(args.fuse)
    line = f"wrote {summary['path']} ({args.format}"
    line += (f", opset {summary['opset']}" if "opset" in summary else "") + (", fused)" if args.fuse else ")")
    if "max_abs_diff" in summary:
        line += f"; max |export - PyTorch| = {summary['max_abs_diff']:.3g} (atol {args.atol:g})"
    emit_json(args, summary, line)
    if summary.get("ok") is False:
        print(f"bridgeattn export: the exported model differs from PyTorch by more than {args.atol:g}")
        return 1
    return 0
