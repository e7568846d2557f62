"""Datasets as in-memory tensors, resolved from real files only.

Every dataset resolves from an explicit data directory, then well-known local copies,
then (only when asked) a torchvision download. When none works, one error says exactly
how to get it. Images are kept as float tensors in pixel space [0, 1]; the per-dataset
normalization lives inside the model (see ``models.Network``), so an adversarial eps means
the same thing on every dataset.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import pickle
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .domain_names import DomainName, class_selection, parse_name
from .domains import corrupt
from .infos import DatasetInfo
from .registry import declare, register


class DatasetNotFound(FileNotFoundError):
    """A dataset is absent; the message says how to get it."""


class DatasetCorrupt(DatasetNotFound):
    """A dataset's files are there but unreadable (truncated, wrong format); the message names the file."""


class _BadFile(ValueError):
    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


@dataclass
class RawSplits:
    """uint8 or float images (N, C, H, W) and int64 labels, as shipped: train and test."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str  # where the files came from: recorded as provenance


@dataclass
class Split:
    x: torch.Tensor  # float32 in [0, 1], (N, C, H, W), on the training device
    y: torch.Tensor  # int64 labels

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class DataBundle:
    info: DatasetInfo
    train: Split
    val: Split
    test: Split
    source: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])


DATASETS = declare("dataset")  # name -> DatasetInfo


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    return register("dataset", info.name, info)


def default_data_dir() -> Path:
    return Path(os.environ.get("ROBUST_SEARCH_DATA", Path.home() / ".cache" / "robust-search" / "data"))


# ---------------------------------------------------------------- on-disk formats
def read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file (MNIST's format) of unsigned bytes, gzipped or not; ``_BadFile`` if it is not one."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a truncated gzip is an EOFError
        raise _BadFile(path, f"cannot be read ({type(e).__name__}: {e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise _BadFile(path, "is not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise _BadFile(path, "is truncated (incomplete header)")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = len(data) - 4 - 4 * ndim
    if body != math.prod(dims):
        raise _BadFile(path, f"holds {body} bytes of data where its header announces {math.prod(dims)} (truncated?)")
    return torch.frombuffer(bytearray(data[4 + 4 * ndim :]), dtype=torch.uint8).reshape(dims)


def _find_idx(dirs: list[Path], stem: str) -> Path | None:
    for d in dirs:
        for suffix in ("", ".gz"):
            p = d / f"{stem}{suffix}"
            if p.is_file():
                return p
    return None


def _load_idx_dataset(dirs: list[Path]) -> RawSplits | None:
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    paths = [_find_idx(dirs, s) for s in stems]
    if not all(paths):
        return None
    tx, ty, vx, vy = (read_idx(p) for p in paths)
    for x, y, px, py in ((tx, ty, paths[0], paths[1]), (vx, vy, paths[2], paths[3])):
        if x.dim() != 3 or y.dim() != 1:
            raise _BadFile(px if x.dim() != 3 else py, "has the wrong shape for images (N, H, W) or labels (N,)")
        if len(x) != len(y):
            raise _BadFile(py, f"holds {len(y)} labels for the {len(x)} images of {px.name}")
    return RawSplits(tx[:, None], ty.long(), vx[:, None], vy.long(), source=str(paths[0].parent))


def _torchvision_download(cls_name: str, root: Path, **kwargs) -> None:
    from .torchvision_compat import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    try:
        root.mkdir(parents=True, exist_ok=True)
        for split_kwargs in kwargs.pop("splits"):
            cls(root=str(root), download=True, **split_kwargs)
    except Exception as e:  # noqa: BLE001 - no network, a proxy, a full disk, a file where the folder goes...
        reason = (str(e).strip().splitlines() or [""])[-1][:300]
        raise DatasetNotFound(f"downloading {cls_name} into {root} failed ({type(e).__name__}: {reason}); "
                              "put the files in the data dir by hand, or retry where the network is reachable") from None


def _corrupt(info: DatasetInfo, bad: _BadFile) -> DatasetCorrupt:
    return DatasetCorrupt(f"dataset '{info.name}': {bad.path} {bad.reason}. Delete the damaged file and get it "
                          f"again: {info.how_to_get}")


def _not_found(info: DatasetInfo, looked: list[Path]) -> DatasetNotFound:
    where = "\n".join(f"  - {p}" for p in looked)
    return DatasetNotFound(
        f"dataset '{info.name}' not found. Looked in:\n{where}\nTo get it: {info.how_to_get}"
    )


def _mnist_like(name: str, tv_class: str, extra_dirs: tuple[str, ...] = ()):
    def load(data_dir: Path | None, download: bool) -> RawSplits:
        root = Path(data_dir) if data_dir else default_data_dir()
        dirs = [root, root / tv_class / "raw", root / name] + [Path(d) for d in extra_dirs]
        try:
            found = _load_idx_dataset(dirs)
            if found is None and download:
                _torchvision_download(tv_class, root, splits=[{"train": True}, {"train": False}])
                found = _load_idx_dataset(dirs)
        except _BadFile as bad:
            raise _corrupt(DATASETS[name], bad) from None
        if found is None:
            raise _not_found(DATASETS[name], dirs)
        return found

    return load


def _load_svhn(data_dir: Path | None, download: bool) -> RawSplits:
    from scipy.io import loadmat

    root = Path(data_dir) if data_dir else default_data_dir()
    dirs = [root, root / "svhn", root / "SVHN"]

    def find():
        for d in dirs:
            if (d / "train_32x32.mat").is_file() and (d / "test_32x32.mat").is_file():
                return d
        return None

    d = find()
    if d is None and download:
        _torchvision_download("SVHN", root, splits=[{"split": "train"}, {"split": "test"}])
        d = find()
    if d is None:
        raise _not_found(DATASETS["svhn"], dirs)

    def read(fname):
        try:
            m = loadmat(str(d / fname))
            x = torch.from_numpy(m["X"]).permute(3, 2, 0, 1).contiguous()  # (H, W, C, N) -> (N, C, H, W)
            y = torch.from_numpy(m["y"].astype("int64")).flatten()
        except Exception as e:  # noqa: BLE001 - scipy raises many types for a damaged .mat file
            raise _corrupt(DATASETS["svhn"], _BadFile(d / fname, f"cannot be read ({type(e).__name__}: {e})")) from None
        y[y == 10] = 0  # SVHN stores digit 0 as label 10
        return x, y

    tx, ty = read("train_32x32.mat")
    vx, vy = read("test_32x32.mat")
    return RawSplits(tx, ty, vx, vy, source=str(d))


def _cifar(name: str, folder: str, train_files: str, test_file: str, label_key: bytes, tv_class: str):
    """A loader for the pickled python version of CIFAR-10 / CIFAR-100 (``folder`` as the archive extracts it)."""

    def load(data_dir: Path | None, download: bool) -> RawSplits:
        root = Path(data_dir) if data_dir else default_data_dir()
        dirs = [root / folder, root]

        def find():
            for d in dirs:
                if any(d.glob(train_files)) and (d / test_file).is_file():
                    return d
            return None

        d = find()
        if d is None and download:
            _torchvision_download(tv_class, root, splits=[{"train": True}, {"train": False}])
            d = find()
        if d is None:
            raise _not_found(DATASETS[name], dirs)

        def read(names):
            xs, ys = [], []
            for n in names:
                try:
                    with open(d / n, "rb") as f:
                        batch = pickle.load(f, encoding="bytes")
                    xs.append(torch.as_tensor(batch[b"data"], dtype=torch.uint8).reshape(-1, 3, 32, 32))
                    ys.append(torch.as_tensor(batch[label_key], dtype=torch.int64))
                except Exception as e:  # noqa: BLE001 - a damaged pickle raises many types
                    bad = _BadFile(d / n, f"cannot be read ({type(e).__name__}: {e})")
                    raise _corrupt(DATASETS[name], bad) from None
            return torch.cat(xs), torch.cat(ys)

        tx, ty = read(sorted(p.name for p in d.glob(train_files)))
        vx, vy = read([test_file])
        return RawSplits(tx, ty, vx, vy, source=str(d))

    return load


def _digits_arrays():
    """(images N x 8 x 8, labels) of scikit-learn's digits, read from the file the package ships.

    Read directly: ``import sklearn.datasets`` costs about a second per process (every trial
    actor pays it), the file itself a few milliseconds. Falls back to ``load_digits``.
    """
    import importlib.util

    import numpy as np

    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is not None and path.is_file():
        with gzip.open(path, "rt") as f:
            data = np.loadtxt(f, delimiter=",", dtype=np.float32)
        return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


def _load_digits(data_dir: Path | None, download: bool) -> RawSplits:
    """scikit-learn's 8x8 digits ship with the package: the embedded default, no network."""
    images, target = _digits_arrays()
    x = torch.as_tensor(images, dtype=torch.float32)[:, None] / 16.0
    y = torch.as_tensor(target, dtype=torch.int64)
    # A fixed test split (never depends on any seed): every 5th sample after a fixed shuffle.
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))
    test_idx, train_idx = perm[: len(y) // 5], perm[len(y) // 5 :]
    return RawSplits(x[train_idx], y[train_idx], x[test_idx], y[test_idx], source="sklearn.datasets.load_digits")


register_dataset(DatasetInfo(
    "digits", 1, 8, 10, (0.3, ), (0.37, ), hflip=False, loader=_load_digits,
    how_to_get="it ships with scikit-learn: pip install scikit-learn", label_space="digits",
))
register_dataset(DatasetInfo(
    "fashion_mnist", 1, 28, 10, (0.2860,), (0.3530,), hflip=True,
    loader=_mnist_like("fashion_mnist", "FashionMNIST", ("/usr/share/datasets/fashion-mnist",)),
    how_to_get="on Debian/Ubuntu `apt-get install dataset-fashion-mnist`; or put the four idx files in the "
    "data dir; or set download: true (torchvision download).",
))
register_dataset(DatasetInfo(
    "mnist", 1, 28, 10, (0.1307,), (0.3081,), hflip=False, loader=_mnist_like("mnist", "MNIST"),
    how_to_get="put the four MNIST idx files (train-images-idx3-ubyte.gz, ...) in the data dir "
    "(--data-dir / data_dir / $ROBUST_SEARCH_DATA), or set download: true (torchvision download).",
    label_space="digits",
))
register_dataset(DatasetInfo(
    "svhn", 3, 32, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), hflip=False, loader=_load_svhn,
    how_to_get="put train_32x32.mat and test_32x32.mat in the data dir "
    "(--data-dir / data_dir / $ROBUST_SEARCH_DATA), or set download: true (torchvision download).",
    label_space="digits",
))
register_dataset(DatasetInfo(
    "cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), hflip=True,
    loader=_cifar("cifar10", "cifar-10-batches-py", "data_batch_*", "test_batch", b"labels", "CIFAR10"),
    how_to_get="put the extracted cifar-10-batches-py folder in the data dir "
    "(--data-dir / data_dir / $ROBUST_SEARCH_DATA), or set download: true (torchvision download).",
))
register_dataset(DatasetInfo(  # the RegNet thesis's section 3.5; the 100 fine labels
    "cifar100", 3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), hflip=True,
    loader=_cifar("cifar100", "cifar-100-python", "train", "test", b"fine_labels", "CIFAR100"),
    how_to_get="put the extracted cifar-100-python folder (files train, test, meta) in the data dir "
    "(--data-dir / data_dir / $ROBUST_SEARCH_DATA), or set download: true (torchvision download).",
))


