"""Writing a data set as WebDataset tar shards (``bridgeattn shard``); reading them is :mod:`.shards`."""
from __future__ import annotations

import io
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset
from torchvision.transforms.v2.functional import to_pil_image

from ..config import DataConfig
from ..errors import UserError
from ..files import temp_path, write_json
from .build import build_datasets
from .folder import CheckedImageFolder
from .memory import TensorImageDataset
from .shards import FORMAT, META, _wds


def _encoded(dataset: TensorImageDataset | CheckedImageFolder, index: int) -> tuple[str, bytes, int]:
    """(extension, image bytes, label) of sample ``index``: a lossless PNG of a tensor, or the file's own bytes."""
    if isinstance(dataset, TensorImageDataset):
        png = io.BytesIO()
        to_pil_image(dataset.images[index]).save(png, format="PNG")
        return "png", png.getvalue(), int(dataset.targets[index])
    path, label = dataset.samples[index]
    ext = Path(path).suffix.lower().lstrip(".") or "img"
    return ("jpg" if ext == "jpeg" else ext), Path(path).read_bytes(), int(label)


def write_shards(cfg: DataConfig, output: str | os.PathLike[str], shard_size: int = 10_000,
                 seed: int = 0) -> dict[str, Any]:
    """Write the train and val splits of ``cfg.spec`` as tar shards under ``output``; returns the metadata."""
    if shard_size < 1:
        raise UserError(f"--shard-size must be at least 1, got {shard_size}")
    wds = _wds()
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--output {out} exists and is not an empty folder; choose a new one")
    if cfg.spec.startswith("wds:"):
        raise UserError("--data is already a shard set; give the original data set spec")
    train_set, val_set, info = build_datasets(replace(cfg, img_size=None, in_chans=None))  # the images as they are
    pre = {"img_size": info.img_size, "in_chans": info.in_chans, "mean": list(info.mean), "std": list(info.std),
           "interpolation": cfg.interpolation, "crop_pct": cfg.crop_pct}
    meta: dict[str, Any] = {"format": FORMAT, "source": cfg.spec, "name": info.name, "classes": list(info.class_names),
                            "preprocessing": pre, "skipped": list(info.skipped),
                            "kind": "tensor" if isinstance(val_set, TensorImageDataset) else "file"}
    # written into a hidden sibling, renamed into place at the end: a failure (a full disk) leaves no half set
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        for split, dataset in (("train", train_set), ("val", val_set)):
            meta[split] = _write_split(tmp, split, dataset, shard_size, seed, wds)
        write_json(tmp / META, meta)
        os.replace(tmp, out)  # over an empty --output folder too
    except OSError as exc:
        raise UserError(f"cannot write shards to {out}: {exc.strerror or exc}; nothing was kept") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _write_split(out: Path, split: str, dataset: Dataset, shard_size: int, seed: int, wds: Any) -> dict[str, Any]:
    """Write one split as ``out/SPLIT-NNNNNN.tar`` (train shuffled with ``seed``); returns its ``shards.json`` entry."""
    n = len(dataset)
    order = np.random.default_rng(seed).permutation(n).tolist() if split == "train" else list(range(n))
    # no byte limit, so every shard but the last holds shard_size samples
    with wds.ShardWriter(str(out / f"{split}-%06d.tar"), maxcount=shard_size, maxsize=float("inf"), verbose=0) as sink:
        for index in order:
            ext, data, label = _encoded(dataset, index)
            sink.write({"__key__": f"{index:09d}", ext: data, "cls": str(label).encode()})
    counts = [min(shard_size, n - start) for start in range(0, n, shard_size)]
    names = [f"{split}-{i:06d}.tar" for i in range(len(counts))]
    # byte sizes: a reader tells a shard cut short (or replaced) from a stat, before reading it
    return {"samples": n, "shards": names, "counts": counts, "bytes": [(out / name).stat().st_size for name in names]}
