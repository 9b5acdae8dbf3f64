"""BA-ResNet backbones in torchvision detection and segmentation models, on a synthetic set (CPU, about a minute).

    python examples/detection.py                          # Faster R-CNN, BA-ResNet-50 + FPN, 64 px images
    python examples/detection.py --task mask-rcnn --model bav2_resnet18
    python examples/detection.py --task segmentation      # DeepLabV3 head on the last stage
    python examples/detection.py --weights run/model.safetensors   # start from your classification weights
    python examples/detection.py --weights resnet18.safetensors --model bav2_resnet18  # from *plain* weights
    python examples/detection.py --model bav2_resnet50.from_a1_in1k --pretrained    # timm's plain ResNet-50

Plain ResNet weights (timm's, or a file of them) warm-start the BA backbone: the gates start as the identity
function, so the backbone computes exactly the plain one's features (docs/warmstart.md) and the gates learn
while the detector trains. A BA checkpoint given the same way loads as it is.

The synthetic images (``synthetic_shapes.py``) are coloured rectangles on noise (the colour gives the class).
The backbone's BatchNorm2d and the bridge gates' BatchNorm1d are frozen (``bridgeattn.freeze_bn``), as
torchvision does for detection backbones, so batches of two images train fine. The script trains a few steps,
prints the losses, then runs inference on held-out images.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from synthetic_shapes import synthetic_detection_set

from bridgeattn.errors import UserError
from bridgeattn.models.detection import create_detector, create_segmentation_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=Path(__file__).name, description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=("faster-rcnn", "mask-rcnn", "segmentation"), default="faster-rcnn")
    p.add_argument("--model", default="bav2_resnet50", help="a bridgeattn ResNet, e.g. bav2_resnet18, bav1_resnet50")
    p.add_argument("--weights", help="weights to start the backbone from: a BA model's, or its plain twin's "
                                     "(.safetensors or .pth), which warm-start the gates")
    p.add_argument("--pretrained", action="store_true",
                   help="timm's plain weights of the model's tag (network), e.g. --model bav2_resnet50.from_a1_in1k")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--classes", type=int, default=3, help="object classes + background")
    p.add_argument("--train-images", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.weights and not Path(args.weights).is_file():  # one line now, not a bare FileNotFoundError later
        p.exit(2, f"{p.prog}: error: --weights {args.weights}: no such file\n")
    return args


def semantic_target(target: dict[str, torch.Tensor], img_size: int) -> torch.Tensor:
    """Per-pixel class map ``(S, S)`` from instance masks (later objects on top)."""
    out = torch.zeros(img_size, img_size, dtype=torch.int64)
    for mask, label in zip(target["masks"], target["labels"]):
        out[mask.bool()] = label
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, train and report; a mistake in the arguments is one line on stderr and exit status 2."""
    args = parse_args(argv)
    try:
        run(args)
    except UserError as exc:  # an unknown --model (with the closest names), weights that do not fit, ...
        print(f"{Path(__file__).name}: error: {exc}", file=sys.stderr)
        return 2
    return 0


def run(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    train_set = synthetic_detection_set(args.train_images, args.img_size, args.classes, seed=args.seed)
    test_set = synthetic_detection_set(2, args.img_size, args.classes, seed=args.seed + 1)
    model_kwargs = {}
    if args.weights:
        model_kwargs = dict(pretrained=True, pretrained_cfg_overlay=dict(file=args.weights))
    elif args.pretrained:
        model_kwargs = dict(pretrained=True)

    if args.task == "segmentation":
        model = create_segmentation_model(args.classes, args.model, head="deeplabv3", **model_kwargs)
    else:
        model = create_detector(
            args.classes, args.model, mask=args.task == "mask-rcnn", min_size=args.img_size, max_size=args.img_size,
            fpn_channels=128, model_kwargs=model_kwargs, box_batch_size_per_image=128,
        )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=1e-4)
    print(f"{args.task} on {args.model}: {sum(p.numel() for p in params) / 1e6:.2f} M trainable parameters")

    model.train()
    start = time.perf_counter()
    for step in range(args.steps):
        i = (step * args.batch_size) % len(train_set)
        batch = (train_set + train_set)[i:i + args.batch_size]
        images = [image for image, _ in batch]
        if args.task == "segmentation":
            labels = torch.stack([semantic_target(t, args.img_size) for _, t in batch])
            losses = {"loss_seg": F.cross_entropy(model(torch.stack(images))["out"], labels)}
        else:
            targets = [t if args.task == "mask-rcnn" else {k: v for k, v in t.items() if k != "masks"}
                       for _, t in batch]
            losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        parts = "  ".join(f"{k}={v.item():.3f}" for k, v in losses.items())
        print(f"step {step + 1:3d}/{args.steps}  loss={loss.item():.3f}  {parts}")
    print(f"trained {args.steps} steps in {time.perf_counter() - start:.1f} s")

    model.eval()
    with torch.no_grad():
        if args.task == "segmentation":
            images = torch.stack([image for image, _ in test_set])
            pred = model(images)["out"].argmax(1)
            truth = torch.stack([semantic_target(t, args.img_size) for _, t in test_set])
            print(f"held-out pixel accuracy: {(pred == truth).float().mean().item():.3f}")
            return
        for (_, target), out in zip(test_set, model([image for image, _ in test_set])):
            print(f"ground truth: {target['labels'].tolist()} at {target['boxes'].round().tolist()}")
            top = out["scores"].argsort(descending=True)[: len(target["labels"])]
            print(f"  top predictions: {out['labels'][top].tolist()} at {out['boxes'][top].round().tolist()}, "
                  f"scores {[round(s, 2) for s in out['scores'][top].tolist()]}")
            if "masks" in out:
                print(f"  masks: {tuple(out['masks'].shape)}")


if __name__ == "__main__":
    sys.exit(main())