# ---------------------------------------------------------------- tensors in memory
def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def convert(x: torch.Tensor, channels: int | None = None, size: int | None = None) -> torch.Tensor:
    """Grayscale <-> RGB and resizing, once, on whole tensors: any model takes any dataset."""
    if channels is not None and x.shape[1] != channels:
        if x.shape[1] == 1 and channels == 3:
            x = x.expand(-1, 3, -1, -1).contiguous()
        elif x.shape[1] == 3 and channels == 1:
            w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            x = (x * w).sum(1, keepdim=True)
        else:
            raise ValueError(f"cannot convert {x.shape[1]} channels to {channels}")
    if size is not None and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
    return x


@lru_cache(maxsize=4)
def _raw(name: str, data_dir: str | None, download: bool) -> RawSplits:
    return DATASETS[name].loader(Path(data_dir) if data_dir else None, download)


def dataset_source(name: str, data_dir: str | Path | None = None, download: bool = False) -> str:
    """Load a dataset's files once, raising ``DatasetNotFound``/``DatasetCorrupt``; returns their source.

    Not cached: a search's driver only checks, its trials load (a CIFAR-10 copy held all search long is waste).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset '{name}'; choose one of: {', '.join(sorted(DATASETS))}")
    return DATASETS[name].loader(Path(data_dir) if data_dir else None, download).source


def norm_stats(info: DatasetInfo, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std for the channel count the model sees (after any gray <-> RGB conversion)."""
    mean, std = info.mean, info.std
    if len(mean) != channels:
        m, s = sum(mean) / len(mean), sum(std) / len(std)
        mean, std = (m,) * channels, (s,) * channels
    return mean, std


