"""Image folders in the ImageNet layout (``ROOT/train/<class>/...``, ``ROOT/val/<class>/...``), every file checked
before training; layout, links, checks and input shape: docs/data.md."""
from __future__ import annotations

import logging
import os
import statistics
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import UserError
from .config import DataConfig, DataInfo, data_info
from .images import check_image, load_image
from .stats import IMAGENET
from .transforms import make_transform

log = logging.getLogger(__name__)
NATIVE_SIZE = 224  # the largest default side: bigger images are resized to it, as timm's models expect
SHAPE_SAMPLE = 32  # images whose sizes and modes give a folder's default input shape
MAX_DEPTH = 32  # folders nested deeper under a class folder are not walked (a bound for pathological trees)
Sample = tuple[str, int]
DirKey = tuple[int, int]


def _visible(names: list[str]) -> list[str]:
    return sorted(n for n in names if not n.startswith("."))


def _dir_key(path: str | Path) -> DirKey | None:
    """``(st_dev, st_ino)`` of the directory ``path`` leads to (through symlinks); None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _class_files(class_dir: Path, walked: set[DirKey], passed: list[str]) -> list[str]:
    """Every non-hidden file under ``class_dir``, sorted, through links to directories not yet ``walked``
    (docs/data.md); the links not followed, and folders deeper than ``MAX_DEPTH``, go to ``passed``."""
    files, top = [], len(class_dir.parts)
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        depth = len(Path(dirpath).parts) - top
        kept = []
        for name in _visible(dirnames):
            path = os.path.join(dirpath, name)
            key = _dir_key(path)
            if key is None or key in walked or depth >= MAX_DEPTH:
                passed.append(path)
                continue
            walked.add(key)
            kept.append(name)
        dirnames[:] = kept
        files += [os.path.join(dirpath, n) for n in _visible(filenames)]
    return sorted(files)


def _class_dirs(split_dir: Path) -> list[str]:
    return _visible([e.name for e in os.scandir(split_dir) if e.is_dir()])


def _check_files(paths: list[str], strict: bool) -> dict[str, str]:
    """``{path: reason}`` for the unreadable files; with ``strict``, a ``UserError`` at the first one (in order)."""
    bad: dict[str, str] = {}
    # Threads overlap the file reads; batches bound the number of pending futures on very large folders.
    with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
        for start in range(0, len(paths), 2048):
            batch = paths[start:start + 2048]
            for path, reason in zip(batch, pool.map(check_image, batch)):
                if reason and strict:
                    raise UserError(f"unreadable image {path} ({reason}); remove it, or turn strict data checking "
                                    "off to skip unreadable files")
                if reason:
                    bad[path] = reason
    return bad


# The last scan of each (split folder, classes, strict) in this process, with the folders' modification times it
# saw: a comparison builds the same folder data set for every cell, and checking every file is the slow part.
_SCANS: dict[tuple[str, tuple[str, ...], bool], tuple[Any, tuple[list[Sample], dict[str, str]]]] = {}


def scan_split(split_dir: Path, classes: list[str], strict: bool) -> tuple[list[Sample], dict[str, str]]:
    """Readable ``(path, class index)`` samples of ``split_dir`` for ``classes``, and the skipped files with reasons;
    reused while no file is added to or removed from a class folder (later damage is caught on loading)."""
    key = (str(split_dir.resolve()), tuple(classes), strict)
    # the modification times of the split and class folders change when a file is added or removed
    folders = sorted((e.name, e.stat().st_mtime_ns) for e in os.scandir(split_dir) if e.is_dir())
    times = split_dir.stat().st_mtime_ns, folders
    if key not in _SCANS or _SCANS[key][0] != times:
        _SCANS[key] = (times, _scan_split(split_dir, classes, strict))
    samples, bad = _SCANS[key][1]
    return list(samples), dict(bad)


def _scan_split(split_dir: Path, classes: list[str], strict: bool) -> tuple[list[Sample], dict[str, str]]:
    names = _class_dirs(split_dir)
    if not names:
        raise UserError(f"{split_dir} holds no class folders; expected {split_dir}/<class name>/<image files>")
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise UserError(f"{split_dir} has classes that train/ lacks: {', '.join(unknown[:10])}"
                        f"{' ...' if len(unknown) > 10 else ''}; every val class needs a train folder")
    # the data set's root, the split and every class folder count as walked before any is entered, so no link
    # leads from one class into another or back up the tree
    tops = [split_dir.parent, split_dir, *(split_dir / name for name in names)]
    walked = {key for key in map(_dir_key, tops) if key is not None}
    passed: list[str] = []
    files = {name: _class_files(split_dir / name, walked, passed) for name in names}
    if passed:
        log.warning("image folder %s: not following %d directory link(s) to folders already walked (or nested "
                    "deeper than %d): %s%s", split_dir, len(passed), MAX_DEPTH, ", ".join(passed[:3]),
                    " ..." if len(passed) > 3 else "")
    empty = [name for name, paths in files.items() if not paths]
    if empty:
        raise UserError(f"empty class folder(s) in {split_dir}: {', '.join(empty[:10])}; add images or remove them")
    bad = _check_files([p for paths in files.values() for p in paths], strict)
    index = {name: i for i, name in enumerate(classes)}
    samples = [(p, index[name]) for name, paths in files.items() for p in paths if p not in bad]
    unreadable = [name for name, paths in files.items() if all(p in bad for p in paths)]
    if unreadable:
        raise UserError(f"no readable image in class folder(s) {', '.join(unreadable[:10])} of {split_dir}")
    return samples, bad


class CheckedImageFolder(Dataset):
    """Items ``(transform(image in mode), class index)`` of checked samples; a file that still fails to decode is
    replaced by the next sample with a warning (with ``strict``, it raises)."""

    def __init__(self, root: Path, samples: list[Sample], classes: list[str], transform: Any,
                 mode: str, strict: bool) -> None:
        self.root, self.samples, self.classes = root, samples, classes
        self.transform, self.mode, self.strict = transform, mode, strict

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        for attempt in range(len(self)):
            path, label = self.samples[(index + attempt) % len(self)]
            try:
                return self.transform(load_image(path, self.mode)), label
            except Exception as err:
                if self.strict:
                    raise UserError(f"unreadable image {path} ({err})") from err
                warnings.warn(f"skipping unreadable image {path} ({err})", stacklevel=2)
        raise UserError(f"no readable image left in {self.root}")


def own_shape(samples: list[Sample]) -> tuple[int, int, str]:
    """``(side, channels, how)`` of a folder's images: the median short side of ``SHAPE_SAMPLE`` evenly spaced
    images (8 to ``NATIVE_SIZE`` px), and 1 channel when all of them are grayscale, else 3 (headers only)."""
    picked = [path for path, _ in _spread(samples, SHAPE_SAMPLE)]
    sides, gray = [], True
    for path in picked:
        try:
            with Image.open(path) as img:
                sides.append(min(img.size))
                gray = gray and (img.mode in ("1", "L", "LA", "I", "F") or img.mode.startswith("I;16"))
        except (OSError, ValueError):  # changed since the check; loading replaces it later
            continue
    side = min(NATIVE_SIZE, max(8, statistics.median_low(sides or [NATIVE_SIZE])))
    return side, 1 if gray else 3, f"{len(picked)} sampled images"


def _spread(samples: list[Sample], n: int | None) -> list[Sample]:
    """``n`` samples evenly spaced over ``samples`` (sorted by class, so the first n would be one class)."""
    if n is None or n >= len(samples):
        return samples
    return [samples[i] for i in torch.linspace(0, len(samples) - 1, n).round().long().tolist()]


def folder_datasets(cfg: DataConfig, path: str, wanted: tuple[str, ...]) -> tuple[Dataset, Dataset, DataInfo]:
    """Train/val datasets from ``path/train`` and ``path/val``; a split left out of ``wanted`` is ``None`` and its
    files are not read (its class folders still name the classes)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UserError(f"folder:{path}: no such folder; expected {path}/train/<class>/... and {path}/val/<class>/...")
    splits = {split: root / split for split in ("train", "val")}
    for split_dir in splits.values():
        if not split_dir.is_dir():
            raise UserError(f"folder:{path}: missing {split_dir}/; expected {path}/train/<class>/<images> and "
                            f"{path}/val/<class>/<images>")
    classes = _class_dirs(splits["train"])
    scans = {split: scan_split(splits[split], classes, cfg.strict) for split in ("train", "val") if split in wanted}
    # from the val images, which evaluation reads too, so that it sees what training saw
    own = (scans.get("val") or scans["train"])[0]
    side, chans, how = own_shape(own) if None in (cfg.img_size, cfg.in_chans) else (0, 0, "")
    info = data_info(cfg, f"folder:{root.name}", classes, (side, chans, IMAGENET), how)
    mode = "L" if info.in_chans == 1 else "RGB"
    sets, skipped = {}, {}
    for split, (samples, bad) in scans.items():
        skipped.update(bad)
        transform = make_transform(cfg, split == "train", info)
        subset = cfg.train_subset if split == "train" else cfg.val_subset
        sets[split] = CheckedImageFolder(splits[split], _spread(samples, subset), classes, transform, mode, cfg.strict)
    if skipped:
        examples = "; ".join(f"{p} ({r})" for p, r in list(skipped.items())[:3])
        log.warning("skipped %d unreadable file(s) in %s: %s%s", len(skipped), root, examples,
                    " ..." if len(skipped) > 3 else "")
    info.skipped = sorted(skipped)
    return sets.get("train"), sets.get("val"), info
