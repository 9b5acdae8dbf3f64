"""Where does a block look, and what does its gate do? Grad-CAM (pytorch-grad-cam) of a block's taps (the BAv2
paper's Figure 2) and, for a BA model, its selection weights and gate values: ``bridgeattn explain``."""
from __future__ import annotations

import contextlib
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..data.images import check_image, load_image
from ..data.preprocessing import Preprocessing
from ..engine import plots
from ..errors import UserError
from ..files import check_writable, write_json, write_text
from ..layers.bridge import BridgeAttention, SoftmaxSelection, squeeze_taps
from ..models.cost import training_mode
from ..weights.loading import model_preprocessing

__all__ = ["IMAGE_SUFFIXES", "block_gradcam", "block_taps", "check_output", "explain", "find_images", "gate_statistics",
           "load_images", "save_gradcam_figure"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DEAD_STD = 1e-6  # a gate whose values vary less over images and channels is constant: it attends to nothing
PANEL_INCHES = 2.0
TITLE_INCHES = 0.35
DPI = 100


def _require_gradcam() -> None:
    try:
        import pytorch_grad_cam  # noqa: F401
    except ImportError:
        raise UserError("Grad-CAM needs pytorch-grad-cam: pip install 'bridgeattn[explain]' (grad-cam)") from None


def block_taps(model: nn.Module, block: str) -> tuple[list[tuple[str, nn.Module]], Any]:
    """``([(label, layer)], handle)``: the layers whose outputs are the block's taps, in order: input, the tensors a BA
    block squeezes (``relu(bn1(conv1))``, (``relu(bn2(conv2))``,) the last BN output before the residual add), output.
    ``handle.remove()`` detaches the input probe."""
    try:
        target = model.get_submodule(block)
    except AttributeError:
        blocks = [n for n, m in model.named_modules() if hasattr(m, "conv1") and hasattr(m, "conv2") and n]
        raise UserError(f"no block {block!r} in the model; blocks: {', '.join(blocks)}") from None
    if not (hasattr(target, "conv1") and hasattr(target, "conv2")):
        raise UserError(f"{block!r} is not a residual block (it has no conv1/conv2); pick e.g. 'layer2.0'")
    probe = nn.Identity()  # passes the block's input through, so Grad-CAM can hook it like any layer output
    handle = target.register_forward_pre_hook(lambda _m, args: (probe(args[0]), *args[1:]))
    if hasattr(target, "conv3"):  # bottleneck
        convs = [("conv1", target.act1), ("conv2", target.act2), ("conv3", target.bn3)]
    else:
        convs = [("conv1", target.act1), ("conv2", target.bn2)]
    return [("input", probe), *convs, ("output", target)], handle


def block_gradcam(model: nn.Module, images: torch.Tensor, block: str,
                  target_class: int | None = None) -> tuple[dict[str, np.ndarray], list[int]]:
    """``({tap label: Grad-CAM (B, H, W) in [0, 1]}, explained classes)`` of ``block`` for ``images`` ``(B, C, H, W)``,
    one Grad-CAM per tap (not averaged); the class is the prediction unless ``target_class`` is given."""
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
    with handle:
        for label, layer in taps:
            with GradCAM(model=model, target_layers=[layer]) as cam:
                cams[label] = cam(input_tensor=images, targets=targets)
    return cams, classes


def save_gradcam_figure(image: np.ndarray, cams: dict[str, np.ndarray], path: str | Path,
                        title: str = "") -> tuple[int, int]:
    """One row: the image ``(H, W, 3)`` in [0, 1], then each tap's CAM over it. Returns the PNG's ``(width, height)``:
    ``((1 + len(cams)) * 200, 235)`` px."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    n = 1 + len(cams)
    fig, axes = plots.figure((n * PANEL_INCHES, PANEL_INCHES + TITLE_INCHES), dpi=DPI, ncols=n)
    panels = [("image", (image * 255).astype(np.uint8))]
    panels += [(label, show_cam_on_image(image.astype(np.float32), cam, use_rgb=True)) for label, cam in cams.items()]
    for ax, (label, pixels) in zip(axes, panels):
        ax.imshow(pixels, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=8, y=0.995)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.86, wspace=0.04)
    plots.save(fig, path, dpi=DPI)  # no tight bbox: the size in pixels is exactly figsize * dpi
    return round(n * PANEL_INCHES * DPI), round((PANEL_INCHES + TITLE_INCHES) * DPI)


@torch.no_grad()
def gate_statistics(model: nn.Module, images: torch.Tensor, bins: int = 20) -> dict[str, Any]:
    """Selection weights per block and gate-value distributions per stage of a BA model on ``images`` (docs/compare.md):
    ``blocks``: ``{block: {"selection_weights", "version", "taps", "gate_mean", "gate_std", "dead"}}`` (softmax
    selection: the mean per-sample tap weights; ``dead``: gate std below ``DEAD_STD``); ``stages``: ``{stage: {mean,
    std, min, max, quantiles, histogram}}``; ``summary``: one sentence naming the constant gates."""
    bridges = [(n.rsplit(".", 1)[0], m) for n, m in model.named_modules() if isinstance(m, BridgeAttention)]
    if not bridges:
        raise UserError("the model has no bridge attention; gate statistics need a bav1_/bav2_ model")
    gates: dict[str, torch.Tensor] = {}
    softmax_weights: dict[str, torch.Tensor] = {}
    with contextlib.ExitStack() as hooks, training_mode(model, False):
        for block, ba in bridges:
            def hook(module: nn.Module, args: tuple, out: torch.Tensor, block: str = block) -> None:
                gates[block] = out.flatten(1).float().cpu()
                if isinstance(module.selection, SoftmaxSelection):
                    z = torch.stack([fc(s) for fc, s in zip(module.integration, squeeze_taps(args[0]))], dim=-1)
                    softmax_weights[block] = module.selection.probabilities(z).mean(0).cpu()
            hooks.enter_context(ba.register_forward_hook(hook))
        model(images)
    blocks: dict[str, Any] = {}
    per_stage: dict[str, list[torch.Tensor]] = {}
    for block, ba in bridges:
        g = gates[block]
        a = softmax_weights.get(block, ba.selection_weights())
        std = float(g.std()) if g.numel() > 1 else 0.0
        blocks[block] = {"version": ba.version, "taps": list(ba.in_channels),
                         "selection_weights": None if a is None else [float(v) for v in a],
                         "gate_mean": float(g.mean()), "gate_std": std, "dead": std < DEAD_STD}
        per_stage.setdefault(block.split(".")[0], []).append(g.flatten())
    stages = {}
    for stage, parts in per_stage.items():
        v = torch.cat(parts)
        q = torch.quantile(v, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95]))
        counts, edges = np.histogram(v.numpy(), bins, range=(0, 1))
        stages[stage] = {"count": int(v.numel()), "mean": float(v.mean()),
                         "std": float(v.std()) if v.numel() > 1 else 0.0, "min": float(v.min()), "max": float(v.max()),
                         "quantiles": {k: float(x) for k, x in zip(("5", "25", "50", "75", "95"), q)},
                         "histogram": {"edges": edges.tolist(), "counts": counts.tolist()}}
    dead = [f"{b} = {v['gate_mean']:.2f}" for b, v in blocks.items() if v["dead"]]
    summary = (f"{len(dead)} of {len(blocks)} gates are constant (std < {DEAD_STD:g}): {', '.join(dead)}; a constant "
               "gate scales its block by a fixed factor and attends to nothing" if dead
               else f"all {len(blocks)} gates vary over the images (std >= {DEAD_STD:g})")
    return {"images": int(images.shape[0]), "summary": summary, "blocks": blocks, "stages": stages}


def plot_gate_statistics(stats: dict[str, Any], output: Path) -> list[Path]:
    """``selection_weights.png`` (a_i per block) and ``gate_distribution.png`` (gate values per stage)."""
    written = []
    weights = {b: v["selection_weights"] for b, v in stats["blocks"].items() if v["selection_weights"] is not None}
    if weights:
        n_taps = max(map(len, weights.values()))
        positions = np.arange(len(weights))
        fig, ax = plots.figure((max(6, 0.45 * len(weights) * n_taps), 4), dpi=110)
        width = 0.8 / n_taps
        for i in range(n_taps):
            vals = [tap_weights[i] if i < len(tap_weights) else 0 for tap_weights in weights.values()]
            ax.bar(positions + (i - (n_taps - 1) / 2) * width, vals, width, label=f"a_{i + 1} (conv{i + 1})")
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks(positions, list(weights), rotation=45, ha="right", fontsize=8)
        ax.set(ylabel="selection weight a_i",
               title="BAv2 selection weights per block (which conv outputs the bridge uses)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(plots.save(fig, output / "selection_weights.png"))
    fig, ax = plots.figure((7, 4), dpi=110)
    for stage, s in stats["stages"].items():
        edges = np.array(s["histogram"]["edges"])
        counts = np.array(s["histogram"]["counts"], dtype=float)
        ax.stairs(counts / max(counts.sum(), 1), edges, label=f"{stage} (mean {s['mean']:.2f})")
    ax.set(xlabel="gate value", ylabel="fraction of gate values",
           title=f"gate value distribution per stage ({stats['images']} images)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(plots.save(fig, output / "gate_distribution.png"))
    return written


# What explain writes; an output folder holding any of these belongs to an earlier run.
OUTPUTS = ("explain.json", "gradcam", "gate_stats.json", "selection_weights.png", "gate_distribution.png",
           "skipped_files.txt")


def check_output(output: str | Path, overwrite: bool = False) -> Path:
    """``output`` made ready for a new report: refused (``UserError``) when it holds an earlier one, unless
    ``overwrite``, which removes the earlier report's files (nothing else)."""
    output = check_writable(output, folder=True)
    earlier = [output / name for name in OUTPUTS if (output / name).exists()]
    if earlier and not overwrite:
        raise UserError(f"{output} already holds an explain report ({earlier[0].name}, ...); choose another "
                        "--output, or pass --overwrite to replace it")
    for path in earlier:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    return output


def find_images(paths: Sequence[str | Path]) -> list[Path]:
    """Image files from files and folders (folders searched recursively, sorted)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.is_file():
            found.append(p)
        else:
            raise UserError(f"no such image or folder: {p}")
    if not found:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {', '.join(map(str, paths))}")
    return found


def load_images(files: Sequence[Path],
                preprocessing: Preprocessing) -> tuple[torch.Tensor, np.ndarray, list[Path], dict[str, str]]:
    """``(normalised batch (B, C, H, W), display images (B, H, W, 3) in [0, 1], files read, {skipped: reason})``
    through timm's eval transform for ``preprocessing``; unreadable files are skipped, as training does."""
    transform = preprocessing.transform()
    chans = preprocessing.in_chans
    mean = torch.tensor(preprocessing.mean).view(-1, 1, 1)
    std = torch.tensor(preprocessing.std).view(-1, 1, 1)
    batch, shown, read, skipped = [], [], [], {}
    for f in files:
        reason = check_image(f)
        if reason is None:
            try:
                img = load_image(str(f), mode="L" if chans == 1 else "RGB")
            except Exception as exc:  # PIL reports broken files with many exception types
                reason = f"unreadable: {exc}"
        if reason is not None:
            skipped[str(f)] = reason
            continue
        x = transform(img)
        if x.shape[0] != chans:  # a model with neither 1 nor 3 input channels: repeat the luma plane
            x = x.mean(0, keepdim=True).expand(chans, -1, -1)
        pixels = (x * std + mean).clamp(0, 1)
        shown.append((pixels[:3] if chans >= 3 else pixels[:1].expand(3, -1, -1)).permute(1, 2, 0).numpy())
        batch.append(x)
        read.append(f)
    if not batch:
        return torch.empty(0, *preprocessing.input_size), np.empty((0, *preprocessing.input_size[1:], 3)), [], skipped
    return torch.stack(batch), np.stack(shown).astype(np.float32), read, skipped


def explain(model: nn.Module, files: Sequence[Path], output: str | Path, block: str = "layer2.0", *,
            target_class: int | None = None, img_size: int | None = None, mean: Sequence[float] | None = None,
            std: Sequence[float] | None = None, class_names: Sequence[str] | None = None, batch_size: int = 32,
            overwrite: bool = False) -> dict[str, Any]:
    """Grad-CAM figures for ``block`` (``output/gradcam/``, one PNG per image) and, for a BA model, gate statistics
    (``gate_stats.json``, ``selection_weights.png``, ``gate_distribution.png``); returns ``explain.json``'s content.
    Images are prepared as the model's ``pretrained_cfg`` says, ``img_size``, ``mean`` and ``std`` overriding it;
    unreadable ones are listed in ``skipped_files.txt``."""
    _require_gradcam()
    output = check_output(output, overwrite)
    prep = model_preprocessing(model)
    size = (prep.in_chans, int(img_size), int(img_size)) if img_size else prep.input_size
    prep = Preprocessing.from_dict({**prep.to_dict(), "input_size": size, "mean": mean or prep.mean,
                                    "std": std or prep.std})
    (output / "gradcam").mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"block": block, "img_size": prep.img_size, "mean": list(prep.mean),
                              "std": list(prep.std), "images": [], "skipped": {}}
    all_inputs = []
    for start in range(0, len(files), batch_size):
        x, shown, chunk, skipped = load_images(list(files[start:start + batch_size]), prep)
        report["skipped"].update(skipped)
        if not chunk:
            continue
        all_inputs.append(x)
        cams, classes = block_gradcam(model, x, block, target_class)
        for i, f in enumerate(chunk):
            label = class_names[classes[i]] if class_names and classes[i] < len(class_names) else str(classes[i])
            folder = f.absolute().parent.name  # the class folder of an image-folder data set: kept in both names
            png = output / "gradcam" / f"{len(report['images']):04d}_{folder}_{f.stem}.png"
            why = f"predicted: {label}" if target_class is None else f"target class: {label} (--target-class)"
            size = save_gradcam_figure(shown[i], {k: v[i] for k, v in cams.items()}, png,
                                       title=f"{folder}/{f.name}, {why}; Grad-CAM of block {block}")
            report["images"].append({"file": str(f), "class": classes[i], "figure": str(png), "size": list(size)})
    if not report["images"]:
        example = next(iter(report["skipped"].items()))
        raise UserError(f"none of the {len(files)} image(s) could be read (e.g. {example[0]}: {example[1]})")
    if report["skipped"]:
        write_text(output / "skipped_files.txt", "".join(f"{p}\t{r}\n" for p, r in report["skipped"].items()))
    if any(isinstance(m, BridgeAttention) for m in model.modules()):
        stats = gate_statistics(model, torch.cat(all_inputs))
        write_json(output / "gate_stats.json", stats)
        report.update(gate_stats=str(output / "gate_stats.json"), gate_summary=stats["summary"],
                      gate_plots=[str(p) for p in plot_gate_statistics(stats, output)])
    write_json(output / "explain.json", report)
    return report
