"""Streaming shards: any data set spec -> webdataset tar shards, and ``wds:LOCATION`` -> datasets that read them.

Writing (``write_shards``): ``train-000000.tar``, ... and ``val-000000.tar``, ... with one sample per image
(``KEY.png`` for in-memory data sets, the original file bytes for image folders, and ``KEY.cls``), plus
``shards.json`` beside them: class names, per-shard sample counts and the preprocessing the source uses
(native size, channels, mean, std). Training samples are written in a seeded random order, so a shard holds
a mix of classes.

Reading (``wds:LOCATION``, a folder or a URL prefix that webdataset's ``gopen`` opens: ``https://...``,
``pipe:...``): webdataset streams the tar files; the split of an epoch over ranks and loader workers is exact.
Every epoch the shard order is shuffled (from the seed and the epoch), the samples are numbered through that
order, each rank takes a contiguous slice (padded by wrapping around, like ``DistributedSampler``, so all ranks
take the same number of steps) and each worker a contiguous run of whole batches of it, so every sample is read
once per epoch across ranks x workers and each worker opens only the shards its run touches. Within a worker a
webdataset shuffle buffer mixes the order. Validation is split the same way without shuffling or padding.
"""
from __future__ import annotations

import io
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info

from ..errors import UserError
from .config import DataConfig, DataInfo
from .images import to_mode
from .transforms import Transform, pil_transform, tensor_transform

META = "shards.json"
FORMAT = "bridgeattn-shards/1"
SPLITS = ("train", "val")
SHUFFLE_BUFFER = 1000  # samples (still encoded) a worker mixes before yielding


def _wds():
    try:
        import webdataset
    except ModuleNotFoundError:
        raise UserError("wds: data sets need the webdataset package: pip install 'bridgeattn[shards]'") from None
    return webdataset


# --------------------------------------------------------------------------------------------------- writing

def _join(location: str, name: str) -> str:
    return f"{location.rstrip('/')}/{name}"


def read_meta(location: str) -> dict[str, Any]:
    """The ``shards.json`` of a shard set (a folder, or a URL prefix webdataset can open)."""
    wds = _wds()
    try:
        with wds.gopen(_join(location, META), "rb") as f:
            meta = json.loads(f.read())
    except (OSError, ValueError) as exc:
        raise UserError(f"wds:{location}: no readable {META} ({exc}); write shards with `bridgeattn shard`") from None
    if meta.get("format") != FORMAT:
        raise UserError(f"wds:{location}: {META} is not a bridgeattn shard set (format {meta.get('format')!r})")
    return meta


def decode(sample: dict[str, Any], mode: str) -> tuple[Image.Image, int]:
    """A raw webdataset sample (``{"__key__", EXT: bytes, "cls": bytes}``) -> (PIL image in ``mode``, label)."""
    ext = next(k for k in sample if not k.startswith("__") and k != "cls")
    with Image.open(io.BytesIO(sample[ext])) as img:
        img.load()
        return to_mode(img, mode), int(sample["cls"])


def as_uint8(img: Image.Image) -> torch.Tensor:
    """PIL image -> uint8 ``(C, H, W)``."""
    array = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(array.copy()).reshape(img.height, img.width, -1).permute(2, 0, 1).contiguous()


@dataclass(frozen=True)
class Segment:
    """Samples ``start <= i < stop`` of one shard."""

    url: str
    start: int
    stop: int


def _segments(urls: list[str], counts: list[int], order: list[int], lo: int, hi: int) -> list[Segment]:
    """Positions ``lo <= p < hi`` of the sequence of shards in ``order`` (wrapping around) as shard segments."""
    total = sum(counts[i] for i in order)
    offsets = np.cumsum([0] + [counts[i] for i in order]).tolist()
    segments: list[Segment] = []
    p = lo
    while p < hi:
        q = p % total
        k = int(np.searchsorted(offsets, q, side="right")) - 1
        take = min(hi - p, offsets[k + 1] - q)
        segments.append(Segment(urls[order[k]], q - offsets[k], q - offsets[k] + take))
        p += take
    return segments


class ShardSet(IterableDataset):
    """One split of a shard set. Iterated plainly it yields ``(image tensor, label)`` once each, split over the
    loader's workers (evaluation); ``batches(...)`` gives the exact per-rank, per-worker training stream."""

    def __init__(self, location: str, meta: dict[str, Any], split: str, transform: Transform, mode: str,
                 tensor_input: bool, subset: int | None = None) -> None:
        self.location, self.split, self.transform, self.mode = location, split, transform, mode
        self.tensor_input = tensor_input
        self.classes = list(meta["classes"])
        self.urls = [_join(location, name) for name in meta[split]["shards"]]
        counts = list(meta[split]["counts"])
        if subset is not None:  # the first ``subset`` samples in stored order
            counts = [max(0, min(c, subset - sum(counts[:i]))) for i, c in enumerate(counts)]
        self.counts = counts

    def __len__(self) -> int:
        return sum(self.counts)

    def _order(self, shuffle: bool, seed: int, epoch: int) -> list[int]:
        order = [i for i, c in enumerate(self.counts) if c]
        if shuffle:
            random.Random(f"{seed}/{epoch}").shuffle(order)
        return order

    def _raw(self, segments: list[Segment]) -> Iterator[dict[str, Any]]:
        """The encoded samples of ``segments``, in order (webdataset's tar reader; skipped samples not decoded)."""
        wds = _wds()
        for seg in segments:
            samples = wds.tariterators.tarfile_samples(iter([{"url": seg.url}]))
            for i, sample in enumerate(samples):
                if i >= seg.stop:
                    break
                if i >= seg.start:
                    yield sample

    def load(self, sample: dict[str, Any]) -> tuple[torch.Tensor, int]:
        img, label = decode(sample, self.mode)
        x = as_uint8(img) if self.tensor_input else img
        return self.transform(x), label

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        worker = get_worker_info()
        wid, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        n = len(self)
        lo, hi = wid * n // workers, (wid + 1) * n // workers
        for sample in self._raw(_segments(self.urls, self.counts, self._order(False, 0, 0), lo, hi)):
            yield self.load(sample)

    def batches(self, batch_size: int, rank: int = 0, world_size: int = 1, workers: int = 0, train: bool = False,
                seed: int = 0) -> ShardBatches:
        return ShardBatches(self, batch_size, rank, world_size, max(1, workers), train, seed)


