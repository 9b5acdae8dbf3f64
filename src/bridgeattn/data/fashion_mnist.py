"""Fashion-MNIST from local IDX files (``$BRIDGEATTN_FASHION_MNIST_DIR``, then ``/usr/share/datasets/fashion-mnist``)
or torchvision's download; gz files are decompressed once into the cache (docs/data.md)."""
from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
import zlib
from pathlib import Path

from torchvision.datasets import FashionMNIST

from ..errors import UserError
from ..files import atomic_write, cache_dir
from .memory import Split

ENV_DIR = "BRIDGEATTN_FASHION_MNIST_DIR"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
HOW_TO_GET = ("install the Debian package (sudo apt-get install dataset-fashion-mnist; files in "
              f"/usr/share/datasets/fashion-mnist), or set {ENV_DIR} to a folder holding "
              f"{', '.join(f + '.gz' for f in FILES)}, or allow the download (torchvision fetches them into the cache)")


def _find_files(folder: Path) -> dict[str, Path] | None:
    """``{raw name: path}`` of the four IDX files (gz or raw) in ``folder`` or its torchvision subfolders."""
    for candidate in (folder, folder / "FashionMNIST" / "raw", folder / "raw"):
        found = {name: next((p for p in (candidate / name, candidate / f"{name}.gz") if p.is_file()), None)
                 for name in FILES}
        if None not in found.values():
            return found
    return None


def _prepared_root(files: dict[str, Path]) -> Path:
    """A torchvision root (``ROOT/FashionMNIST/raw/<raw files>``): the source itself when it already is one,
    else a folder in the cache keyed by the source files, filled once."""
    raw_dir = files[FILES[0]].parent  # of all four
    if raw_dir.parts[-2:] == ("FashionMNIST", "raw") and all(p.suffix != ".gz" for p in files.values()):
        return raw_dir.parent.parent
    stamps = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files.values())
    root = cache_dir() / "fashion-mnist" / hashlib.sha1(stamps.encode()).hexdigest()[:16]
    raw = root / "FashionMNIST" / "raw"
    try:
        raw.mkdir(parents=True, exist_ok=True)
        for name, src in files.items():
            if not (raw / name).is_file():  # written atomically: concurrent DDP ranks never see a half-written file
                with gzip.open(src) if src.suffix == ".gz" else open(src, "rb") as inp:
                    atomic_write(raw / name, functools.partial(shutil.copyfileobj, inp))
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:  # BadGzipFile is an OSError: caught first
        raise UserError(f"{src} is damaged ({err}); {HOW_TO_GET}") from None
    except OSError as err:
        raise UserError(f"cannot prepare Fashion-MNIST in the cache {cache_dir()} ({err}); set BRIDGEATTN_CACHE_DIR "
                        "to a writable folder") from None
    return root


def _read(root: Path, where: str) -> tuple[Split, Split, list[str]]:
    try:
        splits = [FashionMNIST(str(root), train=train, download=False) for train in (True, False)]
    except (AssertionError, ValueError, TypeError, RuntimeError, OSError, EOFError) as err:
        raise UserError(f"the Fashion-MNIST files in {where} cannot be read as IDX files ({err}); "
                        f"{HOW_TO_GET}") from None
    # torchvision checks that images are (N, H, W) and labels (N',); not that N == N' > 0
    out = [(ds.data.unsqueeze(1).contiguous(), ds.targets.long()) for ds in splits]
    for images, labels in out:
        if len(images) != len(labels) or len(images) == 0:
            raise UserError(f"the Fashion-MNIST files in {where} are inconsistent: {len(images)} images, "
                            f"{len(labels)} labels")
    return out[0], out[1], list(FashionMNIST.classes)


def load_fashion_mnist(download: bool = True) -> tuple[Split, Split, list[str]]:
    """``((train images (60000, 1, 28, 28) uint8, labels), (test images, labels), class names)``."""
    env = os.environ.get(ENV_DIR)
    folder = Path(env) if env else SYSTEM_DIR
    files = _find_files(folder)
    if env and files is None:
        raise UserError(f"{ENV_DIR}={env} does not hold the Fashion-MNIST IDX files; {HOW_TO_GET}")
    if files is not None:
        return _read(_prepared_root(files), str(folder))
    download_root = cache_dir() / "fashion-mnist" / "download"
    if _find_files(download_root) is None:
        if not download:
            raise UserError(f"Fashion-MNIST not found and downloads are off; {HOW_TO_GET}")
        try:
            FashionMNIST(str(download_root), download=True)  # fetches both splits' files
        except Exception as err:  # network errors come in many types; the advice is the same
            raise UserError(f"Fashion-MNIST not found locally and the download failed ({err}); {HOW_TO_GET}") from None
    return _read(download_root, str(download_root))
