"""A data set held in memory as one uint8 tensor: Fashion-MNIST, CIFAR and the synthetic set."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from .transforms import Transform

Split = tuple[torch.Tensor, torch.Tensor]  # uint8 images (N, C, H, W), labels (N,)


class TensorImageDataset(Dataset):
    """Items ``(transform(images[i]), int(labels[i]))`` from uint8 ``images (N, C, H, W)`` and ``labels (N,)``,
    decoded once: an epoch costs only the tensor transforms."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: list[str], transform: Transform) -> None:
        self.images, self.targets, self.classes, self.transform = images, labels.long(), classes, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), int(self.targets[index])
