"""Streaming shards: ``wds:LOCATION`` (a folder, or a URL prefix webdataset's ``gopen`` opens) -> datasets, each
epoch split exactly over ranks x loader workers. Layout, checks and failure handling: docs/data.md."""
from __future__ import annotations

import io
import json
import logging
import math
import random
import re
from collections import deque
from collections.abc import Iterator
from itertools import islice
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info
from torchvision.transforms.v2.functional import pil_to_tensor

from ..errors import UserError
from .config import DataConfig, DataInfo, data_info
from .images import load_image
from .transforms import Transform, make_transform

META = "shards.json"
FORMAT = "bridgeattn-shards/1"
SPLITS = ("train", "val")
SHUFFLE_BUFFER = 1000  # samples (still encoded) a worker mixes before yielding
STAND_INS = 64  # the last samples a worker keeps to stand in for those of a shard that fails while streaming
_WDS_META = r"__[^/]*__($|/)"  # webdataset's default ``skip_meta``
log = logging.getLogger(__name__)


def _wds():
    try:
        import webdataset
    except ModuleNotFoundError:
        raise UserError("wds: data sets need the webdataset package: pip install 'bridgeattn[shards]'") from None
    return webdataset


def _join(location: str, name: str) -> str:
    return f"{location.rstrip('/')}/{name}"


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_meta(location: str) -> dict[str, Any]:
    """The ``shards.json`` of a shard set (a folder, or a URL prefix webdataset can open), checked (docs/data.md)."""
    try:
        with _wds().gopen(_join(location, META), "rb") as f:
            meta = json.loads(f.read())
    except (OSError, ValueError) as exc:
        raise UserError(f"wds:{location}: no readable {META} ({exc}); write shards with `bridgeattn shard`") from None
    where = f"wds:{location}: {META}"
    if meta.get("format") != FORMAT:
        raise UserError(f"{where} is not a bridgeattn shard set (format {meta.get('format')!r})")
    classes = meta.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise UserError(f"{where}: 'classes' must list at least one class name")
    for split in SPLITS:
        part = meta.get(split)
        names, counts = (part.get("shards"), part.get("counts")) if isinstance(part, dict) else (None, None)
        if not (isinstance(names, list) and isinstance(counts, list) and len(names) == len(counts)
                and all(map(_count, counts)) and sum(counts) > 0):
            raise UserError(f"{where}: '{split}' needs its shard names and as many sample counts (whole numbers "
                            ">= 0, not all 0)")
        for name in names:  # joined to the location: no way out of it (absolute, .., a URL scheme of its own)
            path = PurePosixPath(name) if isinstance(name, str) else None
            if path is None or not name or path.is_absolute() or ".." in path.parts or ":" in name or "\\" in name:
                raise UserError(f"{where}: shard name {name!r} is not a file name inside the shard folder")
        sizes = part.get("bytes")
        if sizes is not None and not (isinstance(sizes, list) and len(sizes) == len(names) and all(map(_count, sizes))):
            raise UserError(f"{where}: '{split}' bytes must give one size per shard")
        if part.get("samples", sum(counts)) != sum(counts):
            raise UserError(f"{where}: '{split}' says {part['samples']} samples, its counts add up to {sum(counts)}")
    return meta


def _header(block: bytes) -> tuple[str, int, bytes]:
    """(name, data size, type flag) of a tar header block; ``ValueError`` when its size or checksum field is not
    octal (the checksum itself is left to the streaming reader: computing it triples the cost of the walk)."""
    int(block[148:156].strip(b"\0 "), 8)
    name = block[:100].split(b"\0", 1)[0]
    if block[257:263] == b"ustar\0" and block[345] != 0:  # POSIX (not GNU): a long name split into prefix/name
        name = block[345:500].split(b"\0", 1)[0] + b"/" + name
    return name.decode("utf-8", "surrogateescape"), int(block[124:136].strip(b"\0 ") or b"0", 8), block[156:157]


