"""Where does a block look, and what does its gate do?

- :func:`block_gradcam`: Grad-CAM (pytorch-grad-cam) of one residual block's taps: the block input, each conv
  output (the taps the bridge squeezes) and the block output, for a batch of images (the BAv2 paper's
  Figure 2). :func:`save_gradcam_figure` draws them side by side.
- :func:`gate_statistics`: for a trained BA model, the learned selection weights ``a_i`` of every block
  (which conv outputs the bridge uses) and the distribution of gate values per stage on given images.
- :func:`explain`: both, written to a folder as PNG and JSON (``bridgeattn explain``).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .errors import UserError
from .files import write_json

__all__ = [
    "IMAGE_SUFFIXES",
    "block_gradcam",
    "block_taps",
    "explain",
    "find_images",
    "gate_statistics",
    "load_images",
    "load_model",
    "save_gradcam_figure",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
PANEL_INCHES = 2.0
TITLE_INCHES = 0.35
DPI = 100


def _require_gradcam() -> None:
    try:
        import pytorch_grad_cam  # noqa: F401
    except ImportError:
        raise UserError("Grad-CAM needs pytorch-grad-cam: pip install 'bridgeattn[explain]' (grad-cam)") from None


# ------------------------------------------------------------------------------------------------ the taps
class _BlockInput(nn.Identity):
    """Passes the block's input through, so Grad-CAM can hook it like any layer output."""


def block_taps(model: nn.Module, block: str) -> tuple[list[tuple[str, nn.Module]], Any]:
    """The layers whose outputs are the block's taps, in order: input, conv outputs, output.

    Returns ``([(label, module)], handle)``; ``handle.remove()`` detaches the input probe. Conv outputs are
    the tensors a BA block squeezes: ``relu(bn1(conv1))``, (``relu(bn2(conv2))``,) and the last BN output
    before the residual add.
    """
    try:
        target = model.get_submodule(block)
    except AttributeError:
        blocks = [n for n, m in model.named_modules() if hasattr(m, "conv1") and hasattr(m, "conv2") and n]
        raise UserError(f"no block {block!r} in the model; blocks: {', '.join(blocks)}") from None
    if not (hasattr(target, "conv1") and hasattr(target, "conv2")):
        raise UserError(f"{block!r} is not a residual block (it has no conv1/conv2); pick e.g. 'layer2.0'")
    probe = _BlockInput()
    handle = target.register_forward_pre_hook(lambda _m, args: (probe(args[0]), *args[1:]))
    if hasattr(target, "conv3"):  # bottleneck
        convs = [("conv1", target.act1), ("conv2", target.act2), ("conv3", target.bn3)]
    else:
        convs = [("conv1", target.act1), ("conv2", target.bn2)]
    return [("input", probe), *convs, ("output", target)], handle


def block_gradcam(
    model: nn.Module, images: torch.Tensor, block: str, target_class: int | None = None
) -> tuple[dict[str, np.ndarray], list[int]]:
    """Grad-CAM of every tap of ``block`` for ``images`` ``(B, C, H, W)``.

    Returns ``({label: cams (B, H, W) in [0, 1]}, explained classes)``; the class is the prediction
    unless ``target_class`` is given. Each tap gets its own Grad-CAM (they are not averaged).
    """
    _require_gradcam()
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model.eval()
    with torch.no_grad():
        logits = model(images)
    classes = logits.argmax(1).tolist() if target_class is None else [int(target_class)] * len(images)
    if max(classes) >= logits.shape[1] or min(classes) < 0:
        raise UserError(f"target class must be in 0..{logits.shape[1] - 1}")
    targets = [ClassifierOutputTarget(c) for c in classes]
    taps, handle = block_taps(model, block)
    cams: dict[str, np.ndarray] = {}
    try:
        for label, layer in taps:
            with GradCAM(model=model, target_layers=[layer]) as cam:
                cams[label] = cam(input_tensor=images, targets=targets)
    finally:
        handle.remove()
    return cams, classes


