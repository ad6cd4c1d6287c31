"""The dataset contract over every source, views, the shard store, images, workers."""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import zspace
from zspace import DataError
from zspace.data import (ArrayData, BatchLoader, Concat, ImageFolder, Preprocessing, ShardStore,
                         ShardWriter, Subset)
from zspace.data.loader import block_permutation
from zspace.data.sources import split_holdout

from .conftest import rng_images

N = 24


def _write_images(folder, n=N, size=(12, 10), mode="RGB", fmt="PNG", classes=("cat", "dog")):
    rng = np.random.default_rng(1)
    arrays = []
    for i in range(n):
        a = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        img = Image.fromarray(a).convert(mode)
        d = folder / classes[i % len(classes)]
        d.mkdir(parents=True, exist_ok=True)
        img.save(d / f"{i:03d}.{fmt.lower().replace('jpeg', 'jpg')}", fmt)
        arrays.append(np.asarray(img))
    return arrays


def _zip_folder(folder, out):
    with zipfile.ZipFile(out, "w") as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder.parent).as_posix())
    return out


@pytest.fixture
def image_folder(tmp_path):
    _write_images(tmp_path / "pics")
    return tmp_path / "pics"


def _sources(tmp_path, kind):
    x = rng_images(N, (3, 6, 5))
    y = np.arange(N) % 3
    if kind == "memory":
        return ArrayData.from_arrays(x, y)
    if kind == "memmap-float16":
        np.save(tmp_path / "h.npy", (x / 255.0).astype(np.float16))
        return zspace.data.sources.load_npy(tmp_path / "h.npy")
    if kind == "shards":
        with ShardWriter(tmp_path / "store", x.shape[1:], "uint8", columns={"y": "int64"},
                         rows_per_shard=7) as w:
            for start in range(0, N, 5):
                w.append(x[start:start + 5], y=y[start:start + 5])
        return ShardStore(tmp_path / "store")
    if kind in ("folder", "zip"):
        _write_images(tmp_path / "pics")
        root = tmp_path / "pics" if kind == "folder" else _zip_folder(tmp_path / "pics", tmp_path / "pics.zip")
        return ImageFolder(root, prefix="" if kind == "folder" else "pics")
    if kind == "subset":
        return ArrayData.from_arrays(x, y).subset(np.arange(N)[::-1])
    if kind == "concat":
        return Concat([ArrayData.from_arrays(x[:10], y[:10]), ArrayData.from_arrays(x[10:], y[10:])])
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["memory", "memmap-float16", "shards", "folder", "zip", "subset", "concat"])
def test_every_source_keeps_the_contract(tmp_path, kind):
    data = _sources(tmp_path, kind)
    assert len(data) == N
    assert data.dtype in (np.uint8, np.float32)
    idx = np.random.default_rng(0).permutation(N)[:9]
    batch = data.read(idx)
    assert batch.shape == (9, *data.example_shape) and batch.dtype == data.dtype
    for row, i in enumerate(idx):                   # a batch is its rows, in the order asked
        assert np.array_equal(batch[row], data.read([i])[0])
    if data.y is not None:
        assert data.y.shape == (N,) and data.y.dtype == np.int64
    pre = Preprocessing("scale")
    loader = BatchLoader(data, 5, pre, seed=3)
    seen = np.concatenate([b.index for b in loader.epoch(1)])
    assert sorted(seen.tolist()) == list(range(N))
    view = data.subset([3, 1])
    assert np.array_equal(view.read([0, 1]), data.read([3, 1]))


def test_splits_and_subsets_are_views_not_copies(tmp_path):
    x = rng_images(50, (1, 4, 4))
    data = ArrayData.from_arrays(x)
    splits = split_holdout(data, 0.2, seed=0)
    assert isinstance(splits.train, Subset) and splits.train.base is data
    assert np.shares_memory(splits.train.base.x, x) and np.shares_memory(splits.test.base.x, x)
    assert len(splits.train) + len(splits.test) == 50
    assert isinstance(splits.all(), Concat)
    # a memory-mapped .npy stays mapped through loading and splitting
    np.save(tmp_path / "a.npy", np.random.default_rng(0).random((40, 3)).astype(np.float32))
    loaded = zspace.load_dataset(str(tmp_path / "a.npy"))
    assert isinstance(loaded.train.base.x, np.memmap)
    assert loaded.train.on_disk


