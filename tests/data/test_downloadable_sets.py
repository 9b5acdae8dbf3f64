"""fashion-mnist and cifar10/cifar100 specs on fake files in tmp_path, and on the real Fashion-MNIST when installed."""
from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10, CIFAR100

from bridgeattn.data import DataConfig, build_datasets
from bridgeattn.data import fashion_mnist as fm
from bridgeattn.errors import UserError


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BRIDGEATTN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(fm.ENV_DIR, raising=False)


def _idx(array: np.ndarray) -> bytes:
    """IDX bytes of a uint8 array (magic: 0x08 = ubyte, then the number of dimensions)."""
    return struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _write_fashion(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = _idx(array)
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return arrays


def test_fashion_mnist_from_env_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    arrays = _write_fashion(tmp_path / "fm")
    monkeypatch.setenv(fm.ENV_DIR, str(tmp_path / "fm"))
    train, val, info = build_datasets(DataConfig("fashion-mnist", recipe="none"))
    assert (len(train), len(val)) == (30, 10)
    assert (info.name, info.num_classes, info.in_chans, info.img_size) == ("fashion-mnist", 10, 1, 28)
    assert info.class_names[0] == "T-shirt/top" and info.mean == (0.2860,)
    x, y = val[3]
    assert x.shape == (1, 28, 28) and y == int(arrays["t10k-labels-idx1-ubyte"][3])
    pixels = (x * info.std[0] + info.mean[0]) * 255
    assert torch.allclose(pixels[0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"][3]).float(), atol=1e-3)
    # Decoded into the cache once, keyed by the source files.
    assert len(list((tmp_path / "cache" / "fashion-mnist").glob("*/FashionMNIST/raw/train-images-idx3-ubyte"))) == 1


def test_fashion_mnist_raw_torchvision_layout_and_resizing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _write_fashion(tmp_path / "tv" / "FashionMNIST" / "raw", gz=False)
    monkeypatch.setenv(fm.ENV_DIR, str(tmp_path / "tv"))
    train, val, info = build_datasets(DataConfig("fashion-mnist", img_size=32, in_chans=3, train_subset=7))
    assert len(train) == 7 and len(val) == 10
    assert train[0][0].shape == val[0][0].shape == (3, 32, 32)
    assert (info.in_chans, info.img_size, info.mean) == (3, 32, (0.2860,) * 3)
    assert not (tmp_path / "cache").exists()  # a torchvision root is read in place


def test_fashion_mnist_unwritable_cache_is_a_user_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _write_fashion(tmp_path / "fm")
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(fm.ENV_DIR, str(tmp_path / "fm"))
    monkeypatch.setenv("BRIDGEATTN_CACHE_DIR", str(tmp_path / "file" / "cache"))
    with pytest.raises(UserError, match="BRIDGEATTN_CACHE_DIR"):
        build_datasets(DataConfig("fashion-mnist"))


def test_fashion_mnist_missing_files_say_how_to_get_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "absent")
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist") as err:
        build_datasets(DataConfig("fashion-mnist", download=False))
    assert fm.ENV_DIR in str(err.value)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(fm.ENV_DIR, str(tmp_path / "empty"))
    with pytest.raises(UserError, match=f"{fm.ENV_DIR}=.*empty"):
        build_datasets(DataConfig("fashion-mnist"))


def test_fashion_mnist_corrupt_files_are_user_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _write_fashion(tmp_path / "fm")
    (tmp_path / "fm" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08\x07junk"))
    monkeypatch.setenv(fm.ENV_DIR, str(tmp_path / "fm"))
    with pytest.raises(UserError, match="cannot be read as IDX"):
        build_datasets(DataConfig("fashion-mnist"))
    gz = (tmp_path / "fm" / "t10k-images-idx3-ubyte.gz")
    gz.write_bytes(gz.read_bytes()[:100])  # a truncated download
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte.gz is damaged"):
        build_datasets(DataConfig("fashion-mnist"))


@pytest.mark.skipif(fm._find_files(fm.SYSTEM_DIR) is None, reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist() -> None:
    train, val, info = build_datasets(DataConfig("fashion-mnist"))
    assert (len(train), len(val), info.num_classes) == (60000, 10000, 10)
    x, y = train[0]
    assert x.shape == (1, 28, 28) and y == 9  # the first training image is an ankle boot
    assert sorted(torch.bincount(val.targets).tolist()) == [1000] * 10


def _write_cifar(root: Path, cls: type, monkeypatch: pytest.MonkeyPatch, n: int = 4) -> None:
    """A fake python-pickle release of ``cls`` under ``root``, with torchvision's checksums patched to match."""
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    label_key, names_key = ("labels", "label_names") if cls is CIFAR10 else ("fine_labels", "fine_label_names")
    rng = np.random.default_rng(0)
    md5 = {}
    for i, (name, _) in enumerate(cls.train_list + cls.test_list):
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), label_key: [(i + k) % 10 for k in range(n)]}
        (folder / name).write_bytes(pickle.dumps(entry))
        md5[name] = hashlib.md5((folder / name).read_bytes()).hexdigest()
    meta = folder / cls.meta["filename"]
    meta.write_bytes(pickle.dumps({names_key: [f"c{i}" for i in range(10 if cls is CIFAR10 else 100)]}))
    monkeypatch.setattr(cls, "train_list", [[n_, md5[n_]] for n_, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n_, md5[n_]] for n_, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": hashlib.md5(meta.read_bytes()).hexdigest()})


@pytest.mark.parametrize("kind,cls,n_train,n_classes", [("cifar10", CIFAR10, 20, 10), ("cifar100", CIFAR100, 4, 100)])
def test_cifar_local_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str, cls: type,
                          n_train: int, n_classes: int) -> None:
    _write_cifar(tmp_path, cls, monkeypatch)
    train, val, info = build_datasets(DataConfig(f"{kind}:{tmp_path}", recipe="none"))
    assert (len(train), len(val)) == (n_train, 4)
    assert (info.name, info.num_classes, info.in_chans, info.img_size) == (kind, n_classes, 3, 32)
    assert train[0][0].shape == (3, 32, 32)
    # The release folder itself is accepted too, and in_chans=1 gives grayscale.
    train, _, info = build_datasets(DataConfig(f"{kind}:{tmp_path / cls.base_folder}", in_chans=1, img_size=16))
    assert train[0][0].shape == (1, 16, 16) and len(info.mean) == 1


def test_cifar_missing_or_foreign_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cifar-10-batches-py.*missing data_batch_1"):
        build_datasets(DataConfig(f"cifar10:{tmp_path}"))
    _write_cifar(tmp_path, CIFAR10, monkeypatch)
    monkeypatch.undo()  # back to the official checksums: these pickles must not be loaded
    monkeypatch.setenv("BRIDGEATTN_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(UserError, match="do not match the official release"):
        build_datasets(DataConfig(f"cifar10:{tmp_path}"))
