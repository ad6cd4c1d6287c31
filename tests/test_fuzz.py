"""Fuzzing the readers (issue 19): seeded mutations of valid files and of every JSON field give
either a result or the library's own error, never another exception; and the remaining hostile
cases: full disks, devices as outputs, archives that lie, requests too big for the machine, the
CLI's top level. The mutations are drawn from fixed seeds, so a failure reproduces exactly."""
import errno
import gzip
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import SafetensorError

import zspace
from zspace.cli import main
from zspace.errors import ConfigError, ZspaceError

from .test_robustness import (TRAIN, base_run, cli, folder_of_other_files, latest, refused, run,  # noqa: F401
                              snapshot)  # (base_run, run: fixtures)

GiB = 1 << 30


# ---- mutations -------------------------------------------------------------------------------
def mutations(raw: bytes, n: int, seed: int):
    """n damaged copies of ``raw``: bit flips, truncation, zeroed or random runs, duplicated or
    deleted chunks, a huge length written over four bytes (headers are where readers trust sizes)."""
    rng = np.random.default_rng(seed)
    for k in range(n):
        b = bytearray(raw)
        i = int(rng.integers(0, len(b)))
        j = min(len(b), i + int(rng.integers(1, 64)))
        kind = k % 7
        if kind == 0:
            for pos in rng.integers(0, len(b), size=int(rng.integers(1, 8))):
                b[pos] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:
            b = b[:i]
        elif kind == 2:
            b[i:j] = bytes(j - i)
        elif kind == 3:
            b[i:j] = rng.integers(0, 256, j - i, dtype=np.uint8).tobytes()
        elif kind == 4:
            b[i:i] = b[i:j] * int(rng.integers(2, 50))
        elif kind == 5:
            del b[i:j]
        else:
            b[i:i + 4] = int(rng.choice([2**31 - 1, 2**32 - 1, 10**9])).to_bytes(4, "little" if k % 2 else "big")
        yield bytes(b)


def read_everything(path: Path) -> None:
    """Opens a data source and reads every row of both splits (the per-batch checks run too)."""
    splits = zspace.load_dataset(str(path))
    for part in (splits.train, splits.test):
        part.read(np.arange(len(part)))


def only_library_errors(fn, *args) -> str:
    try:
        fn(*args)
        return "read"
    except ZspaceError:
        return "refused"


def _png(size=(8, 8), value=0) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", size, value).save(buf, format="PNG")
    return buf.getvalue()


def _image_zip(members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _valid_files(tmp: Path) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 4, 4), dtype=np.uint8)
    out = {}
    buf = io.BytesIO()
    np.save(buf, x.astype(np.float32))
    out["a.npy"] = buf.getvalue()
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x, y=np.arange(30) % 3)
    out["a.npz"] = buf.getvalue()
    out["a.csv"] = ("f1,f2,f3\n" + "".join(f"{r[0]},{r[1]},{r[2]}\n" for r in x[:, 0, :3])).encode()
    idx = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in x.shape) + x.tobytes()
    out["a-idx3-ubyte"] = idx
    out["a-idx3-ubyte.gz"] = gzip.compress(idx)
    out["a.zip"] = _image_zip({f"imgs/{c}/{i}.png": _png(value=i) for c in "ab" for i in range(4)})
    return out


@pytest.mark.parametrize("name", ["a.npy", "a.npz", "a.csv", "a-idx3-ubyte", "a-idx3-ubyte.gz", "a.zip"])
def test_a_damaged_data_file_is_read_or_refused(name, tmp_path):
    raw = _valid_files(tmp_path)[name]
    path = tmp_path / name
    path.write_bytes(raw)
    assert only_library_errors(read_everything, path) == "read"       # the undamaged file reads
    outcomes = []
    for k, bad in enumerate(mutations(raw, 28, seed=len(name))):
        path.write_bytes(bad)
        outcomes.append(only_library_errors(read_everything, path))
    assert "refused" in outcomes


def test_a_damaged_shard_store_is_read_or_refused(tmp_path):
    from zspace.data.shards import ShardWriter

    with ShardWriter(tmp_path / "s", (3,), "float32", columns={"y": "int64"}, rows_per_shard=10) as w:
        w.append(np.arange(75, dtype=np.float32).reshape(25, 3), y=np.arange(25))
    base = tmp_path / "s"
    files = sorted(p.name for p in base.iterdir())
    outcomes = []
    for f in files:
        raw = (base / f).read_bytes()
        for bad in mutations(raw, 14, seed=len(f)):
            copy = tmp_path / "copy"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(base, copy)
            (copy / f).write_bytes(bad)
            outcomes.append(only_library_errors(read_everything, copy))
    assert "refused" in outcomes and len(outcomes) == 14 * len(files)


