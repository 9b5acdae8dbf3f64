"""folder:PATH on tiny image folders: layout errors, unreadable files, mode conversion, recipes."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bridgeattn.data import DataConfig, build_datasets
from bridgeattn.data.images import check_image, load_image
from bridgeattn.errors import UserError


def _image(mode: str, size: tuple[int, int] = (20, 24), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
    rgb = Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8))
    return rgb.convert(mode) if mode != "P" else rgb.quantize(8)


def _save(path: Path, mode: str = "RGB", fmt: str = "PNG", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _image(mode, seed=seed).save(path, format=fmt)
    return path


def _jpeg_bytes(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    _image("RGB", seed=seed).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """train/ with 3 images per class (mixed formats and modes), val/ with 2 per class."""
    for split, n in (("train", 3), ("val", 2)):
        for c, name in enumerate(("cat", "dog")):
            for i in range(n):
                fmt = "JPEG" if i % 2 else "PNG"
                _save(tmp_path / split / name / f"{i}.{fmt.lower()}", ["RGB", "L", "RGBA"][i % 3], fmt, seed=10 * c + i)
    return tmp_path


def _add_bad_files(root: Path) -> list[Path]:
    cat = root / "train" / "cat"
    png = (cat / "0.png").read_bytes()
    bad = {
        cat / "empty.jpg": b"",
        cat / "notes.txt": b"not an image at all",
        cat / "fake.png": b"plain text with a png name",
        cat / "cut.jpg": _jpeg_bytes()[:300],
        cat / "cut.png": png[: len(png) // 2],
        root / "val" / "dog" / "cut.jpg": _jpeg_bytes(1)[:200],
    }
    for path, data in bad.items():
        path.write_bytes(data)
    return sorted(bad)


def test_folder_builds_train_and_val(image_root: Path) -> None:
    train, val, info = build_datasets(DataConfig(f"folder:{image_root}", img_size=16))
    assert (len(train), len(val)) == (6, 4)
    assert (info.num_classes, info.class_names, info.in_chans, info.img_size) == (2, ["cat", "dog"], 3, 16)
    assert info.skipped == [] and info.name == f"folder:{image_root.name}"
    labels = [val[i][1] for i in range(len(val))]
    assert labels == [0, 0, 1, 1]
    for i in range(len(train)):
        x, _ = train[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and torch.isfinite(x).all()


def test_folder_input_shape_is_the_images_own(image_root: Path, tmp_path: Path) -> None:
    train, _, info = build_datasets(DataConfig(f"folder:{image_root}", recipe="none"))
    # 20x24 images, some in color: the short side, 3 channels
    assert (info.img_size, info.in_chans) == (20, 3) and train[0][0].shape == (3, 20, 20)
    assert info.describe_input() == "input 3x20x20 (from 4 sampled images)"
    gray = tmp_path / "gray"  # a Fashion-MNIST-like folder: 28x28 grayscale PNGs, one odd size
    for split in ("train", "val"):
        for c in ("a", "b"):
            (gray / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("L", (28, 28), 40 * i).save(gray / split / c / f"{i}.png")
    Image.new("L", (40, 50)).save(gray / "val" / "b" / "odd.png")
    train, val, info = build_datasets(DataConfig(f"folder:{gray}"))
    assert (info.img_size, info.in_chans, len(info.mean)) == (28, 1, 1)
    assert train[0][0].shape == val[6][0].shape == (1, 28, 28)
    assert info.describe_input() == "input 1x28x28 (from 7 sampled images)"
    _, _, info = build_datasets(DataConfig(f"folder:{gray}", in_chans=3), splits=("val",))
    assert info.describe_input() == "input 3x28x28 (channels as set, the rest from 7 sampled images)"
    _, _, info = build_datasets(DataConfig(f"folder:{gray}", img_size=16, in_chans=1))
    assert info.describe_input() == "input 1x16x16 (as set)"


@pytest.mark.parametrize("recipe", ["light", "imagenet", "none"])
def test_folder_recipes_and_in_chans_1(image_root: Path, recipe: str) -> None:
    cfg = DataConfig(f"folder:{image_root}", img_size=24, in_chans=1, recipe=recipe,
                     auto_augment="rand-m9-mstd0.5-inc1", reprob=0.25)
    train, val, info = build_datasets(cfg)
    assert info.in_chans == 1 and len(info.mean) == 1
    assert train[1][0].shape == val[1][0].shape == (1, 24, 24)


def test_unreadable_files_are_skipped_and_listed(image_root: Path) -> None:
    bad = _add_bad_files(image_root)
    train, val, info = build_datasets(DataConfig(f"folder:{image_root}", img_size=16))
    assert info.skipped == [str(p) for p in bad]
    assert (len(train), len(val)) == (6, 4)
    assert all(train[i][0].shape == (3, 16, 16) for i in range(len(train)))


def test_strict_stops_at_the_first_unreadable_file(image_root: Path) -> None:
    bad = _add_bad_files(image_root)
    with pytest.raises(UserError, match="unreadable image") as err:
        build_datasets(DataConfig(f"folder:{image_root}", strict=True))
    assert str(sorted(p for p in bad if "train" in str(p))[0]) in str(err.value)


def test_check_image_reasons(image_root: Path) -> None:
    _add_bad_files(image_root)
    cat = image_root / "train" / "cat"
    assert check_image(cat / "0.png") is None
    assert check_image(cat / "empty.jpg") == "empty file"
    assert check_image(cat / "notes.txt") == "not an image"
    assert check_image(cat / "cut.jpg").startswith("truncated")
    assert check_image(cat / "cut.png") is not None
    padded = cat / "padded.jpg"  # bytes after the end marker are harmless
    padded.write_bytes(_jpeg_bytes() + b"\0" * 16)
    assert check_image(padded) is None


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA", "1"])
def test_modes_convert_to_rgb_and_l(tmp_path: Path, mode: str) -> None:
    path = _save(tmp_path / "x.tif", mode, fmt="TIFF") if mode in ("CMYK", "I;16") else _save(tmp_path / "x.png", mode)
    assert check_image(path) is None
    rgb, gray = load_image(str(path), "RGB"), load_image(str(path), "L")
    assert (rgb.mode, gray.mode, rgb.size) == ("RGB", "L", (20, 24))
    if mode == "I;16":  # scaled to 8 bits, not clipped to white
        assert 50 < np.asarray(gray).mean() < 200


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    img.save(tmp_path / "t.png")
    assert load_image(str(tmp_path / "t.png")).getpixel((0, 0)) == (255, 255, 255)


def test_layout_errors_before_training(image_root: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such folder"):
        build_datasets(DataConfig(f"folder:{tmp_path / 'nowhere'}"))
    (image_root / "train" / "bird").mkdir()
    with pytest.raises(UserError, match="empty class folder.*bird"):
        build_datasets(DataConfig(f"folder:{image_root}"))
    (image_root / "train" / "bird").rmdir()
    _save(image_root / "val" / "fish" / "0.png")
    with pytest.raises(UserError, match="classes that train/ lacks: fish"):
        build_datasets(DataConfig(f"folder:{image_root}"))
    for f in (image_root / "val" / "fish").iterdir():
        f.unlink()
    (image_root / "val" / "fish").rmdir()
    (image_root / "val").rename(image_root / "valid")
    with pytest.raises(UserError, match="missing .*val"):
        build_datasets(DataConfig(f"folder:{image_root}"))


def test_class_with_only_unreadable_files_is_an_error(image_root: Path) -> None:
    for f in (image_root / "val" / "dog").iterdir():
        f.write_bytes(b"junk")
    with pytest.raises(UserError, match="no readable image.*dog"):
        build_datasets(DataConfig(f"folder:{image_root}"))


def test_val_may_hold_fewer_classes_than_train(image_root: Path) -> None:
    for f in (image_root / "val" / "cat").iterdir():
        f.unlink()
    (image_root / "val" / "cat").rmdir()
    _, val, info = build_datasets(DataConfig(f"folder:{image_root}", img_size=16))
    assert info.num_classes == 2 and {val[i][1] for i in range(len(val))} == {1}


def test_subsets_spread_over_classes(image_root: Path) -> None:
    train, val, _ = build_datasets(DataConfig(f"folder:{image_root}", img_size=16, train_subset=2, val_subset=2))
    assert [train[i][1] for i in range(2)] == [0, 1] and [val[i][1] for i in range(2)] == [0, 1]


def test_file_broken_after_the_check_is_replaced_with_a_warning(image_root: Path) -> None:
    train, _, _ = build_datasets(DataConfig(f"folder:{image_root}", img_size=16, recipe="none"))
    (image_root / "train" / "cat" / "0.png").write_bytes(b"broken later")
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        x, y = train[0]
    assert torch.equal(x, train[1][0]) and y == 0
    strict, _, _ = build_datasets(DataConfig(f"folder:{image_root}", img_size=16, recipe="none"))
    (image_root / "train" / "cat" / "1.jpeg").write_bytes(b"broken later")
    strict.strict = True
    with pytest.raises(UserError, match="unreadable image"):
        strict[0]


def test_folder_dataset_pickles_for_loader_workers(image_root: Path) -> None:
    import pickle

    train, _, _ = build_datasets(DataConfig(f"folder:{image_root}", img_size=16, recipe="none"))
    assert torch.equal(pickle.loads(pickle.dumps(train))[2][0], train[2][0])


def test_symlink_loops_count_each_image_once(image_root, caplog):
    train = image_root / "train"
    (train / "cat" / "nested").mkdir()
    _save(train / "cat" / "nested" / "deep.png", seed=99)
    (train / "cat" / "nested" / "back").symlink_to("..")  # a loop: cat/nested/back/nested/back/...
    (train / "cat" / "root").symlink_to("../..")  # a second loop, through the whole data set
    (train / "cat" / "dogs").symlink_to("../dog")  # another class's images under "cat"
    (train / "cat" / "also-nested").symlink_to("nested")  # the same folder twice
    with caplog.at_level("WARNING"):
        train_set, _, info = build_datasets(DataConfig(f"folder:{image_root}", img_size=16))
    paths = [Path(p).resolve() for p, _ in train_set.samples]
    assert len(paths) == len(set(paths)) == 3 + 1 + 3  # cat's 3 + nested/deep.png + dog's 3, each once
    labels = {Path(p).resolve().parent.name: label for p, label in train_set.samples}
    assert labels["dog"] == info.class_names.index("dog") and labels["nested"] == info.class_names.index("cat")
    assert "not following 4 directory link(s)" in caplog.text


def test_extreme_aspect_ratios_are_skipped_before_any_resize(image_root: Path) -> None:
    strip = image_root / "train" / "cat" / "strip.png"
    Image.new("L", (100_000, 1)).save(strip)  # a few hundred bytes; resized to img_size it would be 3.2M x 32
    assert strip.stat().st_size < 1000 and check_image(strip).startswith("extreme aspect ratio: 100000x1")
    assert check_image(image_root / "train" / "cat" / "0.png") is None
    train, _, info = build_datasets(DataConfig(f"folder:{image_root}", img_size=32))
    assert info.skipped == [str(strip)] and len(train) == 6
    with pytest.raises(ValueError, match="aspect ratio"):  # a file swapped in after the check: refused at load too
        load_image(str(strip))