@dataclass(frozen=True)
class DataSpec:
    """Which samples a run sees: the dataset, where its files are, the held-out split, the conversion and the
    class subset. Built once from a config (``DataSpec.of(cfg)``) and passed whole, so every load of a run (its
    data, a cross-domain target, the fine-tuning target) uses the same store, split seed and class subset.

    ``classes`` keeps a subset of the classes, relabelled 0..k-1 in the given order; ``class_groups`` labels
    each sample with the index of the group holding its class (either, not both). ``max_train_samples`` counts
    the kept samples. ``channels`` / ``size``: None keeps the dataset's own.
    """

    dataset: str
    data_dir: str | Path | None = None
    download: bool = False
    val_fraction: float = 0.1
    split_seed: int = 0
    channels: int | None = None
    size: int | None = None
    max_train_samples: int | None = None
    classes: tuple[int, ...] | None = None
    class_groups: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self):  # tuples: a spec is hashable (a cache key) whatever sequences it was given
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))
        if self.class_groups is not None:
            object.__setattr__(self, "class_groups", tuple(tuple(g) for g in self.class_groups))

    @classmethod
    def of(cls, cfg) -> DataSpec:
        """The spec of a ``TrainConfig`` (or anything with its data fields)."""
        return cls(dataset=cfg.dataset, data_dir=cfg.data_dir, download=cfg.download, val_fraction=cfg.val_fraction,
                   split_seed=cfg.split_seed, channels=cfg.channels, size=cfg.image_size,
                   max_train_samples=cfg.max_train_samples, classes=cfg.classes, class_groups=cfg.class_groups)

    def target(self, name: str, channels: int | None, size: int | None) -> DataSpec:
        """Another dataset loaded like this one (store, split seed, validation share, class subset) at the
        source's ``channels`` / ``size``, with all its training samples: a target keeps the labels' meaning."""
        return dataclasses.replace(self, dataset=name, channels=channels, size=size, max_train_samples=None)


