import gzip
import hashlib
import struct

import numpy as np
import pytest
import torch

import zspace
from zspace import ArrayData, BatchLoader, DataError, Preprocessing
from zspace.data import read_idx, sources
from zspace.data.idx import read_idx_bytes

from .conftest import rng_images


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    dt = {0x08: ">u1", 0x0D: ">f4"}[code]
    head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + arr.astype(dt).tobytes()


def write_idx_set(folder, n_train=30, n_test=10, gz=True, labels_train=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    parts = {"train": n_train, "t10k": n_test}
    for prefix, n in parts.items():
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, (labels_train if prefix == "train" and labels_train else n,),
                              dtype=np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            raw = idx_bytes(arr)
            name = f"{prefix}-{kind}-ubyte" + (".gz" if gz else "")
            (folder / name).write_bytes(gzip.compress(raw) if gz else raw)


# ---- IDX --------------------------------------------------------------------------------
def test_idx_round_trip(tmp_path):
    arr = rng_images(5, (3, 4))
    assert np.array_equal(read_idx_bytes(idx_bytes(arr)), arr)
    f = tmp_path / "x-idx3-ubyte.gz"
    f.write_bytes(gzip.compress(idx_bytes(arr)))
    assert np.array_equal(read_idx(f), arr)
    floats = np.random.default_rng(1).random((2, 3)).astype(np.float32)
    assert np.array_equal(read_idx_bytes(idx_bytes(floats, 0x0D)), floats)


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b"\x01" + b[1:], "magic"),
    (lambda b: b[:2] + b"\x07" + b[3:], "type code"),
    (lambda b: b[:3] + b"\x00", "zero dimensions"),
    (lambda b: b[:-1], "truncated"),
    (lambda b: b + b"\x00", "trailing bytes"),
    (lambda b: b[:6], "header truncated"),
    (lambda b: b[:2], "not an IDX file"),
])
def test_idx_rejects_malformed_files(mutate, message):
    good = idx_bytes(rng_images(2, (3, 3)))
    with pytest.raises(DataError, match=message):
        read_idx_bytes(mutate(good))


def test_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_idx(tmp_path / "nope-idx1-ubyte")


# ---- named data sets ----------------------------------------------------------------------
def test_named_set_found_through_zspace_data(tmp_path, monkeypatch):
    write_idx_set(tmp_path / "fashion-mnist")
    monkeypatch.setenv("ZSPACE_DATA", str(tmp_path))
    d = zspace.load_dataset("fashion-mnist", download_missing=False)
    assert (len(d.train), len(d.test)) == (30, 10)
    assert d.example_shape == (1, 28, 28) and d.train.x.dtype == np.uint8
    assert d.train.y is not None and d.train.y.dtype == np.int64


def test_named_set_plain_idx_files(tmp_path, monkeypatch):
    write_idx_set(tmp_path / "mnist", gz=False)
    monkeypatch.setenv("ZSPACE_DATA", str(tmp_path))
    assert len(zspace.load_dataset("mnist", download_missing=False).train) == 30


def test_named_set_label_count_mismatch(tmp_path, monkeypatch):
    write_idx_set(tmp_path / "fashion-mnist", labels_train=29)
    monkeypatch.setenv("ZSPACE_DATA", str(tmp_path))
    with pytest.raises(DataError, match="30 train images but 29 labels"):
        zspace.load_dataset("fashion-mnist", download_missing=False)


def test_mnist_keras_npz(tmp_path, monkeypatch):
    (tmp_path / "mnist").mkdir()
    np.savez(tmp_path / "mnist" / "mnist.npz", x_train=rng_images(20, (28, 28)),
             y_train=np.arange(20) % 10, x_test=rng_images(5, (28, 28)), y_test=np.arange(5))
    monkeypatch.setenv("ZSPACE_DATA", str(tmp_path))
    d = zspace.load_dataset("mnist", download_missing=False)
    assert d.train.x.shape == (20, 1, 28, 28) and len(d.test) == 5


def test_missing_named_set_says_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("ZSPACE_DATA", str(tmp_path))
    with pytest.raises(DataError, match="fashion-mnist not found in .*dataset-fashion-mnist"):
        sources.load_idx_dataset("fashion-mnist", download_missing=False)


