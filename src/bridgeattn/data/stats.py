"""Per-channel statistics of the data sets, and their conversion when the channel count changes."""
from __future__ import annotations

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

Stats = tuple[tuple[float, ...], tuple[float, ...]]

FASHION_MNIST: Stats = ((0.2860,), (0.3530,))
CIFAR10: Stats = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100: Stats = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
IMAGENET: Stats = (tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD))

# ITU-R 601-2 luma, the weights PIL and torchvision use for RGB -> L.
_LUMA = (0.299, 0.587, 0.114)


def adapt_stats(stats: Stats, in_chans: int) -> Stats:
    """Mean/std for ``in_chans`` channels: 1 -> 3 repeats, 3 -> 1 takes the luma-weighted average; none stay none
    (a caller's own datasets, normalised or not by the caller)."""
    mean, std = stats
    if len(mean) in (0, in_chans):
        return stats
    if len(mean) == 1:
        return mean * in_chans, std * in_chans
    return tuple((round(sum(w * x for w, x in zip(_LUMA, values)), 4),) for values in stats)