def load_data(name: str, *, device: torch.device | str = "cpu", **spec) -> DataBundle:
    """``load(DataSpec(name, **spec), device)``: the keyword form, for notebooks and scripts."""
    return load(DataSpec(name, **spec), device)


def load(spec: DataSpec, device: torch.device | str = "cpu") -> DataBundle:
    """Load a registered dataset (or a corruption domain of one) into memory as train / val / test tensors.

    The validation split is held out of the shipped training set by ``split_seed``;
    the test split is the shipped one and is never used for model selection.
    With a class subset, the bundle's ``info`` has the new class count (``subset_info``).
    A name like ``fashion_mnist:rotate@3`` loads the base dataset and corrupts it (``_load_domain``).
    """
    name = spec.dataset
    if ":" in str(name):
        return _load_domain(spec, device)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset '{name}'; choose one of: {', '.join(sorted(DATASETS))}")
    info = DATASETS[name]
    raw = _raw(name, str(spec.data_dir) if spec.data_dir else None, spec.download)
    g = torch.Generator().manual_seed(spec.split_seed)
    perm = torch.randperm(len(raw.train_y), generator=g)
    n_val = int(round(len(perm) * spec.val_fraction))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    mapping = None
    if spec.classes is not None or spec.class_groups is not None:
        mapping = class_subset_map(info.num_classes, spec.classes, spec.class_groups)
        info = subset_info(info, spec.classes, spec.class_groups)
        train_idx = train_idx[mapping[raw.train_y[train_idx]] >= 0]
        val_idx = val_idx[mapping[raw.train_y[val_idx]] >= 0]
    if spec.max_train_samples is not None:
        train_idx = train_idx[: spec.max_train_samples]

    def make(x, y):
        if mapping is not None:
            x, y = select_classes(x, y, mapping)
        x = convert(to_float(x), spec.channels, spec.size)
        return Split(x.to(device), y.to(device))

    return DataBundle(
        info=info,
        train=make(raw.train_x[train_idx], raw.train_y[train_idx]),
        val=make(raw.train_x[val_idx], raw.train_y[val_idx]),
        test=make(raw.test_x, raw.test_y),
        source=raw.source,
    )


