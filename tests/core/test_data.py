"""Dataset loaders on real on-disk formats (written tiny into tmp_path), splits, augmentation, conversion."""

from __future__ import annotations

import dataclasses
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FASHION_MNIST_DIR, needs_fashion_mnist

from trainables.core import Trainer
from trainables.core import data as data_mod
from trainables.core.data import DATASETS, DatasetNotFound, augment, convert, load_data

N_TRAIN, N_TEST = 20, 6


@pytest.fixture(autouse=True)
def _no_download(monkeypatch):
    """No test here may reach the network: a download attempt is a failure."""

    def refuse(*args, **kwargs):
        raise AssertionError("unexpected download attempt")

    monkeypatch.setattr(data_mod, "_torchvision_download", refuse)


def tagged_images(n: int, channels: int, size: int, offset: int = 0) -> np.ndarray:
    """uint8 (n, C, H, W) images whose pixel [c, 0, 0] is the sample's id (offset + i) and [c, 1, 1] is 255."""
    x = np.zeros((n, channels, size, size), dtype=np.uint8)
    x[:, :, 0, 0] = (np.arange(n) + offset)[:, None]
    x[:, :, 1, 1] = 255
    return x


def ids(x: torch.Tensor) -> list[int]:
    return [round(v) for v in (x[:, 0, 0, 0] * 255).tolist()]


# ---------------------------------------------------------------- writers, in the real formats
def write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x00000803 if array.ndim == 3 else 0x00000801  # unsigned byte, 3 or 1 dimensions
    payload = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def write_mnist(folder: Path, gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{ext}", tagged_images(N_TRAIN, 1, 28)[:, 0])
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", np.arange(N_TRAIN) % 10)
    write_idx(folder / f"t10k-images-idx3-ubyte{ext}", tagged_images(N_TEST, 1, 28, offset=100)[:, 0])
    write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", (np.arange(N_TEST) + 3) % 10)


def write_svhn(folder: Path) -> None:
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    for fname, n, offset in (("train_32x32.mat", N_TRAIN, 0), ("test_32x32.mat", N_TEST, 100)):
        x = tagged_images(n, 3, 32, offset)
        x[:, 2, 3, 5] = 77  # channel 2, row 3, column 5: catches a transposed layout
        labels = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)  # SVHN: 1..10, 10 is the digit 0
        savemat(str(folder / fname), {"X": x.transpose(2, 3, 1, 0).copy(), "y": labels})  # (H, W, C, N)


