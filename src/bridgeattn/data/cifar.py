"""CIFAR-10/100 from the python-pickle release under a local root, read by torchvision, held in memory."""
from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets import CIFAR10, CIFAR100

from ..errors import UserError
from .memory import Split


def load_cifar(kind: str, path: str) -> tuple[Split, Split, list[str]]:
    """``((train images (50000, 3, 32, 32) uint8, labels), (test images, labels), class names)`` from the folder
    holding ``cifar-10-batches-py`` / ``cifar-100-python`` (or that folder itself), MD5-checked by torchvision."""
    cls = CIFAR10 if kind == "cifar10" else CIFAR100
    root = Path(path).expanduser()
    if root.name == cls.base_folder:
        root = root.parent
    folder = root / cls.base_folder
    names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise UserError(f"{kind}:{path}: expected the python release layout {folder}/{{{', '.join(names)}}}; "
                        f"missing {', '.join(missing)}. Unpack {cls.filename} from {cls.url} into {root}")
    try:
        splits = [cls(str(root), train=train, download=False) for train in (True, False)]
    except RuntimeError as err:
        raise UserError(f"{kind}:{path}: files in {folder} do not match the official release ({err}); "
                        f"unpack a fresh copy of {cls.url}") from None
    out = [(torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.as_tensor(ds.targets)) for ds in splits]
    return out[0], out[1], list(splits[0].classes)