def _load_domain(spec: DataSpec, device) -> DataBundle:
    """A corruption domain: its base dataset with every split corrupted.

    Each split is corrupted at the base's native size (or the size the corruption is defined on: MNIST-C's 28),
    so a domain is the same images whoever evaluates it, then converted to ``channels`` / ``size``. The random
    draws are seeded by ``split_seed``, the seed that already fixes which samples validate: every trial of a
    search sees the same domain whatever its training seed. The domain keeps the base's normalization
    statistics (the model normalizes inside, with its source's statistics).
    """
    domain = parse_name(spec.dataset, DATASETS)
    if domain.corruption is None:
        return load(dataclasses.replace(spec, dataset=domain.dataset), device)
    base = load(dataclasses.replace(spec, dataset=domain.dataset, channels=None, size=None))  # native size, CPU
    made = {tag: domain_split(getattr(base, tag), domain, tag, seed=spec.split_seed, channels=spec.channels,
                              size=spec.size, device=device) for tag in ("train", "val", "test")}
    info = dataclasses.replace(base.info, name=domain.canonical, size=domain.image_size or base.info.size)
    return dataclasses.replace(base, info=info, **made,
                               source=f"{base.source} + {domain.canonical.partition(':')[2]} (generated here)")


def domain_split(split: Split, domain: DomainName, tag: str, *, seed: int, channels: int | None = None,
                 size: int | None = None, device="cpu") -> Split:
    """The ``tag`` split of ``domain`` made from its base's ``split`` (CPU, native size): at the corruption's
    size, corrupted with the draws of (``seed``, domain, ``tag``), converted, on ``device``. A base name
    gives the split converted."""
    x = corrupt(convert(split.x, None, domain.image_size), domain, seed=seed, tag=tag)
    return Split(convert(x, channels, size).to(device), split.y.to(device))