def write_cifar10(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    half = N_TRAIN // 2
    parts = [("data_batch_1", 0, half), ("data_batch_2", half, half), ("test_batch", 100, N_TEST)]
    for fname, offset, n in parts:
        x = tagged_images(n, 3, 32, offset)
        x[:, 2, 3, 5] = 77
        batch = {b"data": x.reshape(n, 3072), b"labels": [(offset + i) % 10 for i in range(n)],
                 b"batch_label": fname.encode()}
        with open(folder / fname, "wb") as f:
            pickle.dump(batch, f)


def write_cifar100(folder: Path, test_bytes: bytes | None = None) -> None:
    """The python version's layout: one ``train`` and one ``test`` pickle with ``fine_labels`` (0..99)."""
    folder.mkdir(parents=True, exist_ok=True)
    for fname, offset, n in (("train", 0, N_TRAIN), ("test", 100, N_TEST)):
        x = tagged_images(n, 3, 32, offset)
        x[:, 2, 3, 5] = 77
        batch = {b"data": x.reshape(n, 3072), b"fine_labels": [(offset + 7 * i) % 100 for i in range(n)],
                 b"coarse_labels": [i % 20 for i in range(n)], b"filenames": [b"x.png"] * n}
        with open(folder / fname, "wb") as f:
            pickle.dump(batch, f)
    if test_bytes is not None:
        (folder / "test").write_bytes(test_bytes)


# ---------------------------------------------------------------- MNIST-style idx
@pytest.mark.parametrize("layout", ["flat-gz", "torchvision-raw"])
def test_mnist_idx_files_load(tmp_path, layout):
    if layout == "flat-gz":
        write_mnist(tmp_path, gz=True)
        expected_source = tmp_path
    else:
        write_mnist(tmp_path / "MNIST" / "raw", gz=False)  # torchvision's download layout, uncompressed
        expected_source = tmp_path / "MNIST" / "raw"
    d = load_data("mnist", data_dir=tmp_path, val_fraction=0.25)
    assert d.source == str(expected_source)
    assert d.train.x.shape == (15, 1, 28, 28) and d.val.x.shape == (5, 1, 28, 28)
    assert d.test.x.shape == (N_TEST, 1, 28, 28)
    assert d.train.x.dtype == torch.float32 and d.train.y.dtype == torch.int64
    for split in (d.train, d.val, d.test):
        assert split.x.min() == 0.0 and split.x.max() == 1.0
    # labels travel with their images
    assert [i % 10 for i in ids(d.train.x)] == d.train.y.tolist()
    assert sorted(ids(d.train.x) + ids(d.val.x)) == list(range(N_TRAIN))
    assert ids(d.test.x) == list(range(100, 100 + N_TEST))  # the shipped test split, in order
    assert d.test.y.tolist() == [(i + 3) % 10 for i in range(N_TEST)]
    assert d.shape == (1, 28, 28)


def test_data_dir_from_environment(tmp_path, monkeypatch):
    write_mnist(tmp_path)
    monkeypatch.setenv("ROBUST_SEARCH_DATA", str(tmp_path))
    assert load_data("mnist").source == str(tmp_path)


def test_read_idx_header(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a-idx3-ubyte.gz", arr)
    assert data_mod.read_idx(tmp_path / "a-idx3-ubyte.gz").tolist() == arr.tolist()


# ---------------------------------------------------------------- splits
def test_val_split_seed_and_max_train_samples(tmp_path):
    write_mnist(tmp_path)
    a = load_data("mnist", data_dir=tmp_path, val_fraction=0.25, split_seed=0)
    again = load_data("mnist", data_dir=tmp_path, val_fraction=0.25, split_seed=0)
    b = load_data("mnist", data_dir=tmp_path, val_fraction=0.25, split_seed=1)
    assert ids(a.val.x) == ids(again.val.x)  # reproducible
    assert set(ids(a.val.x)) != set(ids(b.val.x))  # split_seed picks other validation samples
    assert len(b.val) == 5 and set(ids(b.train.x)).isdisjoint(ids(b.val.x))
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.test.y, b.test.y)  # test split untouched

    capped = load_data("mnist", data_dir=tmp_path, val_fraction=0.25, split_seed=0, max_train_samples=4)
    assert len(capped.train) == 4 and set(ids(capped.train.x)) <= set(ids(a.train.x))
    assert ids(capped.val.x) == ids(a.val.x)  # capping the training set never changes validation
    assert len(capped.test) == N_TEST


def test_channels_and_size_on_load(tmp_path):
    write_mnist(tmp_path)
    d = load_data("mnist", data_dir=tmp_path, channels=3, size=32)
    assert d.train.x.shape[1:] == (3, 32, 32) and d.test.x.shape[1:] == (3, 32, 32)
    assert d.train.x.min() >= 0 and d.train.x.max() <= 1


# ---------------------------------------------------------------- SVHN and CIFAR-10
@pytest.mark.parametrize("sub", ["", "svhn"], ids=["root", "svhn-subfolder"])
def test_svhn_mat_files_load(tmp_path, sub):
    write_svhn(tmp_path / sub if sub else tmp_path)
    d = load_data("svhn", data_dir=tmp_path, val_fraction=0.25)
    assert d.train.x.shape == (15, 3, 32, 32) and d.val.x.shape == (5, 3, 32, 32)
    assert d.test.x.shape == (N_TEST, 3, 32, 32)
    assert d.test.y.tolist() == [1, 2, 3, 4, 5, 6]
    all_train_y = {i: y for i, y in zip(ids(d.train.x) + ids(d.val.x), d.train.y.tolist() + d.val.y.tolist())}
    assert all_train_y[9] == 0  # shipped label 10 is the digit 0
    assert all_train_y[0] == 1 and all_train_y[19] == 0
    assert set(all_train_y.values()) == set(range(10))
    assert (d.test.x[:, 2, 3, 5] * 255).round().eq(77).all()  # (H, W, C, N) -> (N, C, H, W)
    assert (d.test.x[:, :2, 3, 5] == 0).all()
    assert d.test.x.min() == 0.0 and d.test.x.max() == 1.0


def test_cifar10_pickled_batches_load(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py")
    d = load_data("cifar10", data_dir=tmp_path, val_fraction=0.25)
    assert d.source == str(tmp_path / "cifar-10-batches-py")
    assert d.train.x.shape == (15, 3, 32, 32) and len(d.val) == 5
    assert sorted(ids(d.train.x) + ids(d.val.x)) == list(range(N_TRAIN))  # both training batches
    assert [i % 10 for i in ids(d.train.x)] == d.train.y.tolist()
    assert ids(d.test.x) == list(range(100, 100 + N_TEST))
    assert d.test.y.tolist() == [(100 + i) % 10 for i in range(N_TEST)]
    assert (d.test.x[:, 2, 3, 5] * 255).round().eq(77).all()  # rows of 3072 are R, G, B planes
    assert (d.test.x[:, :2, 3, 5] == 0).all()
    assert d.train.x.min() == 0.0 and d.train.x.max() == 1.0
    assert DATASETS["cifar10"].hflip


def test_cifar100_pickled_files_load_with_the_fine_labels(tmp_path):
    write_cifar100(tmp_path / "cifar-100-python")
    d = load_data("cifar100", data_dir=tmp_path, val_fraction=0.25)
    assert d.source == str(tmp_path / "cifar-100-python")
    assert d.info.num_classes == 100 and d.train.x.shape[1:] == (3, 32, 32)
    assert sorted(ids(d.train.x) + ids(d.val.x)) == list(range(N_TRAIN))
    assert [(7 * i) % 100 for i in ids(d.train.x)] == d.train.y.tolist()  # fine labels, not coarse
    assert d.test.y.tolist() == [(100 + 7 * i) % 100 for i in range(N_TEST)]
    assert (d.test.x[:, 2, 3, 5] * 255).round().eq(77).all() and (d.test.x[:, :2, 3, 5] == 0).all()


def test_cifar100_damaged_file_is_named(tmp_path):
    write_cifar100(tmp_path, test_bytes=b"not a pickle")
    with pytest.raises(data_mod.DatasetCorrupt, match=r"cifar100.*test cannot be read"):
        load_data("cifar100", data_dir=tmp_path)


# ---------------------------------------------------------------- missing data
@pytest.mark.parametrize("name, folder_hint", [("mnist", "MNIST"), ("svhn", "svhn"), ("cifar10", "cifar-10-batches-py"),
                                               ("cifar100", "cifar-100-python")])
def test_missing_dataset_raises_with_where_and_how(tmp_path, name, folder_hint):
    with pytest.raises(DatasetNotFound) as info:
        load_data(name, data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and folder_hint in message
    assert "download: true" in message
    assert isinstance(info.value, FileNotFoundError)


def test_missing_dataset_has_no_fallback_even_when_download_produces_nothing(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(data_mod, "_torchvision_download", lambda *a, **k: calls.append(a))
    with pytest.raises(DatasetNotFound):
        load_data("cifar10", data_dir=tmp_path, download=True)
    assert calls  # it did try the download, and then still refused to make data up


def test_missing_fashion_mnist_names_the_debian_package(tmp_path, monkeypatch):
    # The real loader also looks in /usr/share/datasets/fashion-mnist; point that elsewhere.
    loader = data_mod._mnist_like("fashion_mnist", "FashionMNIST", (str(tmp_path / "nowhere"),))
    monkeypatch.setitem(DATASETS, "fashion_mnist", dataclasses.replace(DATASETS["fashion_mnist"], loader=loader))
    with pytest.raises(DatasetNotFound) as info:
        load_data("fashion_mnist", data_dir=tmp_path / "empty")
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(tmp_path / "nowhere") in message and str(tmp_path / "empty" / "FashionMNIST" / "raw") in message


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(ValueError, match="fashion_mnist"):
        load_data("imagenet")


@needs_fashion_mnist
def test_fashion_mnist_from_the_debian_package(tmp_path):
    d = load_data("fashion_mnist", data_dir=tmp_path, max_train_samples=100)  # empty data dir: Debian copy
    assert d.source == str(FASHION_MNIST_DIR)
    assert d.train.x.shape == (100, 1, 28, 28)
    assert len(d.val) == 6000 and len(d.test) == 10000
    assert d.test.x.min() == 0.0 and d.test.x.max() == 1.0
    assert sorted(d.test.y.unique().tolist()) == list(range(10))
    assert DATASETS["fashion_mnist"].hflip


# ---------------------------------------------------------------- digits (embedded)
def test_digits_sizes_and_fixed_test_split():
    a = load_data("digits", split_seed=0)
    b = load_data("digits", split_seed=5)
    assert a.shape == (1, 8, 8)
    assert len(a.test) == 359 and len(a.train) + len(a.val) == 1797 - 359
    assert len(a.val) == round(0.1 * (1797 - 359))
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.test.y, b.test.y)  # independent of split_seed
    assert not torch.equal(a.val.x, b.val.x)
    assert 0.0 <= a.train.x.min() and a.train.x.max() == 1.0
    assert not DATASETS["digits"].hflip


def test_digits_training_never_flips(tiny, monkeypatch):
    calls = []

    def recording_augment(x, **kw):
        calls.append(kw)
        return augment(x, **kw)

    monkeypatch.setattr(data_mod, "augment", recording_augment)
    trainer = Trainer({**tiny, "crop_padding": 1, "max_train_samples": 128})
    trainer.train_epoch()
    assert calls and all(c["hflip"] is False and c["crop_padding"] == 1 for c in calls)

    calls.clear()
    Trainer({**tiny, "max_train_samples": 128}).train_epoch()  # 8x8 images: no crop by default either
    assert calls == []


# ---------------------------------------------------------------- augmentation
def windows(x: torch.Tensor, p: int) -> list[torch.Tensor]:
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    h, w = x.shape[-2:]
    return [padded[..., i : i + h, j : j + w] for i in range(2 * p + 1) for j in range(2 * p + 1)]


def test_augment_crop_keeps_shape_and_is_a_padded_window():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    out = augment(x, crop_padding=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for i in range(len(x)):
        assert any(torch.equal(out[i], wnd) for wnd in windows(x[i], 2))


def test_augment_identity_without_padding_or_flip():
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(augment(x, crop_padding=0, hflip=False), x)


def test_augment_is_batched_different_crops_per_sample():
    x = torch.rand(1, 1, 8, 8).expand(32, -1, -1, -1).contiguous()
    out = augment(x, crop_padding=2, generator=torch.Generator().manual_seed(1))
    distinct = {tuple(o.flatten().tolist()) for o in out}
    assert len(distinct) > 5


def test_augment_flips_only_when_asked():
    x = torch.rand(64, 1, 8, 8)
    flipped = augment(x, hflip=True, generator=torch.Generator().manual_seed(0))
    is_flip = [torch.equal(o, xi.flip(-1)) for o, xi in zip(flipped, x)]
    is_same = [torch.equal(o, xi) for o, xi in zip(flipped, x)]
    assert all(f or s for f, s in zip(is_flip, is_same))
    assert 10 < sum(is_flip) < 54  # about half
    assert torch.equal(augment(x, hflip=False, generator=torch.Generator().manual_seed(0)), x)


def test_augment_is_deterministic_with_a_generator():
    x = torch.rand(32, 3, 8, 8)

    def run(seed):
        return augment(x, crop_padding=2, hflip=True, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


# ---------------------------------------------------------------- conversion
def test_convert_gray_to_rgb_and_back():
    gray = torch.rand(2, 1, 8, 8)
    rgb = convert(gray, channels=3)
    assert rgb.shape == (2, 3, 8, 8)
    assert torch.equal(rgb[:, 0], rgb[:, 1]) and torch.equal(rgb[:, 1], rgb[:, 2])
    assert torch.allclose(convert(rgb, channels=1), gray, atol=1e-6)  # luma weights sum to 1

    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1.0
    assert torch.allclose(convert(red, channels=1), torch.full((1, 1, 4, 4), 0.299))
    assert convert(gray, channels=1) is gray  # nothing to do


def test_convert_resize():
    x = torch.rand(3, 1, 8, 8)
    up = convert(x, size=28)
    assert up.shape == (3, 1, 28, 28) and up.min() >= 0 and up.max() <= 1
    assert convert(torch.rand(2, 3, 32, 32), channels=1, size=16).shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="channels"):
        convert(torch.rand(1, 2, 8, 8), channels=3)


def test_digits_read_from_the_shipped_file_equal_load_digits():
    """The direct read (no ``import sklearn.datasets`` in every trial process) gives scikit-learn's arrays."""
    import numpy as np
    from sklearn.datasets import load_digits

    from trainables.core.data import _digits_arrays

    images, target = _digits_arrays()
    bunch = load_digits()
    assert np.array_equal(images, bunch.images) and np.array_equal(target, bunch.target)