def tar_labels(path: Path) -> list[int | None]:
    """The ``.cls`` label of each sample (grouped as webdataset does) in the tar ``path``, from its headers and ``.cls``
    members only: None where there is none, -1 where it is no number; ``ValueError`` for an incomplete tar."""
    size, offset, long_name, key = path.stat().st_size, 0, None, None
    labels: list[int | None] = []
    with open(path, "rb") as f:
        while True:
            f.seek(offset)
            block = f.read(512)
            if len(block) < 512:
                raise ValueError(f"no end-of-archive marker at byte {offset}: cut short")
            if block == bytes(512):
                return labels
            try:
                name, length, kind = _header(block)
            except ValueError as exc:
                raise ValueError(f"bad tar header at byte {offset} ({exc})") from None
            start, offset = offset + 512, offset + 512 + -(-length // 512) * 512
            if start + length > size:
                raise ValueError(f"{name} runs past the end of the file: cut short")
            if kind in (b"L", b"x"):  # the next member's name: GNU long name, or a pax "LEN path=NAME\n" record
                data = f.read(length)
                records = [r.partition(b" ")[2] for r in data.split(b"\n")] if kind == b"x" else [b"path=" + data]
                found = [r[5:].rstrip(b"\0") for r in records if r.startswith(b"path=")]
                long_name = found[0].decode("utf-8", "surrogateescape") if found else long_name
                continue
            name, long_name = long_name or name, None
            dot, ext = name.rpartition("/")[2].partition(".")[1:]  # webdataset: key.ext, ext lowercased
            if kind not in (b"0", b"\0") or not dot or re.match(_WDS_META, name):
                continue  # not a regular file with an extension, or what webdataset skips as metadata
            if name[: len(name) - len(ext) - 1] != key:
                key = name[: len(name) - len(ext) - 1]
                labels.append(None)
            if ext.lower() == "cls":
                text = f.read(length).strip()
                labels[-1] = int(text) if text.lstrip(b"-").isdigit() else -1


# (path, size, mtime) of the shards checked in this process: a comparison reads one set in every cell.
_CHECKED: set[tuple[str, int, int]] = set()


def check_shards(location: str, meta: dict[str, Any]) -> None:
    """``UserError`` naming the first shard of a local shard folder that does not match ``shards.json``."""
    classes = len(meta["classes"])
    for split in SPLITS:
        part = meta[split]
        for i, (name, count) in enumerate(zip(part["shards"], part["counts"])):
            path = Path(location) / name
            where = f"wds:{location}: {split} shard {name}"
            if not path.is_file():
                raise UserError(f"{where} is missing")
            stat = path.stat()
            if part.get("bytes") and stat.st_size != part["bytes"][i]:
                raise UserError(f"{where} is {stat.st_size} bytes, {META} says {part['bytes'][i]}: cut short or "
                                "replaced; write the shards again")
            stamp = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
            if not name.endswith(".tar") or stamp in _CHECKED:  # compressed tars are checked while streaming
                continue
            try:
                labels = tar_labels(path)
            except (OSError, ValueError) as exc:
                raise UserError(f"{where} is damaged: {exc}; write the shards again") from None
            if len(labels) != count:
                raise UserError(f"{where} holds {len(labels)} samples, {META} says {count}")
            bad = next((i for i, label in enumerate(labels) if label is None or not 0 <= label < classes), None)
            if bad is not None:
                raise UserError(f"{where}: sample {bad} has {'no' if labels[bad] is None else 'a bad'} .cls label "
                                f"({labels[bad]}), not a class index below {classes}")
            _CHECKED.add(stamp)


def _segments(urls: list[str], counts: list[int], order: list[int], lo: int, hi: int) -> list[tuple[str, int, int]]:
    """Positions ``lo <= p < hi`` of the sequence of shards in ``order`` (wrapping around) as ``(shard url, start,
    stop)``: its samples ``start <= i < stop``."""
    segments = []
    p = 0  # position of the shard's first sample
    while p < hi:
        for i in order:
            start, stop = max(lo, p), min(hi, p + counts[i])
            if start < stop:
                segments.append((urls[i], start - p, stop - p))
            p += counts[i]
    return segments


def _share(lo: int, hi: int, i: int, parts: int) -> tuple[int, int]:
    """Part ``i`` of ``range(lo, hi)`` cut into ``parts`` contiguous parts of near-equal size."""
    return lo + i * (hi - lo) // parts, lo + (i + 1) * (hi - lo) // parts


class ShardSet(IterableDataset):
    """One split of a shard set. Iterated plainly it yields ``(image tensor, label)`` once each, split over the
    loader's workers (evaluation); ``ShardBatches`` gives the exact per-rank, per-worker training stream."""

    def __init__(self, location: str, meta: dict[str, Any], split: str, transform: Transform, mode: str,
                 tensor_input: bool, subset: int | None = None) -> None:
        self.location, self.split, self.transform, self.mode = location, split, transform, mode
        self.tensor_input = tensor_input
        self.classes = list(meta["classes"])
        self.urls = [_join(location, name) for name in meta[split]["shards"]]
        self.counts = list(meta[split]["counts"])
        if subset is not None:  # the first ``subset`` samples in stored order
            self.counts = [max(0, min(c, subset - sum(self.counts[:i]))) for i, c in enumerate(self.counts)]

    def __len__(self) -> int:
        return sum(self.counts)

    def _raw(self, lo: int, hi: int, order_seed: str | None = None) -> Iterator[dict[str, Any] | None]:
        """The encoded samples at positions ``lo <= p < hi`` of the shards in stored order, or in an order seeded by
        ``order_seed`` (webdataset's tar reader; skipped samples not decoded). A shard that fails or ends early loses
        the rest of its segment, with a warning: None for each lost sample."""
        order = [i for i, c in enumerate(self.counts) if c]
        if order_seed is not None:
            random.Random(order_seed).shuffle(order)
        for url, start, stop in _segments(self.urls, self.counts, order, lo, hi):
            got, problem = 0, "it ends early"
            try:
                for sample in islice(_wds().tariterators.tarfile_samples(iter([{"url": url}])), start, stop):
                    got += 1
                    yield sample
            except Exception as exc:  # tarfile, gopen and network errors come in many types
                problem = f"{type(exc).__name__}: {str(exc)[:200]}"
            if got < stop - start:
                log.warning("wds: %s: read %d of the %d samples asked for (%s); skipping the rest of this shard "
                            "this epoch, earlier samples stand in for them", url, got, stop - start, problem)
                yield from [None] * (stop - start - got)

    def load(self, sample: dict[str, Any]) -> tuple[torch.Tensor, int]:
        """A raw webdataset sample (``{"__key__", EXT: bytes, "cls": bytes}``) -> (transformed image, label)."""
        ext = next(k for k in sample if not k.startswith("__") and k != "cls")
        img, label = load_image(io.BytesIO(sample[ext]), self.mode), int(sample["cls"])
        if not 0 <= label < len(self.classes):
            raise UserError(f"wds: {sample.get('__url__')}: sample {sample.get('__key__')} has label {label}, not a "
                            f"class index below {len(self.classes)}")
        return self.transform(pil_to_tensor(img) if self.tensor_input else img), label

    def items(self, stream: Iterator[dict[str, Any] | None]) -> Iterator[tuple[torch.Tensor, int]]:
        """``load`` of each sample; a lost (None) or undecodable one is stood in for by one of the last ``STAND_INS``
        readable ones (the previous one first; at the start, the next one): the stream keeps its planned length."""
        recent: deque[dict[str, Any]] = deque(maxlen=STAND_INS)
        owed = 0
        for sample in stream:
            try:
                item = None if sample is None else self.load(sample)
            except UserError:
                raise
            except Exception as exc:  # PIL reports broken images with many exception types
                log.warning("wds: %s: skipping unreadable sample %s (%s)", sample.get("__url__"),
                            sample.get("__key__"), exc)
                item = None
            if item is None:
                owed += 1
            else:
                recent.append(sample)
                yield item
            while owed and recent:
                owed -= 1
                yield self.load(recent[-1 - owed % len(recent)])
        if owed:
            raise UserError(f"wds:{self.location}: no readable sample in the {self.split} shards this loader read")

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        worker = get_worker_info()
        wid, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        yield from self.items(self._raw(*_share(0, len(self), wid, workers)))


class ShardBatches(IterableDataset):
    """This rank's batches of a ``ShardSet`` for one epoch (``set_epoch``), for ``DataLoader(batch_size=None)``:
    training takes ``ceil(N / world)`` samples per rank in whole batches, evaluation ``N / world`` (docs/data.md)."""

    def __init__(self, shards: ShardSet, batch_size: int, rank: int = 0, world_size: int = 1, workers: int = 0,
                 train: bool = False, seed: int = 0) -> None:
        self.shards, self.batch_size, self.rank, self.world_size = shards, batch_size, rank, world_size
        self.workers, self.train, self.seed = max(1, workers), train, seed
        # shared memory, so persistent loader workers see the epoch set in the main process
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = epoch

    def _worker_range(self, wid: int) -> tuple[int, int]:
        """Positions (in the epoch's sequence) that worker ``wid`` of ``self.workers`` reads."""
        n = len(self.shards)
        if self.train:  # whole batches: the tail that does not fill one is left out (drop_last)
            per_rank = math.ceil(n / self.world_size)
            first, last = _share(0, per_rank // self.batch_size, wid, self.workers)
            return self.rank * per_rank + first * self.batch_size, self.rank * per_rank + last * self.batch_size
        return _share(*_share(0, n, self.rank, self.world_size), wid, self.workers)

    def __len__(self) -> int:
        return sum(math.ceil((b - a) / self.batch_size) for a, b in map(self._worker_range, range(self.workers)))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        worker = get_worker_info()
        wid, count = (worker.id, worker.num_workers) if worker else (0, 1)
        if count != self.workers:
            raise RuntimeError(f"built for {self.workers} loader workers, iterated by {count}")
        epoch, wds = int(self._epoch[0]), _wds()
        stream = self.shards._raw(*self._worker_range(wid), order_seed=f"{self.seed}/{epoch}" if self.train else None)
        if self.train:
            seed = np.random.SeedSequence([self.seed, epoch, self.rank, wid]).generate_state(2)
            torch.manual_seed(int(seed[0]) << 32 | int(seed[1]))  # augmentation
            stream = wds.shuffle(SHUFFLE_BUFFER, SHUFFLE_BUFFER // 10, rng=random.Random(int(seed[0])))(stream)
        yield from wds.batched(self.batch_size, collation_fn=default_collate)(self.shards.items(stream))


def shard_loader(shards: ShardSet, batch_size: int, rank: int, world_size: int, train: bool, seed: int,
                 options: dict[str, Any]) -> DataLoader:
    """A DataLoader over this rank's batches of ``shards``; ``options`` as from ``loader_options``."""
    batches = ShardBatches(shards, batch_size, rank, world_size, options.get("num_workers", 0), train, seed)
    return DataLoader(batches, batch_size=None, **options)


def shard_datasets(cfg: DataConfig, location: str) -> tuple[ShardSet, ShardSet, DataInfo]:
    """Train and val ``ShardSet``s of ``wds:LOCATION`` with the recipe's transforms."""
    meta = read_meta(location)
    if Path(location).is_dir():
        check_shards(location, meta)
    pre = meta["preprocessing"]
    own = pre["img_size"], pre["in_chans"], (tuple(pre["mean"]), tuple(pre["std"]))
    info = data_info(cfg, f"wds:{meta['name']}", meta["classes"], own, META)
    tensor_input = meta.get("kind") == "tensor"  # small images held as tensors at the source: the tensor pipeline
    mode = "L" if (pre["in_chans"] if tensor_input else info.in_chans) == 1 else "RGB"
    native = (pre["img_size"], pre["in_chans"]) if tensor_input else None  # the stored tensors' shape
    sets = []
    for split, train, subset in (("train", True, cfg.train_subset), ("val", False, cfg.val_subset)):
        transform = make_transform(cfg, train, info, native)
        sets.append(ShardSet(location, meta, split, transform, mode, tensor_input, subset))
    return sets[0], sets[1], info