# ---- every JSON field replaced by a hostile value ----------------------------------------------
HOSTILE = [None, -1, 0, 10**12, 2.5, float("nan"), "x", "", True, [], {}, [[1]], ["a"], {"a": None}]


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(obj, list) and obj:
        for i, v in enumerate(obj[:3]):
            yield from _leaves(v, (*path, i))
    else:
        yield path


def _with(obj, path, value):
    obj = json.loads(json.dumps(obj))
    node = obj
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return obj


def json_field_cases(obj, n: int, seed: int):
    """n (field, value) replacements of the JSON object, drawn with a fixed seed."""
    leaves = list(_leaves(obj))
    rng = np.random.default_rng(seed)
    for _ in range(n):
        path = leaves[int(rng.integers(len(leaves)))]
        value = HOSTILE[int(rng.integers(len(HOSTILE)))]
        yield path, _with(obj, path, value)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzzrun") / "run"
    assert main([*TRAIN, "--data", "digits", "--out", str(out)]) == 0
    return out


def _load_and_check(run_dir: Path) -> None:
    run = zspace.load_run(run_dir)
    assert all(bool(torch.isfinite(p).all()) for p in run.model.parameters())
    run.history()


@pytest.mark.parametrize("file", ["config.json", "state.json"])
def test_every_run_json_field_is_checked(file, small_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    target = run / file if file == "config.json" else latest(run) / file
    original = json.loads(target.read_text())
    refusals = 0
    for path, obj in json_field_cases(original, 120, seed=len(file)):
        target.write_text(json.dumps(obj))
        try:
            _load_and_check(run)
        except ZspaceError:
            refusals += 1
        except Exception as e:   # noqa: BLE001  (the point: name the field that escaped the checks)
            raise AssertionError(f"{file} field {path} = {obj!r:.200}: {type(e).__name__}: {e}") from None
    assert refusals > 0


def test_every_detector_json_field_is_checked(tmp_path):
    from zspace.detect import GenerativeOutlierDetector, load_detector, save_detector

    x = np.random.default_rng(0).normal(size=(120, 5)).astype(np.float32)
    det = GenerativeOutlierDetector("ae", "reconstruction", latent_dim=2, hidden=(8,), epochs=1).fit(x)
    d = save_detector(det, tmp_path / "det")
    original = json.loads((d / "detector.json").read_text())
    refusals = 0
    for path, obj in json_field_cases(original, 120, seed=3):
        (d / "detector.json").write_text(json.dumps(obj))
        try:
            load_detector(d).decision_function(x[:10])
        except ZspaceError:
            refusals += 1
        except Exception as e:   # noqa: BLE001
            raise AssertionError(f"detector.json field {path} = {obj!r:.200}: {type(e).__name__}: {e}") from None
    assert refusals > 0


def test_every_shard_manifest_field_is_checked(tmp_path):
    from zspace.data.shards import ShardWriter

    with ShardWriter(tmp_path / "s", (3,), "float32", columns={"y": "int64"}, rows_per_shard=10) as w:
        w.append(np.arange(75, dtype=np.float32).reshape(25, 3), y=np.arange(25))
    manifest = tmp_path / "s" / "manifest.json"
    original = json.loads(manifest.read_text())
    for path, obj in json_field_cases(original, 150, seed=5):
        manifest.write_text(json.dumps(obj))
        try:
            read_everything(tmp_path / "s")
        except ZspaceError:
            pass
        except Exception as e:   # noqa: BLE001
            raise AssertionError(f"manifest field {path} = {obj!r:.200}: {type(e).__name__}: {e}") from None


# ---- a full disk ------------------------------------------------------------------------------
def _disk_full_safetensors(*args, **kwargs):
    raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                          'message: "No space left on device" })')


def _disk_full_json(path, obj):
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


@pytest.mark.parametrize("writer, fail", [("save_file", _disk_full_safetensors),
                                          ("write_json_atomic", _disk_full_json)])