def test_memmap_rows_are_checked_when_read_and_name_the_row(tmp_path):
    x = np.random.default_rng(0).random((30, 4)).astype(np.float16)
    x[17, 2] = np.nan
    np.save(tmp_path / "bad.npy", x)
    data = zspace.load_dataset(str(tmp_path / "bad.npy"), test_fraction=0.5).all()  # opening does not scan
    ok = [i for i in range(30) if i != data_row(data, 17)]
    data.read(ok)
    with pytest.raises(DataError, match="NaN or infinite values \\(first at row 17\\)"):
        data.read(np.arange(30))


def data_row(data, row):
    """Position of stored row ``row`` in a concatenation of two split views."""
    bases = np.concatenate([p.indices for p in data.parts])
    return int(np.nonzero(bases == row)[0][0])


def test_channels_last_images_are_recognised(tmp_path):
    x = rng_images(8, (32, 32, 3))
    np.save(tmp_path / "hwc.npy", x)
    d = zspace.load_dataset(str(tmp_path / "hwc.npy"), test_fraction=0.25).all()
    assert d.example_shape == (3, 32, 32)
    rows = np.concatenate([p.indices for p in d.parts])
    assert np.array_equal(d.read([0])[0], x[rows[0]].transpose(2, 0, 1))
    with pytest.raises(DataError, match="neither"):
        ArrayData.from_arrays(np.zeros((2, 8, 8, 8), np.uint8))


