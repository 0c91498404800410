"""Datasets as raw integer pixels: digits (embedded default), MNIST idx files, CIFAR-10 python
batches, and a tiny synthetic set. Nothing here downloads anything.

Every image tensor is float32 (N, C, H, W) holding the unsigned integer pixel values exactly as
stored (0..16 for digits, 0..255 otherwise); normalisation belongs to the model, so the quantized
input of the accelerator sees the same integers. Labels are int64.
"""

from __future__ import annotations

import codecs
import gzip
import pickle
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from flow.core.errors import ConfigError, DataError

DATASETS = ("digits", "mnist", "cifar10", "synthetic")

MNIST_FILES = {  # split -> (images file, labels file); each may also be stored as <name>.gz
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_LAYOUT = (
    "expected an MNIST folder holding the four standard idx files, each plain or gzipped (.gz): "
    + ", ".join(f for pair in MNIST_FILES.values() for f in pair)
)
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR_LAYOUT = (
    f"expected the CIFAR-10 python-version folder '{CIFAR_FOLDER}' (or its parent) holding the "
    f"pickled batches {', '.join(CIFAR_FILES)}"
)


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Train/val/test splits of raw integer images (float32 NCHW) and int64 labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    in_shape: tuple[int, int, int]
    num_classes: int
    pixel_max: int

    def __post_init__(self) -> None:
        for split in ("train", "val", "test"):
            x, y = self.split(split)
            if x.dtype != torch.float32 or y.dtype != torch.int64 or len(x) != len(y):
                raise DataError(f"dataset {self.name!r}: malformed {split} split")

            if tuple(x.shape[1:]) != tuple(self.in_shape):
                raise DataError(f"dataset {self.name!r}: {split} images are not {self.in_shape}")

    @property
    def input_bits(self) -> int:
        """Bits of the unsigned integer input pixel (5 for digits, 8 for 0..255 images)."""
        return int(self.pixel_max).bit_length()

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of 'train', 'val' or 'test'."""
        if which not in ("train", "val", "test"):
            raise ConfigError(f"unknown split {which!r}; allowed: train, val, test")
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")

    def loaders(self, batch_size: int, seed: int = 0) -> tuple[DataLoader, DataLoader, DataLoader]:
        """Train (shuffled, seeded: same seed -> same batch order), val and test loaders."""
        gen = torch.Generator().manual_seed(seed)
        train, val, test = (TensorDataset(*self.split(s)) for s in ("train", "val", "test"))
        return (
            DataLoader(train, batch_size, shuffle=True, generator=gen),
            DataLoader(val, batch_size),
            DataLoader(test, batch_size),
        )

    def check_splits(self) -> None:
        """DataError unless every split holds the 2 samples a run needs at least."""
        for split in ("train", "val", "test"):
            n = len(self.split(split)[0])
            if n < 2:
                raise DataError(f"dataset {self.name!r}: the {split} split holds {n} samples; "
                                "training and evaluation need at least 2")

    def subset(self, split: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first n samples of a seeded permutation of a split: the one calibration subset
        every method, importance measure and PTQ step uses (same seed, same images)."""
        x, y = self.split(split)
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
        return x[idx], y[idx]

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.y_train)}, val={len(self.y_val)}, "
            f"test={len(self.y_test)}, in_shape={self.in_shape}, classes={self.num_classes}, "
            f"pixel_max={self.pixel_max})"
        )


def load_dataset(
    name: str,
    path: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    limit: int | None = None,
    *,
    shape: tuple[int, int, int] = (1, 8, 8),
) -> Dataset:
    """Load a dataset by name with a seeded stratified split (same seed -> identical split).

    digits and synthetic are split into train/val/test by the fractions; MNIST and CIFAR-10 keep
    their official test set (test_fraction is unused) and carve val from train. `limit` caps the
    number of training samples (a seeded subset). `shape` is used by 'synthetic' only.
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"val_fraction={val_fraction}, test_fraction={test_fraction}: each must be in [0, 1) "
            "and their sum below 1"
        )
    if limit is not None and limit < 1:
        raise ConfigError(f"limit={limit}: must be a positive number of training samples or None")

    pixel_max = 255
    if name == "digits":
        from sklearn.datasets import load_digits  # shipped with scikit-learn, no download

        digits = load_digits()
        x, y = digits.images[:, None].astype(np.uint8), digits.target
        parts, pixel_max = _split(x, y, seed, val_fraction, test_fraction), 16
    elif name == "synthetic":
        parts = _split(*make_synthetic(shape, seed=seed), seed, val_fraction, test_fraction)
    elif name == "mnist":
        folder = _require_folder(path, "mnist", MNIST_LAYOUT)
        (x_tr, y_tr), (x_te, y_te) = (_load_mnist_split(folder, s) for s in ("train", "test"))
        parts = [*_split(x_tr, y_tr, seed, val_fraction, 0.0)[:4], x_te, y_te]
    else:  # cifar10
        folder = _require_folder(path, "cifar10", CIFAR_LAYOUT)
        if not (folder / CIFAR_FILES[0]).exists() and (folder / CIFAR_FOLDER).is_dir():
            folder = folder / CIFAR_FOLDER
        batches = [_load_cifar_batch(folder / f) for f in CIFAR_FILES]
        x_tr = np.concatenate([b[0] for b in batches[:-1]])
        y_tr = np.concatenate([b[1] for b in batches[:-1]])
        parts = [*_split(x_tr, y_tr, seed, val_fraction, 0.0)[:4], *batches[-1]]
    ds = _make(name, parts, num_classes=10, pixel_max=pixel_max)

    if limit is not None and limit < len(ds.y_train):
        keep = np.sort(np.random.default_rng(seed).permutation(len(ds.y_train))[:limit])
        ds = replace(ds, x_train=ds.x_train[keep], y_train=ds.y_train[keep])
    return ds


def make_synthetic(
    shape: tuple[int, int, int] = (1, 8, 8),
    num_classes: int = 10,
    samples: int = 600,
    seed: int = 0,
    pixel_max: int = 255,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded class-dependent random binary patterns plus Gaussian noise: (uint8 NCHW, labels)."""
    rng = np.random.default_rng(seed)
    patterns = rng.random((num_classes, *shape)) < 0.5
    y = np.arange(samples) % num_classes
    x = 0.15 + 0.7 * patterns[y] + rng.normal(0.0, 0.15, (samples, *shape))
    return np.clip(np.rint(x * pixel_max), 0, pixel_max).astype(np.uint8), y


