"""Synthetic detection data for the detection example and its tests: coloured rectangles on noise."""
from __future__ import annotations

import torch

# Colours of the synthetic classes (1, 2, ...); 0 is the background.
_COLOURS = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])


def synthetic_detection_set(
    num_images: int, img_size: int = 64, num_classes: int = 3, max_objects: int = 3, seed: int = 0
) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Coloured rectangles on noise, in torchvision's detection format.

    Each item: image ``(3, S, S)`` float, target ``{"boxes": (N, 4) xyxy, "labels": (N,) in 1..num_classes-1,
    "masks": (N, S, S) uint8}``. The class sets the colour, so classes are learnable from a few steps.
    """
    if not 2 <= num_classes <= len(_COLOURS) + 1:
        raise ValueError(f"num_classes (with background) must be between 2 and {len(_COLOURS) + 1}")
    g = torch.Generator().manual_seed(seed)
    items = []
    lo, hi = max(4, img_size // 6), max(6, img_size // 2)
    for _ in range(num_images):
        image = torch.randn(3, img_size, img_size, generator=g) * 0.3
        n = int(torch.randint(1, max_objects + 1, (1,), generator=g))
        boxes, labels, masks = [], [], []
        for _ in range(n):
            w, h = (int(v) for v in torch.randint(lo, hi + 1, (2,), generator=g))
            x0 = int(torch.randint(0, img_size - w + 1, (1,), generator=g))
            y0 = int(torch.randint(0, img_size - h + 1, (1,), generator=g))
            label = int(torch.randint(1, num_classes, (1,), generator=g))
            image[:, y0:y0 + h, x0:x0 + w] = _COLOURS[label - 1][:, None, None]
            mask = torch.zeros(img_size, img_size, dtype=torch.uint8)
            mask[y0:y0 + h, x0:x0 + w] = 1
            boxes.append([x0, y0, x0 + w, y0 + h])
            labels.append(label)
            masks.append(mask)
        # Later rectangles cover earlier ones: keep the masks consistent with what is visible.
        for i in range(len(masks) - 1):
            for later in masks[i + 1:]:
                masks[i] = masks[i] * (1 - later)
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.stack(masks),
        }
        items.append((image, target))
    return items
