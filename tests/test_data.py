"""Dataset layer: deterministic digits split, MNIST idx and CIFAR-10 batch parsing, clear errors."""

from __future__ import annotations

import dataclasses
import gzip
import io
import pickle
import struct
from collections import Counter
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from flow.core.errors import ConfigError, DataError, DensiflowError
from flow.ml.data import (
    CIFAR_FILES,
    MNIST_FILES,
    Dataset,
    load_dataset,
    read_idx,
    stratified_split,
)

MNIST_NAMES = [f for pair in MNIST_FILES.values() for f in pair]


def _rows(ds: Dataset, splits=("train", "val", "test")) -> Counter:
    """Multiset of (image bytes, label) over the given splits."""
    out: Counter = Counter()
    for s in splits:
        x, y = ds.split(s)
        out.update(zip((r.numpy().astype(np.uint8).tobytes() for r in x), y.tolist()))
    return out


# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", seed=3)


def test_digits_shapes_dtypes_range(digits: Dataset) -> None:
    assert digits.in_shape == (1, 8, 8) and digits.num_classes == 10
    assert digits.pixel_max == 16 and digits.input_bits == 5
    for s in ("train", "val", "test"):
        x, y = digits.split(s)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (1, 8, 8) and len(x) == len(y)
        assert x.min() >= 0 and x.max() <= 16 and torch.equal(x, x.round())  # raw integers
        assert set(y.tolist()) == set(range(10))  # stratified: every class in every split
    assert digits.x_train.max() == 16
    n = 1797
    assert len(digits.y_train) + len(digits.y_val) + len(digits.y_test) == n
    assert abs(len(digits.y_test) - 0.2 * n) <= 10 and abs(len(digits.y_val) - 0.15 * n) <= 10


def test_digits_split_covers_all_samples_exactly_once(digits: Dataset) -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    expected = Counter(zip((im.astype(np.uint8).tobytes() for im in d.images), d.target.tolist()))
    assert _rows(digits) == expected


def test_stratified_split_disjoint_and_covering() -> None:
    y = np.repeat(np.arange(5), [50, 40, 30, 20, 7])
    tr, va, te = stratified_split(y, seed=1, val_fraction=0.15, test_fraction=0.2)
    allidx = np.concatenate([tr, va, te])
    assert len(allidx) == len(y) and set(allidx.tolist()) == set(range(len(y)))
    for c, n in zip(range(5), [50, 40, 30, 20, 7]):
        assert (y[te] == c).sum() == round(0.2 * n) and (y[va] == c).sum() == round(0.15 * n)


def test_digits_split_deterministic_per_seed(digits: Dataset) -> None:
    again = load_dataset("digits", seed=3)
    for f in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(digits, f), getattr(again, f)), f
    other = load_dataset("digits", seed=4)
    assert not torch.equal(digits.y_test, other.y_test) or not torch.equal(
        digits.x_test, other.x_test
    )


def test_limit_caps_training_only(digits: Dataset) -> None:
    small = load_dataset("digits", seed=3, limit=100)
    assert len(small.y_train) == 100
    assert torch.equal(small.x_test, digits.x_test) and torch.equal(small.x_val, digits.x_val)
    assert _rows(small, ["train"]) <= _rows(digits, ["train"])


def test_loaders_seeded_and_frozen(digits: Dataset) -> None:
    first = [y for _, y in digits.loaders(64, seed=7)[0]]
    second = [y for _, y in digits.loaders(64, seed=7)[0]]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    train, _val, test = digits.loaders(64, seed=7)
    x, y = next(iter(train))
    assert x.shape == (64, 1, 8, 8) and y.shape == (64,)
    assert sum(len(b[1]) for b in test) == len(digits.y_test)
    with pytest.raises(dataclasses.FrozenInstanceError):
        digits.name = "other"  # type: ignore[misc]
    assert "digits" in repr(digits)


def test_synthetic_is_small_seeded_and_shaped() -> None:
    a = load_dataset("synthetic", seed=5, shape=(3, 6, 5))
    b = load_dataset("synthetic", seed=5, shape=(3, 6, 5))
    assert a.in_shape == (3, 6, 5) and a.x_train.shape[1:] == (3, 6, 5)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert 0 <= a.x_train.min() and a.x_train.max() <= a.pixel_max == 255
    # class-dependent: the per-class mean images differ clearly
    means = torch.stack([a.x_train[a.y_train == c].mean(0) for c in range(a.num_classes)])
    assert torch.cdist(means.flatten(1), means.flatten(1)).fill_diagonal_(1e9).min() > 100


def test_unknown_name_and_bad_fractions() -> None:
    with pytest.raises(ConfigError, match="allowed: digits, mnist, cifar10, synthetic"):
        load_dataset("imagenet")
    with pytest.raises(ConfigError, match="val_fraction"):
        load_dataset("digits", val_fraction=0.5, test_fraction=0.6)
    with pytest.raises(ConfigError, match="limit"):
        load_dataset("digits", limit=0)


# ---------------------------------------------------------------- MNIST idx files


def _idx_bytes(arr: np.ndarray) -> bytes:
    """Standard idx: magic 0x0000 08 <ndim>, big-endian uint32 dims, then unsigned bytes."""
    header = struct.pack(">I", 0x0800 + arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_mnist(folder: Path, gz: bool | str, n_train=40, n_test=12, hw=(28, 28)) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, *hw), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, *hw), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, arr) in enumerate(arrays.items()):
        use_gz = gz if isinstance(gz, bool) else i % 2 == 0  # "mixed": alternate
        data = _idx_bytes(arr)
        if use_gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [False, True, "mixed"])