def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(writer, fail, run, capsys, monkeypatch):
    before = latest(run).name
    kept = snapshot(latest(run))
    monkeypatch.setattr(f"zspace.training.checkpoint.{writer}", fail)
    msg = refused(capsys, "train", "vae", "--resume", run, "--epochs", 2, "--no-progress",
                  match="No space left on device")
    assert f"the previous checkpoint {before} is intact" in msg
    assert latest(run).name == before and snapshot(latest(run)) == kept
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]   # no half-written folder
    monkeypatch.undo()
    code, _ = cli(capsys, "train", "vae", "--resume", run, "--epochs", 2, "--no-progress")   # space again
    assert code == 0 and latest(run).name == "epoch-0002"


# ---- outputs: devices, stores, other people's folders ------------------------------------------
def test_an_output_over_a_fifo_is_refused_not_replaced(run, tmp_path, capsys):
    fifo = tmp_path / "out.json"
    os.mkfifo(fifo)
    refused(capsys, "eval", run, "--nll-samples", 2, "--limit", 10, "--json", fifo, match="FIFO")
    assert fifo.is_fifo()
    with pytest.raises(ConfigError):
        zspace.core.io.write_text_atomic(fifo, "x")
    assert fifo.is_fifo()


def test_no_verb_writes_inside_a_shard_store(run, tmp_path, capsys):
    from zspace.data.shards import ShardWriter

    with ShardWriter(tmp_path / "s", (3,), "float32", rows_per_shard=10) as w:
        w.append(np.zeros((12, 3), np.float32))
    before = snapshot(tmp_path / "s")
    refused(capsys, "eval", run, "--nll-samples", 2, "--limit", 10, "--json", tmp_path / "s" / "manifest.json",
            match="shard store")
    refused(capsys, "sample", run, "-n", 2, "--out", tmp_path / "s" / "shard-000000.npy", match="shard store")
    assert snapshot(tmp_path / "s") == before


def test_compare_does_not_write_into_checkpoints_or_a_detector(run, capsys):
    before = snapshot(run)
    refused(capsys, "compare", "--data", "digits", "--variants", "pca", "--out", run / "checkpoints", match="own files")
    assert snapshot(run) == before


def test_demo_refuses_a_folder_of_other_files(tmp_path, capsys):
    out = folder_of_other_files(tmp_path)
    before = snapshot(out)
    refused(capsys, "demo", "--out", out, "--epochs", 1, "--nll-samples", 2, "--data", "digits",
            match="not a zspace run")
    assert snapshot(out) == before


# ---- archives that lie, files too big for memory ----------------------------------------------
def _patched_zip(raw: bytes, flag: int = 0, method: int | None = None) -> bytes:
    """Sets general-purpose flag bits (1: encrypted) or the compression method in every header."""
    b = bytearray(raw)
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = b.find(sig)
        while i >= 0:
            b[i + off] |= flag
            if method is not None:
                b[i + off + 2:i + off + 4] = method.to_bytes(2, "little")
            i = b.find(sig, i + 4)
    return bytes(b)


@pytest.mark.parametrize("damage", ["encrypted", "method-99"])
@pytest.mark.parametrize("kind", ["npz", "zip"])
def test_an_archive_with_members_zipfile_cannot_read_is_refused(kind, damage, tmp_path, capsys):
    raw = _valid_files(tmp_path)["a." + kind]
    path = tmp_path / f"bad.{kind}"
    path.write_bytes(_patched_zip(raw, flag=1) if damage == "encrypted" else _patched_zip(raw, method=99))
    refused(capsys, "data", "info", path, "--no-progress", match="bad.")
    with pytest.raises(ZspaceError):
        read_everything(path)


def _npy_header(shape) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_an_npz_whose_header_declares_terabytes_is_refused(tmp_path):
    path = tmp_path / "bomb.npz"
    path.write_bytes(_image_zip({"x.npy": _npy_header((10**9, 1000))}, zipfile.ZIP_STORED))
    with pytest.raises(ZspaceError, match="bomb.npz"):
        zspace.load_dataset(str(path))


def test_files_whose_reading_would_not_fit_in_memory_are_refused(tmp_path, monkeypatch):
    for name, raw in _valid_files(tmp_path).items():
        (tmp_path / name).write_bytes(raw)
    monkeypatch.setattr("zspace.data.sources.available_memory", lambda: 100)
    for name in ("a.csv", "a.npz"):
        with pytest.raises(ZspaceError, match="memory free"):
            zspace.load_dataset(str(tmp_path / name))
    read_everything(tmp_path / "a.npy")      # memory-mapped: read per batch, not refused