def class_subset_map(num_classes: int, classes: Sequence[int] | None = None,
                     class_groups: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
    """Old label -> new label (-1 = dropped) for ``classes`` (keep, relabel 0..k-1 in the given order) or
    ``class_groups`` (label = group index; labels outside every group dropped). Neither: identity."""
    groups = class_selection(num_classes, classes, class_groups)
    if groups is None:
        return torch.arange(num_classes)
    mapping = torch.full((num_classes,), -1, dtype=torch.long)
    for new, g in enumerate(groups):
        mapping[torch.tensor(g)] = new
    return mapping


def select_classes(x: torch.Tensor, y: torch.Tensor, mapping: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the samples whose label ``mapping`` keeps, relabelled."""
    new = mapping.to(y.device)[y]
    keep = new >= 0
    return x[keep], new[keep]


def subset_info(info: DatasetInfo, classes: Sequence[int] | None = None,
                class_groups: Sequence[Sequence[int]] | None = None) -> DatasetInfo:
    """``info`` with ``num_classes`` = the number of selected classes or groups (unchanged without a subset)."""
    if classes is not None:
        return dataclasses.replace(info, num_classes=len(classes))
    if class_groups is not None:
        return dataclasses.replace(info, num_classes=len(class_groups))
    return info


# ---------------------------------------------------------------- batched augmentation
def augment(x: torch.Tensor, *, crop_padding: int = 0, hflip: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, for a whole batch at once."""
    n, _, h, w = x.shape
    # The offsets are drawn on the CPU (the checkpointed generator); a blocking host-to-device copy
    # would synchronize the GPU stream on every batch, so the copies are non-blocking (safe from
    # pageable memory: CUDA stages the source before the call returns).
    if crop_padding > 0:
        p = crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device, non_blocking=True)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device, non_blocking=True)
        rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None])[:, None, :, None]
        cols = (torch.arange(w, device=x.device)[None, :] + dx[:, None])[:, None, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chan, rows, cols]
    if hflip:
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device, non_blocking=True)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


def random_affine(x: torch.Tensor, *, degrees: float, shear: float, shift: float, zoom: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample random rotation (up to ``degrees``), shear (up to ``shear``, a fraction of the size), shift (up to
    ``shift`` of the size, each axis) and zoom (scale in [``zoom``, 1]), one ``grid_sample`` for the whole batch;
    zeros fill what comes in from outside the image."""
    n = len(x)

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=generator) * (hi - lo) + lo

    angle = uniform(-degrees, degrees) * (math.pi / 180)
    sh, scale = uniform(-shear, shear), uniform(zoom, 1.0)
    shift_xy = torch.stack([uniform(-shift, shift), uniform(-shift, shift)], 1) * 2  # normalized coords span 2
    cos, sin = angle.cos(), angle.sin()
    rotate = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    shear_m = torch.eye(2).repeat(n, 1, 1)
    shear_m[:, 0, 1] = sh
    forward = rotate @ shear_m * scale[:, None, None]  # image point -> its place in the output
    inverse = torch.linalg.inv(forward)  # affine_grid maps each output point to where it samples the input
    theta = torch.cat([inverse, -(inverse @ shift_xy[:, :, None])], 2).to(x.device, x.dtype, non_blocking=True)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# The RegNet thesis's augmentation (seed 002, section 3.4.3): rotations up to 20 degrees, shears and shifts up to
# 20 % of the size, zooms down to 90 % of the size, in any combination (no flips, no crops).
THESIS_AFFINE = dict(degrees=20.0, shear=0.2, shift=0.2, zoom=0.9)


# ---------------------------------------------------------------- the augment switch (on / off / a named one)
Augment = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


@register("augment", "on")
def augment_on(image_size: int, hflip: bool, *, crop_padding: int | None, color_jitter: float) -> Augment | None:
    """Random crops (``crop_padding``: default 4 from 32 px, 2 from 16 px, else 0), the dataset's flips and,
    for RGB data, colour jitter of strength ``color_jitter`` (the config rejects it for grayscale)."""
    pad = crop_padding if crop_padding is not None else (4 if image_size >= 32 else 2 if image_size >= 16 else 0)
    if not (pad or hflip or color_jitter):
        return None
    if not color_jitter:
        return lambda x, generator: augment(x, crop_padding=pad, hflip=hflip, generator=generator)
    from .jitter import color_jitter as jitter

    return lambda x, generator: jitter(augment(x, crop_padding=pad, hflip=hflip, generator=generator), color_jitter,
                                       generator)


@register("augment", "off")
def augment_off(image_size: int, hflip: bool) -> None:
    return None


@register("augment", "affine")
def augment_affine(image_size: int, hflip: bool) -> Augment:
    """``THESIS_AFFINE``: the RegNet thesis's rotation / shear / shift / zoom augmentation, batched."""
    return lambda x, generator: random_affine(x, **THESIS_AFFINE, generator=generator)