def test_mnist_idx_round_trip(tmp_path: Path, gz) -> None:
    arrays = _write_mnist(tmp_path, gz)
    ds = load_dataset("mnist", tmp_path, seed=1)
    assert ds.in_shape == (1, 28, 28) and ds.pixel_max == 255 and ds.input_bits == 8
    assert ds.x_test.dtype == torch.float32 and ds.y_test.dtype == torch.int64
    # official test split kept in order, values bit for bit
    test_images = ds.x_test[:, 0].numpy().astype(np.uint8)
    assert np.array_equal(test_images, arrays["t10k-images-idx3-ubyte"])
    assert ds.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    # val carved from train: together they are exactly the training file
    expected = Counter(
        zip(
            (im.tobytes() for im in arrays["train-images-idx3-ubyte"]),
            arrays["train-labels-idx1-ubyte"].tolist(),
        )
    )
    assert _rows(ds, ["train", "val"]) == expected
    assert len(ds.y_val) == 10 * round(4 * 0.15)


def test_mnist_bad_magic_names_file(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz=False)
    bad = tmp_path / "train-labels-idx1-ubyte"
    raw = bytearray(bad.read_bytes())
    raw[3] = 3  # claims 3 dims: the magic of an images file
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.*magic"):
        load_dataset("mnist", tmp_path)


def test_mnist_truncated_file_names_file(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz=True)
    f = tmp_path / "t10k-images-idx3-ubyte.gz"
    f.write_bytes(gzip.compress(gzip.decompress(f.read_bytes())[:-5]))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz.*truncated"):
        load_dataset("mnist", tmp_path)
    with pytest.raises(DataError, match="truncated"):
        read_idx(_write_bytes(tmp_path / "tiny", b"\x00\x00"), 1)


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_mnist_missing_file_names_it_and_layout(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path)
    msg = str(err.value)
    assert f"missing MNIST file {tmp_path / 't10k-labels-idx1-ubyte'}" in msg
    assert all(name in msg for name in MNIST_NAMES)  # the expected layout is spelled out
    with pytest.raises(DataError, match="does not exist.*train-images-idx3-ubyte"):
        load_dataset("mnist", tmp_path / "nowhere")
    with pytest.raises(DataError, match="needs a path"):
        load_dataset("mnist")


def test_mnist_count_mismatch(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(39, np.uint8)))
    with pytest.raises(DataError, match="40 images but .*train-labels-idx1-ubyte holds 39"):
        load_dataset("mnist", tmp_path)


# ---------------------------------------------------------------- CIFAR-10 python batches


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Pickles like Python 2's cPickle (protocol 2): every str/bytes as a byte string."""

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self.save_bytes(obj.encode("latin1"))

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]
    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def _py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 1.x under Python 2 names the reconstructor numpy.core.multiarray
    return buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def _write_cifar(root: Path, n: int = 6) -> dict:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    batches = {}
    for i, name in enumerate(CIFAR_FILES):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in (np.arange(n) + i) % 10]
        batch = {
            "batch_label": f"{'testing' if name == 'test_batch' else 'training'} batch",
            "labels": labels,
            "data": data,
            "filenames": [f"img_{i}_{j}.png" for j in range(n)],
        }
        (folder / name).write_bytes(_py2_pickle(batch))
        batches[name] = (data, labels)
    (folder / "batches.meta").write_bytes(_py2_pickle({"label_names": ["airplane"] * 10}))
    return batches


def test_cifar_chw_layout_from_folder_or_parent(tmp_path: Path) -> None:
    batches = _write_cifar(tmp_path)
    for where in (tmp_path, tmp_path / "cifar-10-batches-py"):
        ds = load_dataset("cifar10", where, seed=0, val_fraction=0.0)
        assert ds.in_shape == (3, 32, 32) and ds.input_bits == 8
        data, labels = batches["test_batch"]
        assert ds.y_test.tolist() == labels
        for i, c, h, w in [(0, 0, 0, 0), (1, 0, 5, 31), (2, 1, 0, 3), (3, 2, 31, 31), (5, 2, 7, 1)]:
            assert ds.x_test[i, c, h, w].item() == data[i, c * 1024 + h * 32 + w]
        assert np.array_equal(ds.x_test.numpy().astype(np.uint8).reshape(len(data), -1), data)
        train = np.concatenate([batches[f][0] for f in CIFAR_FILES[:-1]])
        assert np.array_equal(ds.x_train.numpy().astype(np.uint8).reshape(len(train), -1), train)


def test_cifar_val_carved_from_train(tmp_path: Path) -> None:
    _write_cifar(tmp_path, n=20)
    ds = load_dataset("cifar10", tmp_path, seed=0, val_fraction=0.2)
    assert len(ds.y_val) == 20 and len(ds.y_train) == 80 and len(ds.y_test) == 20


def test_cifar_missing_and_bad_batch(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_4").unlink()
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path)
    assert "data_batch_4" in str(err.value) and all(f in str(err.value) for f in CIFAR_FILES)
    (folder / "data_batch_4").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_4.*not a CIFAR-10 python batch"):
        load_dataset("cifar10", tmp_path)
    # a pickle naming anything else than numpy arrays is refused, not executed
    (folder / "data_batch_4").write_bytes(pickle.dumps({"data": Path("x")}, protocol=2))
    with pytest.raises(DataError, match="data_batch_4.*refusing"):
        load_dataset("cifar10", tmp_path)
    (folder / "data_batch_4").write_bytes(
        _py2_pickle({"data": np.zeros((2, 3072), np.uint8), "labels": [0]})
    )
    with pytest.raises(DensiflowError, match="data_batch_4: 2 images but 1 labels"):
        load_dataset("cifar10", tmp_path)
