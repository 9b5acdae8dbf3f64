"""Checking and opening image files: which files are readable, and any PIL mode -> RGB or L."""
from __future__ import annotations

import os
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

# Resizing the short side to img_size makes the long side img_size x the aspect ratio: bounded (docs/data.md).
MAX_ASPECT = 32


class UnboundedImage(ValueError):
    """An image whose decoded or resized size has no useful bound."""


def check_size(img: Image.Image) -> None:
    """``UnboundedImage`` for more pixels than PIL's ``Image.MAX_IMAGE_PIXELS`` or sides over ``MAX_ASPECT``:1 apart
    (read from the header, before any decoding)."""
    w, h = img.size
    limit = Image.MAX_IMAGE_PIXELS
    if limit and w * h > limit:
        raise UnboundedImage(f"too large: {w}x{h} pixels, more than PIL.Image.MAX_IMAGE_PIXELS ({limit})")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise UnboundedImage(f"extreme aspect ratio: {w}x{h} pixels (at most {MAX_ASPECT}:1)")


def check_image(path: str | Path) -> str | None:
    """``None`` if ``path`` is a readable image, else a short reason (``"empty file"``, ``"truncated"``, ...).
    PNGs are read with their CRCs, JPEGs decoded only when they lack the end marker, others decoded (docs/data.md)."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file"
        with Image.open(path) as img:
            fmt = img.format
            check_size(img)
            img.verify()
        if fmt == "JPEG":
            with open(path, "rb") as f:
                f.seek(max(0, size - 2))
                if f.read(2) == b"\xff\xd9":  # JPEG's end marker: a file without it is most often cut short
                    return None
        if fmt != "PNG":
            with Image.open(path) as img:
                img.load()
    except Image.UnidentifiedImageError:
        return "not an image"
    except UnboundedImage as err:
        return str(err)
    except Exception as err:  # PIL reports broken files with many exception types
        return f"{'truncated' if 'truncated' in str(err).lower() else 'unreadable'}: {type(err).__name__}: {err}"
    return None


def to_mode(img: Image.Image, mode: str) -> Image.Image:
    """``img`` as ``mode`` ("RGB" or "L"): transparency is composited on white, 16-bit is scaled, not clipped."""
    if img.mode.startswith("I;16"):
        return Image.fromarray((np.asarray(img, dtype=np.float32) / 257).round().astype(np.uint8)).convert(mode)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img if img.mode == mode else img.convert(mode)


def load_image(path: str | IO[bytes], mode: str = "RGB") -> Image.Image:
    """Open ``path`` (or a binary file) as a PIL image in ``mode``: grayscale, CMYK, RGBA, palette and 16-bit images
    are converted; ``UnboundedImage`` as in ``check_size``."""
    with Image.open(path) as img:
        check_size(img)
        img.load()
        return to_mode(img, mode)