def save_gradcam_figure(
    image: np.ndarray, cams: dict[str, np.ndarray], path: str | Path, title: str = ""
) -> tuple[int, int]:
    """One row: the image, then each tap's CAM over it. ``image``: ``(H, W, 3)`` in [0, 1].

    The PNG is ``(1 + len(cams)) * 200`` px wide and ``235`` px high. Returns ``(width, height)``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pytorch_grad_cam.utils.image import show_cam_on_image

    n = 1 + len(cams)
    fig, axes = plt.subplots(1, n, figsize=(n * PANEL_INCHES, PANEL_INCHES + TITLE_INCHES), dpi=DPI)
    panels = [("image", (image * 255).astype(np.uint8))]
    panels += [(label, show_cam_on_image(image.astype(np.float32), cam, use_rgb=True)) for label, cam in cams.items()]
    for ax, (label, pixels) in zip(axes, panels):
        ax.imshow(pixels, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=8, y=0.995)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.86, wspace=0.04)
    fig.savefig(path, dpi=DPI)  # no tight bbox: the size in pixels is exactly figsize * dpi
    plt.close(fig)
    return round(n * PANEL_INCHES * DPI), round((PANEL_INCHES + TITLE_INCHES) * DPI)


# -------------------------------------------------------------------------------------------- gate stats
def _stage(name: str) -> str:
    return name.split(".")[0]


@torch.no_grad()
def gate_statistics(model: nn.Module, images: torch.Tensor, bins: int = 20) -> dict[str, Any]:
    """Selection weights per block and gate-value distributions per stage of a BA model.

    ``blocks``: ``{block: {"selection_weights": a (list) or None, "version", "gate_mean", "gate_std"}}``;
    softmax selection reports the mean per-sample tap weights on ``images``. ``stages``: ``{stage: {mean,
    std, min, max, quantiles, histogram}}`` over every gate value (sample x channel) of the stage's blocks.
    """
    from .bridge import BridgeAttention, SoftmaxSelection, squeeze_taps

    bridges = [(n.rsplit(".", 1)[0], m) for n, m in model.named_modules() if isinstance(m, BridgeAttention)]
    if not bridges:
        raise UserError("the model has no bridge attention; gate statistics need a bav1_/bav2_ model")
    gates: dict[str, torch.Tensor] = {}
    softmax_weights: dict[str, torch.Tensor] = {}
    handles = []
    for block, ba in bridges:
        def hook(module: nn.Module, args: tuple, out: torch.Tensor, block: str = block) -> None:
            gates[block] = out.flatten(1).float().cpu()
            if isinstance(module.selection, SoftmaxSelection):
                z = torch.stack([fc(s) for fc, s in zip(module.integration, squeeze_taps(args[0]))], dim=-1)
                softmax_weights[block] = module.selection.probabilities(z).mean(0).cpu()
        handles.append(ba.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(images)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    blocks: dict[str, Any] = {}
    per_stage: dict[str, list[torch.Tensor]] = {}
    for block, ba in bridges:
        g = gates[block]
        a = ba.selection_weights()
        if a is None and block in softmax_weights:
            a = softmax_weights[block]
        blocks[block] = {
            "version": ba.version,
            "taps": list(ba.in_channels),
            "selection_weights": None if a is None else [float(v) for v in a],
            "gate_mean": float(g.mean()),
            "gate_std": float(g.std()) if g.numel() > 1 else 0.0,
        }
        per_stage.setdefault(_stage(block), []).append(g.flatten())
    stages = {}
    edges = torch.linspace(0, 1, bins + 1)
    for stage, parts in per_stage.items():
        v = torch.cat(parts)
        q = torch.quantile(v, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95]))
        stages[stage] = {
            "count": int(v.numel()), "mean": float(v.mean()), "std": float(v.std()) if v.numel() > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()),
            "quantiles": {k: float(x) for k, x in zip(("5", "25", "50", "75", "95"), q)},
            "histogram": {"edges": [float(e) for e in edges], "counts": torch.histc(v, bins, 0, 1).int().tolist()},
        }
    return {"images": int(images.shape[0]), "blocks": blocks, "stages": stages}


def plot_gate_statistics(stats: dict[str, Any], output: Path) -> list[Path]:
    """``selection_weights.png`` (a_i per block) and ``gate_distribution.png`` (gate values per stage)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    blocks = {b: v for b, v in stats["blocks"].items() if v["selection_weights"] is not None}
    if blocks:
        names = list(blocks)
        n_taps = max(len(v["selection_weights"]) for v in blocks.values())
        fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(names) * n_taps), 4), dpi=110)
        width = 0.8 / n_taps
        for i in range(n_taps):
            vals = [v["selection_weights"][i] if i < len(v["selection_weights"]) else 0 for v in blocks.values()]
            offset = (i - (n_taps - 1) / 2) * width
            ax.bar(np.arange(len(names)) + offset, vals, width, label=f"a_{i + 1} (conv{i + 1})")
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks(np.arange(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("selection weight a_i")
        ax.set_title("BAv2 selection weights per block (which conv outputs the bridge uses)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(output / "selection_weights.png")
        fig.savefig(written[-1])
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for stage, s in stats["stages"].items():
        edges = np.array(s["histogram"]["edges"])
        counts = np.array(s["histogram"]["counts"], dtype=float)
        ax.stairs(counts / max(counts.sum(), 1), edges, label=f"{stage} (mean {s['mean']:.2f})")
    ax.set_xlabel("gate value")
    ax.set_ylabel("fraction of gate values")
    ax.set_title(f"gate value distribution per stage ({stats['images']} images)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(output / "gate_distribution.png")
    fig.savefig(written[-1])
    plt.close(fig)
    return written


# ------------------------------------------------------------------------------------------ model, images
def _metadata(checkpoint: Path, obj: Any) -> dict[str, Any]:
    """Model name and preprocessing found in a checkpoint dict or JSON files beside it."""
    found: dict[str, Any] = {}
    sources: list[dict[str, Any]] = []
    if isinstance(obj, dict):
        sources.append(obj)
    # a run folder keeps its JSON files at the top, the weights in checkpoints/
    for p in [d / f for d in (checkpoint.parent, checkpoint.parent.parent)
              for f in ("config.json", "summary.json", "train_config.json", "args.json")]:
        if p.is_file():
            try:
                sources.append(json.loads(p.read_text()))
            except json.JSONDecodeError:
                continue
    for src in sources:
        for sub in (src, src.get("config") or {}, src.get("args") or {}, src.get("data_info") or {},
                    src.get("data") or {}, src.get("pretrained_cfg") or {}):
            if not isinstance(sub, dict):
                continue
            for key in ("model", "model_name", "arch", "architecture"):
                if isinstance(sub.get(key), str):
                    found.setdefault("model", sub[key])
            if isinstance(sub.get("data"), str):
                found.setdefault("data", sub["data"])
            for key in ("mean", "std", "img_size", "in_chans"):
                if sub.get(key) is not None and not isinstance(sub.get(key), dict):
                    found.setdefault(key, sub[key])
    return found


def _state_dict(obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state", "model_state_dict", "state_dict_ema"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError("the checkpoint holds no state dict (expected a weights file or a dict with 'model')")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_model(
    checkpoint: str | Path | None = None, model_name: str | None = None, unsafe: bool = False, **kwargs: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """Build a model from a checkpoint (file or run folder) and/or a registered name.

    The head size and input channels are read from the weights (``fc.weight``, ``conv1.weight``); the model
    name and preprocessing (mean/std/img_size) from the checkpoint or the JSON files beside it, or from
    ``model_name``. Returns ``(model in eval mode, metadata)``.
    """
    from . import create_model
    from .safe_load import load_file

    meta: dict[str, Any] = {}
    state = None
    if checkpoint is not None:
        path = Path(checkpoint)
        if path.is_dir():
            folders = [path / "checkpoints", path] if (path / "checkpoints").is_dir() else [path]
            candidates = sorted(p for d in folders for p in d.iterdir()
                                if p.suffix in (".safetensors", ".pth", ".pt", ".bin"))
            preferred = sorted((p for p in candidates if p.stem in ("best", "last", "model", "checkpoint", "final")),
                               key=lambda p: ("best", "last", "model", "checkpoint", "final").index(p.stem))
            if not (preferred or candidates):
                raise UserError(f"no weights (*.safetensors, *.pth, *.pt) in {path}")
            path = (preferred or candidates)[0]
        obj = load_file(path, unsafe=unsafe)
        meta = _metadata(path, obj)
        state = _state_dict(obj)
    name = model_name or meta.get("model")
    if not name:
        raise UserError("cannot tell which model the checkpoint holds; pass --model NAME")
    if state is not None:
        if "fc.weight" in state:
            kwargs.setdefault("num_classes", state["fc.weight"].shape[0])
        if "conv1.weight" in state:
            kwargs.setdefault("in_chans", state["conv1.weight"].shape[1])
    model = create_model(name, **kwargs)
    if state is not None:
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise UserError(
                f"the checkpoint does not fit {name}: missing {missing[:5]}, unexpected {unexpected[:5]}; "
                "pass the right --model"
            )
    meta["model"] = name
    return model.eval(), meta


def find_images(paths: Sequence[str | Path]) -> list[Path]:
    """Image files from files and folders (folders searched recursively, sorted)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            found.append(p)
        else:
            raise UserError(f"no such image or folder: {p}")
    if not found:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {', '.join(map(str, paths))}")
    return found


def load_images(
    files: Sequence[Path], in_chans: int, img_size: int, mean: Sequence[float], std: Sequence[float]
) -> tuple[torch.Tensor, np.ndarray]:
    """``(normalised batch (B, C, S, S), display images (B, S, S, 3) in [0, 1])``; resize + center crop."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import functional as TF

    batch, shown = [], []
    for f in files:
        try:
            img = Image.open(f).convert("L" if in_chans == 1 else "RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"cannot read image {f}: {exc}") from None
        img = TF.center_crop(TF.resize(img, img_size, interpolation=TF.InterpolationMode.BICUBIC), img_size)
        x = TF.to_tensor(img)
        if in_chans not in (1, 3):
            x = x.mean(0, keepdim=True).expand(in_chans, -1, -1)
        rgb = x[:3] if x.shape[0] >= 3 else x[:1].expand(3, -1, -1)
        shown.append(rgb.permute(1, 2, 0).numpy())
        m = torch.tensor(list(mean) * (in_chans if len(mean) == 1 else 1))[:in_chans, None, None]
        s = torch.tensor(list(std) * (in_chans if len(std) == 1 else 1))[:in_chans, None, None]
        batch.append((x - m) / s)
    return torch.stack(batch), np.stack(shown).astype(np.float32)


def explain(
    model: nn.Module,
    files: Sequence[Path],
    output: str | Path,
    block: str = "layer2.0",
    *,
    target_class: int | None = None,
    img_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Grad-CAM figures for ``block`` (one PNG per image under ``output/gradcam/``) and, for a BA model,
    gate statistics (``gate_stats.json``, ``selection_weights.png``, ``gate_distribution.png``).

    Returns the ``explain.json`` content (written too).
    """
    _require_gradcam()
    output = Path(output)
    (output / "gradcam").mkdir(parents=True, exist_ok=True)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    in_chans = int(getattr(model, "in_chans", 3) or 3)
    img_size = int(img_size or cfg.get("input_size", (3, 224, 224))[-1])
    mean = tuple(mean or cfg.get("mean", (0.5,)))
    std = tuple(std or cfg.get("std", (0.5,)))
    model.eval()
    report: dict[str, Any] = {"block": block, "img_size": img_size, "mean": list(mean), "std": list(std),
                              "images": []}
    all_inputs = []
    for start in range(0, len(files), batch_size):
        chunk = list(files[start:start + batch_size])
        x, shown = load_images(chunk, in_chans, img_size, mean, std)
        all_inputs.append(x)
        cams, classes = block_gradcam(model, x, block, target_class)
        for i, f in enumerate(chunk):
            label = class_names[classes[i]] if class_names and classes[i] < len(class_names) else str(classes[i])
            png = output / "gradcam" / f"{start + i:04d}_{f.stem}.png"
            size = save_gradcam_figure(shown[i], {k: v[i] for k, v in cams.items()}, png,
                                       title=f"{f.name}: Grad-CAM for class {label}, block {block}")
            report["images"].append({"file": str(f), "class": classes[i], "figure": str(png), "size": list(size)})
    has_bridge = any(type(m).__name__ == "BridgeAttention" for m in model.modules())
    if has_bridge:
        stats = gate_statistics(model, torch.cat(all_inputs))
        write_json(output / "gate_stats.json", stats)
        report["gate_stats"] = str(output / "gate_stats.json")
        report["gate_plots"] = [str(p) for p in plot_gate_statistics(stats, output)]
    write_json(output / "explain.json", report)
    return report