def test_a_zip_member_too_large_for_an_image_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "imgs.zip"
    members = {f"imgs/{c}/{i}.png": _png() for c in "ab" for i in range(6)}
    path.write_bytes(_image_zip({**members, "imgs/b/big.png": b"\0" * 5000}))
    monkeypatch.setattr("zspace.data.images.MAX_IMAGE_BYTES", 4000)
    with pytest.raises(ZspaceError, match="too large"):
        read_everything(path)


@pytest.mark.parametrize("special", ["fifo", "devzero"])
def test_an_image_that_is_a_fifo_or_a_device_is_refused(special, tmp_path):
    for c in "ab":
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "imgs" / c / f"{i}.png").write_bytes(_png())
    bad = tmp_path / "imgs" / "b" / "9.png"
    os.mkfifo(bad) if special == "fifo" else os.symlink("/dev/zero", bad)
    with pytest.raises(ZspaceError, match="not a regular file"):
        read_everything(tmp_path / "imgs")


def test_a_decompression_bomb_image_is_one_line(tmp_path, capsys, monkeypatch):
    from PIL import Image

    for c in "ab":
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "imgs" / c / f"{i}.png").write_bytes(_png((64, 64)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)     # 64x64 = 4096: between the warning and the error
    refused(capsys, "data", "info", tmp_path / "imgs", "--no-progress", match="not a readable image")


def test_a_shard_that_is_a_fifo_is_refused(tmp_path):
    from zspace.data.shards import ShardWriter

    with ShardWriter(tmp_path / "s", (3,), "float32", rows_per_shard=10) as w:
        w.append(np.zeros((12, 3), np.float32))
    (tmp_path / "s" / "shard-000001.npy").unlink()
    os.mkfifo(tmp_path / "s" / "shard-000001.npy")
    with pytest.raises(ZspaceError, match="not a regular file"):
        read_everything(tmp_path / "s")


# ---- requests too big for the machine ----------------------------------------------------------
def test_a_model_too_big_for_memory_is_refused_before_allocating(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("zspace.core.io.available_memory", lambda: 8 * GiB)
    msg = refused(capsys, "train", "vae", "--data", "digits", "--latent-dim", 10_000_000, "--epochs", 1,
                  "--no-progress", "--out", tmp_path / "r", match="GiB")
    assert "8.0 GiB of memory free" in msg and not (tmp_path / "r").exists()
    with pytest.raises(ConfigError):
        zspace.models.build_model("vae", {"input_shape": (1, 8, 8), "latent_dim": 10_000_000})
    zspace.models.build_model("vae", {"input_shape": (1, 8, 8), "latent_dim": 8})   # a small one is built


def test_too_many_samples_are_refused_before_drawing(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("zspace.core.io.available_memory", lambda: 8 * GiB)
    refused(capsys, "sample", run, "-n", 100_000_000, "--out", tmp_path / "s.npy", match="GiB")
    assert not (tmp_path / "s.npy").exists()


# ---- the CLI's top level -----------------------------------------------------------------------
def test_an_unexpected_exception_is_one_line_and_a_bug_pointer(run, capsys, monkeypatch):
    def broken(a):
        raise TypeError("unsupported operand type(s)\nfor +: 'int' and 'str'")

    monkeypatch.setitem(zspace.cli.COMMANDS, "eval", broken)
    code, lines = cli(capsys, "eval", run)
    assert code == 1 and len(lines) == 1 and lines[0].startswith("zspace: internal error: TypeError")
    assert "bug" in lines[0] and "--debug" in lines[0]
    with pytest.raises(TypeError):
        main(["eval", str(run), "--debug"])


def test_debug_does_not_change_a_user_errors_line(tmp_path, capsys):
    refused(capsys, "--debug", "data", "info", tmp_path / "missing.npy", match="no such file")


def test_more_ranks_than_memory_holds_are_refused_before_launching(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("zspace.training.launch.available_memory", lambda: GiB)   # 3 ranks need 1.5 GiB
    refused(capsys, *TRAIN, "--data", "digits", "--nproc", 3, "--out", tmp_path / "r", match="--nproc 3 needs")
    assert not (tmp_path / "r").exists()


def test_a_seed_beyond_64_bits_is_one_line(run, tmp_path, capsys):
    refused(capsys, "sample", run, "-n", 2, "--seed", 2**70, "--out", tmp_path / "s.npy", match="64 bits")


def test_a_code_size_beyond_the_features_is_one_line(tmp_path, capsys):
    refused(capsys, "compare", "--data", "digits", "--variants", "pca", "--code-size", 100_000,
            "--out", tmp_path / "c", match="--code-size must lie in [1, 64]")