class ShardBatches(IterableDataset):
    """This rank's batches of a ``ShardSet`` for one epoch (``set_epoch``); use with ``DataLoader(batch_size=None)``.

    Training: ``ceil(N / world)`` samples per rank (wrapping around), whole batches only, shuffled shard order and
    a shuffle buffer. Evaluation: ``N / world`` samples per rank in stored order, the last batch may be short.
    """

    def __init__(self, shards: ShardSet, batch_size: int, rank: int, world_size: int, workers: int, train: bool,
                 seed: int) -> None:
        self.shards, self.batch_size, self.rank, self.world_size = shards, batch_size, rank, world_size
        self.workers, self.train, self.seed = workers, train, seed
        # shared memory, so persistent loader workers see the epoch set in the main process
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = epoch

    def _rank_range(self) -> tuple[int, int]:
        n = len(self.shards)
        if self.train:
            per_rank = math.ceil(n / self.world_size)
            return self.rank * per_rank, (self.rank + 1) * per_rank
        return self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size

    def _worker_range(self, wid: int) -> tuple[int, int]:
        """Positions (in the epoch's sequence) that worker ``wid`` of ``self.workers`` reads."""
        lo, hi = self._rank_range()
        if self.train:  # whole batches: the tail that does not fill one is left out (drop_last)
            count = (hi - lo) // self.batch_size
            first, last = wid * count // self.workers, (wid + 1) * count // self.workers
            return lo + first * self.batch_size, lo + last * self.batch_size
        return lo + wid * (hi - lo) // self.workers, lo + (wid + 1) * (hi - lo) // self.workers

    def __len__(self) -> int:
        return sum(math.ceil((b - a) / self.batch_size) for a, b in map(self._worker_range, range(self.workers)))

    def positions(self, wid: int, epoch: int) -> list[Segment]:
        lo, hi = self._worker_range(wid)
        order = self.shards._order(self.train, self.seed, epoch)
        return _segments(self.shards.urls, self.shards.counts, order, lo, hi)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        worker = get_worker_info()
        wid = worker.id if worker else 0
        count = worker.num_workers if worker else 1
        if count != self.workers:
            raise RuntimeError(f"built for {self.workers} loader workers, iterated by {count}")
        epoch = int(self._epoch[0])
        stream: Iterator[dict[str, Any]] = self.shards._raw(self.positions(wid, epoch))
        if self.train:
            seed = np.random.SeedSequence([self.seed, epoch, self.rank, wid]).generate_state(2)
            torch.manual_seed(int(seed[0]) << 32 | int(seed[1]))  # augmentation
            stream = _wds().shuffle(SHUFFLE_BUFFER, SHUFFLE_BUFFER // 10, rng=random.Random(int(seed[0])))(stream)
        batch: list[tuple[torch.Tensor, int]] = []
        for sample in stream:
            batch.append(self.shards.load(sample))
            if len(batch) == self.batch_size:
                yield default_collate(batch)
                batch = []
        if batch:
            yield default_collate(batch)


def shard_loader(shards: ShardSet, batch_size: int, rank: int, world_size: int, train: bool, seed: int,
                 options: dict[str, Any]) -> DataLoader:
    """A DataLoader over this rank's batches of ``shards``; ``options`` as from ``loader_options``."""
    batches = shards.batches(batch_size, rank, world_size, options.get("num_workers", 0), train, seed)
    return DataLoader(batches, batch_size=None, **options)


def shard_datasets(cfg: DataConfig, location: str) -> tuple[ShardSet, ShardSet, DataInfo]:
    """Train and val ``ShardSet``s of ``wds:LOCATION`` with the recipe's transforms."""
    meta = read_meta(location)
    pre = meta["preprocessing"]
    img_size, in_chans = cfg.img_size or pre["img_size"], cfg.in_chans or pre["in_chans"]
    from .stats import adapt_stats

    mean, std = adapt_stats((tuple(pre["mean"]), tuple(pre["std"])), in_chans)
    tensor_input = meta.get("kind") == "tensor"
    mode = "L" if in_chans == 1 else "RGB"
    sets = []
    for split, train, subset in (("train", True, cfg.train_subset), ("val", False, cfg.val_subset)):
        if tensor_input:  # small images held as tensors at the source: the same tensor pipeline
            native_mode = "L" if pre["in_chans"] == 1 else "RGB"
            transform = tensor_transform(cfg, train, pre["img_size"], img_size, in_chans, mean, std)
            sets.append(ShardSet(location, meta, split, transform, native_mode, True, subset))
        else:
            transform = pil_transform(cfg, train, img_size, in_chans, mean, std)
            sets.append(ShardSet(location, meta, split, transform, mode, False, subset))
    info = DataInfo(name=f"wds:{meta['name']}", num_classes=len(meta["classes"]), in_chans=in_chans,
                    img_size=img_size, class_names=list(meta["classes"]), mean=mean, std=std, skipped=[])
    return sets[0], sets[1], info
