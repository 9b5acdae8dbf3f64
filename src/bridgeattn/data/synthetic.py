"""A tiny, deterministic, learnable data set for tests and smoke runs: 10 classes of noisy colour templates."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .memory import Split

NUM_CLASSES = 10
NATIVE_SIZE = 32
CLASSES = [f"class{i}" for i in range(NUM_CLASSES)]
# Per-channel mean/std of the generated pixels (templates around 0.5, noise std 0.2), close enough to normalise.
STATS = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _templates() -> torch.Tensor:
    """``(10, 3, 32, 32)`` float templates in [0.1, 0.9]: a colour plus a smooth spatial pattern per class."""
    gen = torch.Generator().manual_seed(0)
    colour = torch.rand(NUM_CLASSES, 3, 1, 1, generator=gen) - 0.5
    coarse = torch.rand(NUM_CLASSES, 3, 4, 4, generator=gen) - 0.5
    pattern = F.interpolate(coarse, size=NATIVE_SIZE, mode="bilinear", align_corners=False)
    return (0.5 + 0.4 * colour + 0.6 * pattern).clamp(0.1, 0.9)


def make_split(n: int, seed: int) -> Split:
    """``n`` samples: uint8 images ``(n, 3, 32, 32)`` (class template plus noise of std 0.2, seeded with ``seed``)
    and labels ``(n,)`` cycling through the classes."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % NUM_CLASSES
    noise = 0.2 * torch.randn(n, 3, NATIVE_SIZE, NATIVE_SIZE, generator=gen)
    images = (_templates()[labels] + noise).clamp(0, 1)
    return (images * 255).round().to(torch.uint8), labels


def make_synthetic(n_train: int) -> tuple[Split, Split, list[str]]:
    """Train split of ``n_train`` samples, a val split of ``max(1, n_train // 4)`` samples, and the class names."""
    return make_split(n_train, seed=1), make_split(max(1, n_train // 4), seed=2), CLASSES