def stratified_split(
    y: np.ndarray, seed: int, val_fraction: float, test_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted (train, val, test) index arrays; each class is split by the fractions (seeded)."""
    rng = np.random.default_rng(seed)
    parts: tuple[list[np.ndarray], ...] = ([], [], [])
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = round(len(idx) * test_fraction)
        n_val = min(round(len(idx) * val_fraction), len(idx) - n_test)
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[0].append(idx[n_test + n_val :])
    train, val, test = (np.sort(np.concatenate(p)).astype(np.int64) for p in parts)
    return train, val, test


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte idx file (plain or gzipped) with `ndim` dims, validating its header."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip file ({exc}); {MNIST_LAYOUT}") from exc
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated idx file ({len(raw)} bytes, header needs {header})")
    magic = int.from_bytes(raw[:4], "big")
    if magic != 0x0800 + ndim:  # 0x00 0x00, type 0x08 = unsigned byte, number of dims
        raise DataError(
            f"{path}: bad idx magic number {magic} (0x{magic:08x}); expected {0x0800 + ndim} "
            f"(0x{0x0800 + ndim:08x}: unsigned-byte idx with {ndim} dimension(s))"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(
            f"{path}: idx file {what}: header dims {dims} need {expected} bytes, "
            f"file has {len(raw)}"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _load_mnist_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, H, W) uint8 and labels of one MNIST split, cross-checked."""
    img_name, lbl_name = MNIST_FILES[split]
    img_path, lbl_path = _find_idx(folder, img_name), _find_idx(folder, lbl_name)
    images, labels = read_idx(img_path, 3), read_idx(lbl_path, 1)
    if len(images) != len(labels):
        raise DataError(
            f"{img_path} holds {len(images)} images but {lbl_path} holds {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{lbl_path}: label {labels.max()} out of range 0..9")
    return images[:, None], labels.astype(np.int64)


def _find_idx(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"missing MNIST file {folder / name} (or {name}.gz); {MNIST_LAYOUT}")


_RECONSTRUCT = np.ndarray.__reduce__(np.empty(0))[0]  # numpy's array unpickling function
_PICKLE_GLOBALS = {  # all a CIFAR batch may name: Python 2 (numpy.core) or 3 spellings
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR batch holds (dicts, lists, strings, numpy uint8 arrays)."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return _PICKLE_GLOBALS[module, name]


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR-10 batch as (N, 3, 32, 32) uint8 and int64 labels."""
    if not path.is_file():
        raise DataError(f"missing CIFAR-10 file {path}; {CIFAR_LAYOUT}")
    try:
        with path.open("rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
        batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
        data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"], dtype=np.int64)
    except Exception as exc:  # any unpickling/format problem is a bad file, named as such
        raise DataError(f"{path}: not a CIFAR-10 python batch ({exc}); {CIFAR_LAYOUT}") from exc
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    if len(data) != len(labels):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels  # rows are 1024 R, then G, then B, row-major


def _require_folder(path: str | Path | None, name: str, layout: str) -> Path:
    if path is None:
        raise DataError(f"dataset {name!r} needs a path (nothing is downloaded); {layout}")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"{name} folder {folder} does not exist or is not a folder; {layout}")
    return folder


def _split(x: np.ndarray, y: np.ndarray, seed: int, val: float, test: float) -> list[np.ndarray]:
    """[x_train, y_train, x_val, y_val, x_test, y_test] by a seeded stratified split."""
    return [a[i] for i in stratified_split(y, seed, val, test) for a in (x, y)]


def _make(name: str, parts: list[np.ndarray], num_classes: int, pixel_max: int) -> Dataset:
    """Dataset from numpy [x_tr, y_tr, x_va, y_va, x_te, y_te]: float32 raw images, int64 labels."""
    xs = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in parts[0::2]]
    ys = [torch.from_numpy(np.asarray(a, dtype=np.int64)) for a in parts[1::2]]
    c, h, w = (int(d) for d in parts[0].shape[1:])
    return Dataset(
        name, xs[0], ys[0], xs[1], ys[1], xs[2], ys[2], (c, h, w), num_classes, pixel_max
    )