def test_block_order_is_a_deterministic_permutation():
    a = block_permutation(960, np.random.default_rng([4, 2]), 64, 3)
    b = block_permutation(960, np.random.default_rng([4, 2]), 64, 3)
    assert np.array_equal(a, b) and sorted(a.tolist()) == list(range(960))
    assert not np.array_equal(a, np.arange(960))
    # every window of 3 blocks draws from at most 3 blocks of the file
    assert all(len(np.unique(a[w:w + 192] // 64)) <= 3 for w in range(0, 960, 192))


# ---- the shard store ----------------------------------------------------------------------------
def test_shard_store_round_trip_columns_and_checksums(tmp_path):
    x = np.random.default_rng(0).normal(size=(23, 5)).astype(np.float32)
    tok = np.arange(23, dtype=np.int32)
    with ShardWriter(tmp_path / "s", (5,), "bfloat16", columns={"token": "int32"}, rows_per_shard=10,
                     metadata={"layer": "blocks.2"}) as w:
        w.append(x, token=tok)
    store = ShardStore(tmp_path / "s")
    assert len(store) == 23 and len(store.manifest["shards"]) == 3 and store.metadata["layer"] == "blocks.2"
    assert np.allclose(store.read(np.arange(23)), x, rtol=1 / 128)      # bf16: 8 bits of mantissa
    assert np.array_equal(store.column("token", [22, 0]), [22, 0])
    store.verify()
    path = tmp_path / "s" / "shard-000001.npy"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="checksum mismatch"):
        ShardStore(tmp_path / "s").verify()


_KILLER = r"""
import os, signal, sys
import numpy as np
from zspace.data.shards import ShardWriter
real = np.lib.format.write_array
calls = []
def dying(fp, arr, **kw):
    calls.append(1)
    if len(calls) == 4:                     # the 4th shard file: half written, then SIGKILL
        fp.write(b"\x93NUMPY" + b"\0" * 100)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(fp, arr, **kw)
np.lib.format.write_array = dying
w = ShardWriter(sys.argv[1], (3,), "float32", rows_per_shard=4)
for i in range(6):
    w.append(np.full((4, 3), i, np.float32))
"""


def test_a_writer_killed_mid_shard_leaves_a_store_that_opens_and_resumes(tmp_path):
    out = tmp_path / "s"
    proc = subprocess.run([sys.executable, "-c", _KILLER, str(out)], capture_output=True)
    assert proc.returncode == -9
    store = ShardStore(out)                       # the three complete shards
    assert len(store) == 12 and np.array_equal(store.read([11])[0], [2, 2, 2])
    assert any(p.name.endswith(".tmp") for p in out.iterdir())
    w = ShardWriter(out, resume=True, rows_per_shard=4)
    assert w.rows == 12 and not any(p.name.endswith(".tmp") for p in out.iterdir())
    for i in range(w.rows // 4, 6):
        w.append(np.full((4, 3), i, np.float32))
    done = w.close()
    assert len(done) == 24 and np.array_equal(done.read(np.arange(0, 24, 4))[:, 0], np.arange(6))
    done.verify()


def test_a_manifest_that_lies_is_refused(tmp_path):
    with ShardWriter(tmp_path / "s", (2,), "float32", rows_per_shard=5) as w:
        w.append(np.zeros((10, 2), np.float32))
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    m["shards"][1]["rows"] = 7
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match="shard-000001.npy: holds float32 \\(5, 2\\) but the manifest says"):
        ShardStore(tmp_path / "s")
    m["shards"][1]["rows"] = 5
    m["shards"].append({"rows": 3, "sha256": {}})
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match="missing"):
        ShardStore(tmp_path / "s")
    (tmp_path / "s" / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="manifest.json: not valid JSON"):
        ShardStore(tmp_path / "s")


# ---- images ---------------------------------------------------------------------------------------
def test_folder_and_zip_give_identical_batches(tmp_path):
    _write_images(tmp_path / "pics", fmt="JPEG")
    folder = ImageFolder(tmp_path / "pics")
    zipped = ImageFolder(_zip_folder(tmp_path / "pics", tmp_path / "p.zip"), prefix="pics")
    assert folder.classes == zipped.classes == ("cat", "dog")
    assert np.array_equal(folder.y, zipped.y) and folder.y.tolist() == [0, 1] * 12   # interleaved
    for loader_a, loader_b in [(BatchLoader(folder, 7, Preprocessing("dynamic-binarize"), seed=2),
                                BatchLoader(zipped, 7, Preprocessing("dynamic-binarize"), seed=2))]:
        for a, b in zip(loader_a.epoch(1), loader_b.epoch(1)):
            assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    first = folder.files.index("cat/000.jpg")
    decoded = np.asarray(Image.open(tmp_path / "pics" / "cat" / "000.jpg").convert("RGB"))  # JPEG: lossy
    assert np.array_equal(folder.read([first])[0], decoded.transpose(2, 0, 1))
    resized = ImageFolder(tmp_path / "pics", image_size=8, channels=1)
    assert resized.example_shape == (1, 8, 8)


def test_class_folders_are_listed_so_that_every_prefix_holds_every_class(tmp_path):
    for i in range(12):                                   # 3 of class a, 9 of class b, folders in name order
        d = tmp_path / "pics" / ("a" if i < 3 else "b")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(d / f"{i:03d}.png")
    data = ImageFolder(tmp_path / "pics")
    y = data.y.tolist()
    assert sorted(y) == [0] * 3 + [1] * 9 and y[:4].count(0) == 1 and y[:8].count(0) == 2
    for m in range(1, 13):                                # each prefix within one image of proportional
        assert abs(y[:m].count(0) - m * 3 / 12) <= 1
    for c in "ab":                                        # a class's files keep their name order
        mine = [f for f in data.files if f.startswith(c + "/")]
        assert mine == sorted(mine)
    assert data.read([0])[0, 0, 0, 0] == int(data.files[0][2:5])    # pixels follow the file list


def test_workers_give_the_same_batches_in_the_same_order(image_folder):
    data = ImageFolder(image_folder)
    pre = Preprocessing("dynamic-binarize")
    one = list(BatchLoader(data, 5, pre, seed=9).epoch(2, start=1))
    two = list(BatchLoader(data, 5, pre, seed=9, workers=2).epoch(2, start=1))
    assert len(one) == len(two) == 4
    for a, b in zip(one, two):
        assert torch.equal(a.x, b.x) and np.array_equal(a.index, b.index)


def test_exact_resume_on_an_image_folder_with_workers(tmp_path, image_folder):
    """Mid-epoch stop and resume on decoded images gives the uninterrupted run's weights."""
    cfg = zspace.TrainConfig(epochs=None, steps=7, batch_size=4, lr=3e-3, seed=2, lr_schedule="constant")
    opts = dict(latent_dim=3, hidden=(16,), figures=False, progress=False, image_size=8, image_channels=1)
    full = zspace.train("vae", str(image_folder), out=tmp_path / "full", config=cfg, **opts)
    zspace.train("vae", str(image_folder), out=tmp_path / "part", config=cfg.replace(steps=3), **opts)
    resumed = zspace.training.resume(tmp_path / "part", steps=7, progress=False, figures=False)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert resumed.data_spec.image_size == 8 and resumed.data_spec.image_channels == 1
    assert zspace.load_run(tmp_path / "full").data().train.example_shape == (1, 8, 8)


@pytest.mark.parametrize("damage, message", [
    ("truncated-jpeg", "not a readable image"),
    ("text-as-png", "not a readable image"),
    ("grey-in-rgb", "grey image in an RGB set"),
    ("other-size", "differs from the first image"),
])
def test_bad_images_are_named_or_skipped(tmp_path, image_folder, damage, message):
    bad = image_folder / "dog" / "zzz-bad.png"
    if damage == "truncated-jpeg":
        bad = bad.with_suffix(".jpg")
        buf = __import__("io").BytesIO()
        Image.fromarray(rng_images(1, (10, 12, 3))[0]).save(buf, "JPEG")
        bad.write_bytes(buf.getvalue()[:200])
    elif damage == "text-as-png":
        bad.write_text("this is not an image")
    elif damage == "grey-in-rgb":
        Image.fromarray(rng_images(1, (10, 12))[0]).save(bad)
    else:
        Image.fromarray(rng_images(1, (11, 12, 3))[0]).save(bad)
    data = ImageFolder(image_folder)
    pos = data.files.index(bad.relative_to(image_folder).as_posix())
    with pytest.raises(DataError, match=message) as err:
        data.read(np.arange(len(data)))
    assert bad.name in str(err.value)
    lenient = ImageFolder(image_folder, skip_bad=True)
    loader = BatchLoader(lenient, 10, Preprocessing("scale"), shuffle=False)
    batches = list(loader.epoch(0))
    assert sum(len(b) for b in batches) == len(data) - 1 and loader.skipped == 1
    assert pos not in np.concatenate([b.index for b in batches])


def test_bad_folders_and_archives(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        zspace.load_dataset(str(tmp_path / "empty"))
    (tmp_path / "fake.zip").write_bytes(b"PK this is no zip")
    with pytest.raises(DataError, match="not a readable zip"):
        zspace.load_dataset(str(tmp_path / "fake.zip"))
    with pytest.raises(DataError, match="channels must be 1 or 3"):
        ImageFolder(tmp_path / "empty", channels=2)


def test_named_image_sets_are_found_like_fashion_mnist(tmp_path, monkeypatch):
    root = tmp_path / "data"
    _write_images(root / "cifar10" / "train", n=20, size=(32, 32), classes=("airplane", "ship"))
    _write_images(root / "cifar10" / "test", n=6, size=(32, 32), classes=("airplane", "ship"))
    _zip_folder(root / "cifar10", root / "cifar10-jpg.zip")
    import shutil
    shutil.rmtree(root / "cifar10")
    faces = root / "celeba" / "img_align_celeba"
    faces.mkdir(parents=True)
    for i in range(10):
        Image.fromarray(rng_images(1, (218, 178, 3), seed=i)[0]).save(faces / f"{i:06d}.jpg")
    monkeypatch.setenv("ZSPACE_DATA", str(root))
    cifar = zspace.load_dataset("cifar10")
    assert cifar.example_shape == (3, 32, 32) and (len(cifar.train), len(cifar.test)) == (20, 6)
    assert cifar.train.classes[8] == "ship" and set(cifar.train.y) == {0, 8}   # CIFAR-10's label numbers
    celeba = zspace.load_dataset("celeba", image_size=32)
    assert celeba.example_shape == (3, 32, 32) and len(celeba.train) + len(celeba.test) == 10
    with pytest.raises(DataError, match="olivetti-faces not found"):
        zspace.load_dataset("olivetti-faces")


def test_data_info_and_pack_commands(tmp_path, image_folder, capsys):
    from zspace.cli import main

    assert main(["data", "info", str(image_folder), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "(3, 10, 12), uint8" in out and "2 classes" in out
    assert main(["data", "pack", str(image_folder), str(tmp_path / "packed"), "--rows-per-shard", "5",
                 "--no-progress"]) == 0
    packed = zspace.load_dataset(str(tmp_path / "packed"))
    original = zspace.load_dataset(str(image_folder))
    for name in ("train", "test"):
        a, b = packed.split(name), original.split(name)
        assert np.array_equal(a.read(np.arange(len(a))), b.read(np.arange(len(b))))
        assert np.array_equal(a.y, b.y)
    assert main(["data", "info", str(tmp_path / "packed"), "--verify", "--no-progress"]) == 0
    assert "matches its checksum" in capsys.readouterr().out
    assert main(["data", "info", str(tmp_path / "nothing-here")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["data", "pack", str(image_folder), str(tmp_path / "p2"), "--rows-per-shard", "0"]) == 2
