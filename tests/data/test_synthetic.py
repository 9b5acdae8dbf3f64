"""The synthetic spec: deterministic, class-dependent, honours img_size/in_chans/subsets."""
from __future__ import annotations

import pytest
import torch

from bridgeattn.data import SPECS, DataConfig, build_datasets
from bridgeattn.errors import UserError


def _stack(ds) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.tensor(ys)


def test_synthetic_default_sizes_and_info() -> None:
    train, val, info = build_datasets(DataConfig("synthetic"))
    assert (len(train), len(val)) == (512, 128)
    assert (info.name, info.num_classes, info.in_chans, info.img_size) == ("synthetic", 10, 3, 32)
    assert len(info.class_names) == 10 and info.skipped == []
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    assert set(_stack(val)[1].tolist()) == set(range(10))


def test_synthetic_n_and_determinism() -> None:
    cfg = DataConfig("synthetic:40", recipe="none")
    a_train, a_val, _ = build_datasets(cfg)
    b_train, b_val, _ = build_datasets(cfg)
    assert (len(a_train), len(a_val)) == (40, 10)
    for a, b in ((a_train, b_train), (a_val, b_val)):
        xa, ya = _stack(a)
        xb, yb = _stack(b)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # The first samples do not depend on N: synthetic:40 starts like synthetic:512.
    big, _, _ = build_datasets(DataConfig("synthetic", recipe="none"))
    assert torch.equal(big[5][0], a_train[5][0])


def test_synthetic_classes_differ_and_nearest_mean_separates_them() -> None:
    train, val, _ = build_datasets(DataConfig("synthetic:200", recipe="none"))
    x, y = _stack(train)
    means = torch.stack([x[y == c].mean(0) for c in range(10)])
    gaps = torch.cdist(means.flatten(1), means.flatten(1)) + torch.eye(10) * 1e9
    assert gaps.min() > 5.0  # class means are far apart
    xv, yv = _stack(val)
    pred = torch.cdist(xv.flatten(1), means.flatten(1)).argmin(1)
    assert (pred == yv).float().mean() > 0.9  # a linear rule already learns it


def test_synthetic_honours_img_size_in_chans_and_subsets() -> None:
    cfg = DataConfig("synthetic:64", img_size=16, in_chans=1, train_subset=20, val_subset=5)
    train, val, info = build_datasets(cfg)
    assert (len(train), len(val)) == (20, 5)
    assert train[0][0].shape == val[0][0].shape == (1, 16, 16)
    assert (info.in_chans, info.img_size, len(info.mean), len(info.std)) == (1, 16, 1, 1)


def test_light_recipe_augments_training_but_not_eval() -> None:
    train, val, _ = build_datasets(DataConfig("synthetic:20"))
    torch.manual_seed(1)
    draws = torch.stack([train[0][0] for _ in range(8)])
    assert not all(torch.equal(draws[0], d) for d in draws[1:])
    assert torch.equal(val[0][0], val[0][0])


@pytest.mark.parametrize("spec", ["nope", "synthetic:0", "synthetic:abc", "folder:", "cifar10", "fashion-mnist:x"])
def test_bad_specs_are_user_errors_listing_valid_ones(spec: str) -> None:
    with pytest.raises(UserError) as err:
        build_datasets(DataConfig(spec))
    assert "synthetic" in str(err.value)


@pytest.mark.parametrize("field,value", [
    ("recipe", "heavy"), ("in_chans", 4), ("img_size", 2), ("train_subset", 0), ("interpolation", "cubic"),
    ("interpolation", "random"), ("crop_pct", 1.5), ("reprob", -0.1),
])
def test_bad_options_are_user_errors(field: str, value: object) -> None:
    with pytest.raises(UserError):
        build_datasets(DataConfig("synthetic:20", **{field: value}))
    assert "synthetic" in SPECS


def test_light_crop_is_a_window_of_the_zero_padded_image_maybe_flipped() -> None:
    train, val, info = build_datasets(DataConfig("synthetic:10"))
    raw = train.images[0]
    padded = torch.nn.functional.pad(raw, (4, 4, 4, 4)).float()
    mean, std = torch.tensor(info.mean).view(-1, 1, 1), torch.tensor(info.std).view(-1, 1, 1)
    for seed in range(6):
        torch.manual_seed(seed)
        pixels = ((train[0][0] * std + mean) * 255).round()
        windows = [padded[:, i:i + 32, j:j + 32] for i in range(9) for j in range(9)]
        assert any(torch.equal(pixels, w) or torch.equal(pixels, w.flip(-1)) for w in windows)
    assert torch.allclose((val[0][0] * std + mean) * 255, val.images[0].float(), atol=1e-3)


def test_datasets_pickle_for_loader_workers() -> None:
    import pickle

    train, _, _ = build_datasets(DataConfig("synthetic:10"))
    clone = pickle.loads(pickle.dumps(train))
    torch.manual_seed(0)
    a = train[3][0]
    torch.manual_seed(0)
    assert torch.equal(a, clone[3][0])


@pytest.mark.parametrize("in_chans", [1, 3])
def test_imagenet_recipe_on_in_memory_data(in_chans: int) -> None:
    cfg = DataConfig("synthetic:20", recipe="imagenet", img_size=24, in_chans=in_chans,
                     auto_augment="rand-m9-mstd0.5-inc1", reprob=0.25)
    train, val, _ = build_datasets(cfg)
    assert train[0][0].shape == val[0][0].shape == (in_chans, 24, 24)
    assert torch.isfinite(train[0][0]).all()