def _fake_official(monkeypatch, tmp_path, corrupt=False):
    """Serves an IDX set from a file:// 'official source' with its true (or a wrong) MD5."""
    served = tmp_path / "served"
    write_idx_set(served)
    files = {}
    for f in served.iterdir():
        md5 = hashlib.md5(f.read_bytes()).hexdigest()
        files[f.name] = "0" * 32 if corrupt else md5
    monkeypatch.setitem(sources._IDX_SETS, "fashion-mnist",
                        {"url": served.as_uri() + "/", "files": files})
    monkeypatch.setattr(sources, "search_dirs", lambda name: [tmp_path / "nowhere"])


def test_download_verifies_checksum_and_caches(monkeypatch, tmp_path):
    _fake_official(monkeypatch, tmp_path)
    d = sources.load_idx_dataset("fashion-mnist")
    assert len(d.train) == 30
    assert (sources.cache_dir() / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file()


def test_download_with_bad_checksum_is_discarded(monkeypatch, tmp_path):
    _fake_official(monkeypatch, tmp_path, corrupt=True)
    with pytest.raises(DataError, match="checksum mismatch"):
        sources.load_idx_dataset("fashion-mnist")
    assert not list((sources.cache_dir() / "fashion-mnist").glob("*.gz"))


def test_digits_is_embedded(digits):
    assert digits.example_shape == (1, 8, 8)
    assert len(digits.train) + len(digits.test) == 1797
    assert digits.train.x.max() == 255 and digits.train.x.dtype == np.uint8


# ---- the user's arrays and files --------------------------------------------------------------
@pytest.mark.parametrize("x, message", [
    (np.array([[0.1, np.nan]]), "NaN or infinite"),
    (np.array([[0.1, np.inf]]), "NaN or infinite"),
    (np.array([[np.inf, -np.inf]], np.float32), "2 NaN or infinite"),     # their sum is NaN, not a cancellation
    (np.array([[0.5, np.inf], [np.nan, 1]], np.float16), "2 NaN or infinite"),
    (np.array([[1e300, 0.0]]), "beyond float32's range"),
    (np.zeros((0, 4)), "empty"),
    (np.zeros(4), "at least 2 dimensions"),
    (np.array([["a", "b"]]), "not numeric"),
    (np.array([[1, 300]]), r"\[0, 255\]"),
    (np.zeros((3, 0)), "no features"),
])
def test_bad_arrays_are_rejected(x, message):
    with pytest.raises(DataError, match=message):
        ArrayData.from_arrays(x)


def test_large_finite_float32_values_are_accepted():
    x = np.full((4, 3), np.finfo(np.float32).max, np.float32)     # a float32 sum would overflow; float64's cannot
    assert np.array_equal(ArrayData.from_arrays(x).x, x)


def test_labels_must_match():
    with pytest.raises(DataError, match="3 examples but 2 labels"):
        ArrayData.from_arrays(np.zeros((3, 2), np.float32), [0, 1])
    with pytest.raises(DataError, match="whole numbers"):
        ArrayData.from_arrays(np.zeros((2, 2), np.float32), [0.5, 1])


def test_mismatched_split_shapes():
    a = ArrayData.from_arrays(np.zeros((3, 4), np.float32))
    b = ArrayData.from_arrays(np.zeros((3, 5), np.float32))
    with pytest.raises(DataError, match="shape"):
        zspace.DataSplits(a, b, "x")


def test_scale_rejects_out_of_range_floats():
    data = ArrayData.from_arrays(np.array([[0.5, 2.0]], np.float32))
    with pytest.raises(DataError, match=r"needs \[0, 1\]"):
        Preprocessing("scale").check(data)
    Preprocessing("none").check(data)  # real-valued features are fine unscaled
    with pytest.raises(DataError, match="needs 8-bit"):
        Preprocessing("uint8").check(data)


def test_npy_npz_csv_files(tmp_path):
    np.save(tmp_path / "a.npy", np.random.default_rng(0).random((50, 6)).astype(np.float32))
    d = zspace.load_dataset(str(tmp_path / "a.npy"))
    assert (len(d.train), len(d.test)) == (45, 5) and d.example_shape == (6,)
    np.savez(tmp_path / "b.npz", x=rng_images(20, (4, 4)), y=np.arange(20))
    assert zspace.load_dataset(str(tmp_path / "b.npz")).train.y is not None
    (tmp_path / "c.csv").write_text("f1,f2,label\n" + "\n".join(f"{i},{i * 0.5},{i % 2}" for i in range(20)))
    d = zspace.load_dataset(str(tmp_path / "c.csv"), label_column="label")
    assert d.example_shape == (2,) and set(d.train.y) <= {0, 1}


@pytest.mark.parametrize("content, message", [
    ("1,2\n3\n", "different numbers of columns"),
    ("1,2\n3,x\n", "non-numeric"),
    ("", "empty CSV"),
    ("a,b\n", "no data rows"),
])
def test_bad_csv(tmp_path, content, message):
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(DataError, match=message):
        zspace.load_dataset(str(tmp_path / "bad.csv"))


def test_unknown_files_and_names(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        zspace.load_dataset(str(tmp_path / "missing.npy"))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="unknown file type"):
        zspace.load_dataset(str(tmp_path / "x.txt"))
    with pytest.raises(DataError, match="unknown data set"):
        zspace.load_dataset("cifar")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        zspace.load_dataset(str(tmp_path / "bad.npz"))


# ---- preprocessing and batches ------------------------------------------------------------------
def _images(n=40):
    return ArrayData.from_arrays(rng_images(n), np.arange(n) % 10)


def _epoch_x(loader, epoch):
    return torch.cat([b.x for b in loader.epoch(epoch)]), np.concatenate([b.index for b in loader.epoch(epoch)])


def test_dynamic_binarization_is_fresh_each_epoch_and_reproducible():
    loader = BatchLoader(_images(), 16, Preprocessing("dynamic-binarize"), shuffle=False, seed=3)
    a, _ = _epoch_x(loader, 0)
    b, _ = _epoch_x(loader, 1)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(a, b)
    assert torch.equal(a, _epoch_x(loader, 0)[0])
    # Bernoulli(p) with p = pixel / 255: the mean over many epochs approaches p.
    mean = torch.stack([_epoch_x(loader, e)[0] for e in range(200)]).mean(0)
    p = torch.from_numpy(_images().x).float() / 255
    assert (mean - p).abs().mean() < 0.03


def test_static_binarization_is_fixed_per_example():
    pre = Preprocessing("static-binarize", static_seed=7)
    loader = BatchLoader(_images(), 16, pre, shuffle=True, seed=1)
    xa, ia = _epoch_x(loader, 0)
    xb, ib = _epoch_x(loader, 1)
    assert not np.array_equal(ia, ib)           # order changes...
    assert torch.equal(xa[np.argsort(ia)], xb[np.argsort(ib)])  # ...the draw does not
    other = BatchLoader(_images(), 16, Preprocessing("static-binarize", static_seed=8), shuffle=True, seed=1)
    assert not torch.equal(xa, _epoch_x(other, 0)[0])


def test_eight_bit_and_dequantize():
    x8, _ = _epoch_x(BatchLoader(_images(), 16, Preprocessing("uint8"), shuffle=False), 0)
    assert x8.dtype == torch.int64 and torch.equal(x8, torch.from_numpy(_images().x).long())
    xd, _ = _epoch_x(BatchLoader(_images(), 16, Preprocessing("dequantize"), shuffle=False), 0)
    assert xd.min() >= 0 and xd.max() < 1
    assert torch.equal(torch.floor(xd * 256).long(), x8)
    # Every draw stays in its pixel's bin, even where float32 would round up (pixel 255, u -> 1).
    edge = ArrayData.from_arrays(np.full((4000, 1, 32, 32), 255, np.uint8))
    big = torch.cat([b.x for b in BatchLoader(edge, 1000, Preprocessing("dequantize")).epoch(0)])
    assert big.max() < 1.0 and big.min() >= 255 / 256


def test_each_epoch_covers_every_example_once():
    loader = BatchLoader(_images(37), 8, Preprocessing("scale"), seed=5)
    _, idx = _epoch_x(loader, 4)
    assert sorted(idx.tolist()) == list(range(37)) and len(loader) == 5


def test_resume_position_gives_the_same_batches():
    loader = BatchLoader(_images(), 8, Preprocessing("dynamic-binarize"), seed=2)
    full = list(loader.epoch(3))
    tail = list(loader.epoch(3, start=2))
    assert all(torch.equal(a.x, b.x) for a, b in zip(full[2:], tail))


def test_ranks_share_the_epoch_without_overlap():
    data = _images(40)
    pre = Preprocessing("scale")
    parts = [np.concatenate([b.index for b in BatchLoader(data, 8, pre, seed=1, rank=r, world_size=2).epoch(0)])
             for r in range(2)]
    assert not set(parts[0]) & set(parts[1])
    assert sorted(np.concatenate(parts).tolist()) == list(range(40))
