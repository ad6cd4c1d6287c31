"""Hostile inputs (issue 19): every user mistake is one line on stderr and exit status 2, and
the user's files are never overwritten. Each case feeds one bad file, flag or damaged run."""
import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from zspace.cli import main
from zspace.errors import ZspaceError

TRAIN = ["train", "vae", "--latent-dim", "2", "--hidden", "8", "--epochs", "1", "--batch-size", "256",
         "--eval-limit", "50", "--no-progress"]


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    _, err = capsys.readouterr()
    return code, err.strip().splitlines()


def refused(capsys, *argv, match=None):
    code, lines = cli(capsys, *argv)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("zspace: error: "), (code, lines)
    if match:
        assert match in lines[0], lines[0]
    return lines[0]


def snapshot(path: Path) -> dict:
    return {str(f.relative_to(path)): hashlib.md5(f.read_bytes()).hexdigest()
            for f in sorted(path.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "run"
    assert main([*TRAIN, "--data", "digits", "--out", str(out)]) == 0
    return out


@pytest.fixture
def run(base_run, tmp_path):
    p = tmp_path / "run"
    shutil.copytree(base_run, p)
    return p


def latest(run: Path) -> Path:
    return run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()


# ---- data files --------------------------------------------------------------------------
def _npz(p):
    np.savez(p, x=np.random.default_rng(0).random((40, 6)).astype(np.float32))
    return p.read_bytes()


def _flipped(p):
    b = bytearray(_npz(p))
    b[len(b) // 3] ^= 0xFF
    p.write_bytes(bytes(b))


def _idx(dims):
    return bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


BAD_FILES = {
    "empty.npy": lambda p: p.write_bytes(b""),
    "empty.npz": lambda p: p.write_bytes(b""),
    "truncated.npz": lambda p: p.write_bytes(_npz(p)[:300]),
    "flipped.npz": _flipped,
    "latin1.csv": lambda p: p.write_bytes("a,b\n1,2\n3,\xe9\n".encode("latin-1")),
    "utf16.csv": lambda p: p.write_bytes("a,b\n1,2\n3,4\n".encode("utf-16")),
    "random.csv": lambda p: p.write_bytes(bytes(range(256)) * 8),
    "hugefield.csv": lambda p: p.write_text("a,b\n1," + "9" * 200_000 + "\n"),
    "overflow-idx3-ubyte": lambda p: p.write_bytes(_idx((2**31, 2**31, 4)) + b"\0" * 64),
    "overflow2-idx3-ubyte": lambda p: p.write_bytes(_idx((2**32 - 1,) * 3) + b"\0" * 64),
    "garbage-idx3-ubyte.gz": lambda p: p.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 2),
    "truncated-idx3-ubyte.gz": lambda p: p.write_bytes(gzip.compress(_idx((10, 10, 10)) + os.urandom(1000))[:200]),
    "zero.npy": lambda p: os.symlink("/dev/zero", p),
    "zero-idx1-ubyte": lambda p: os.symlink("/dev/zero", p),
    "fifo.npy": lambda p: os.mkfifo(p),
    "fifo.csv": lambda p: os.mkfifo(p),
    "huge.npy": lambda p: np.save(p, np.full((20, 4), 1e300)),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_data_file_is_one_line(name, tmp_path, capsys):
    path = tmp_path / name
    BAD_FILES[name](path)
    msg = refused(capsys, "data", "info", path, "--no-progress")
    assert name.split(".")[0] in msg or "beyond float32" in msg


@pytest.mark.parametrize("name", ["empty.npy", "flipped.npz", "latin1.csv", "fifo.npy"])
def test_the_python_api_raises_the_library_error(name, tmp_path):
    import zspace

    path = tmp_path / name
    BAD_FILES[name](path)
    with pytest.raises(ZspaceError):
        zspace.data.load_dataset(str(path))


# ---- lost work -------------------------------------------------------------------------------
def folder_of_other_files(tmp_path):
    """A folder holding a user's own figures/ and config.json, not a zspace run."""
    out = tmp_path / "mine"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "mine.png").write_bytes(b"png")
    (out / "config.json").write_text('{"mine": 1}')
    return out


def test_train_out_on_a_folder_of_other_files_refuses_and_keeps_them(tmp_path, capsys):
    out = folder_of_other_files(tmp_path)
    before = snapshot(out)
    refused(capsys, *TRAIN, "--data", "digits", "--out", out, match="not a zspace run")
    assert snapshot(out) == before


def test_a_run_that_never_checkpointed_may_be_restarted(tmp_path, capsys):
    from zspace.training.run import _prepare_run_dir

    out = tmp_path / "r"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"zspace_version": "0", "model": {}, "data": {}, "train": {}}))
    (out / "metrics.csv").write_text("epoch\n")
    _prepare_run_dir(out, overwrite=False)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("verb", [
    ("eval", "--nll-samples", 2, "--limit", 10, "--json", "config.json"),
    ("eval", "--nll-samples", 2, "--limit", 10, "--json", "checkpoints/latest"),
    ("eval", "--nll-samples", 2, "--limit", 10, "--json", "metrics.csv"),
    ("sample", "-n", 2, "--out", "checkpoints/x.npy"),
    ("encode", "--out", "checkpoints/LATEST/model.npy"),
    ("report", "--out", "config.json"),
])
def test_no_verb_writes_over_a_runs_own_files(verb, run, capsys):
    name, *flags = verb
    flags[-1] = run / flags[-1].replace("LATEST", latest(run).name)
    before = snapshot(run)
    refused(capsys, name, run, *flags, match="own files")
    assert snapshot(run) == before


def test_eval_json_beside_the_run_is_still_allowed(run, capsys):
    code, _ = cli(capsys, "eval", run, "--nll-samples", 2, "--limit", 10, "--json", run / "mine.json")
    assert code == 0 and (run / "mine.json").is_file()


# ---- damaged runs ----------------------------------------------------------------------------
def _edit_json(where, fn):
    """A mutation of a folder: fn changes the parsed JSON at where(folder) in place."""
    def mutate(folder):
        p = where(folder)
        obj = json.loads(p.read_text())
        fn(obj)
        p.write_text(json.dumps(obj))
    return mutate


def _edit_tensors(where, fn):
    def mutate(folder):
        p = where(folder)
        t = load_file(str(p))
        fn(t)
        save_file(t, str(p))
    return mutate


def _cfg(fn):
    return _edit_json(lambda r: r / "config.json", fn)


def _state(fn):
    return _edit_json(lambda r: latest(r) / "state.json", fn)


def _tensors(fn, file="trainer.safetensors"):
    return _edit_tensors(lambda r: latest(r) / file, fn)


def _rng(t):
    return next(k for k in t if k.startswith("rng"))


def _optim(t):
    return next(k for k in t if k.startswith("optim.") and t[k].dim() > 0)


DAMAGE = {   # name: (mutation, also refused by eval)
    "input_shape-str": (_cfg(lambda c: c["model"]["config"].__setitem__("input_shape", ["x", 8, 8])), True),
    "hidden-str": (_cfg(lambda c: c["model"]["config"].__setitem__("hidden", ["a"])), True),
    "source-int": (_cfg(lambda c: c["data"].__setitem__("source", 5)), True),
    "epochs-str": (_cfg(lambda c: c["train"].__setitem__("epochs", "two")), True),
    "nested-config": (lambda r: (r / "config.json").write_text("[" * 100_000 + "]" * 100_000), True),
    "latest-non-utf8": (lambda r: (r / "checkpoints" / "latest").write_bytes(b"\xff\xfe\x80"), True),
    "latest-dotdot": (lambda r: (r / "checkpoints" / "latest").write_text(".."), True),
    "empty-history": (_state(lambda s: s.__setitem__("history", [])), True),
    "history-str": (_state(lambda s: s.__setitem__("history", "x")), True),
    "history-ints": (_state(lambda s: s.__setitem__("history", [1, 2])), True),
    "step-inconsistent": (_state(lambda s: (s.__setitem__("step", -5), s.__setitem__("epoch", 7))), True),
    "optimizer-empty": (_state(lambda s: s.__setitem__("optimizer", {})), False),
    "param_groups-str": (_state(lambda s: s["optimizer"].__setitem__("param_groups", "x")), False),
    "rng-wrong-type": (_tensors(lambda t: t.__setitem__(_rng(t), t[_rng(t)].float())), False),
    "rng-wrong-size": (_tensors(lambda t: t.__setitem__(_rng(t), t[_rng(t)][:10].clone())), False),
    "optim-extra": (_tensors(lambda t: t.__setitem__("optim.99.exp_avg", torch.zeros(3))), False),
    "optim-misshaped": (_tensors(lambda t: t.__setitem__(_optim(t), torch.zeros(3))), False),
    "weights-nan": (_tensors(lambda t: t.update({k: torch.full_like(v, float("nan")) for k, v in t.items()}),
                             "model.safetensors"), True),
}


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_a_damaged_run_is_refused_before_training(name, run, capsys):
    mutate, eval_refuses = DAMAGE[name]
    mutate(run)
    before = snapshot(run)
    refused(capsys, "train", "vae", "--resume", run, "--epochs", 2, "--no-progress")
    assert snapshot(run) == before        # nothing written: refused before the first step
    if eval_refuses:
        refused(capsys, "eval", run, "--nll-samples", 2, "--limit", 10)


def test_load_run_raises_the_library_error(run):
    import zspace

    (run / "checkpoints" / "latest").write_bytes(b"\xff\xfe")
    with pytest.raises(ZspaceError):
        zspace.load_run(run)


def test_resume_removes_a_killed_runs_temporaries(run, capsys):
    ck = run / "checkpoints"
    (ck / ".epoch-0009.abc").mkdir()
    (ck / ".latest.x.tmp").write_text("x")
    code, _ = cli(capsys, "train", "vae", "--resume", run, "--epochs", 2, "--no-progress")
    assert code == 0 and not [p for p in ck.iterdir() if p.name.startswith(".")]
    assert latest(run).stat().st_mode & 0o055 == 0o055 & ~_umask()   # readable like the run's other files


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


# ---- flags and values ------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ("denoise", "RUN", "-n", 0, "--corruption", "gaussian", "--level", "0.1", "--out", "OUT/d.png"),
    ("denoise", "RUN", "--corruption", "gaussian", "--level", "nan", "--out", "OUT/d.png"),
    ("explore", "attribute", "RUN", "--mask", "OUT/empty.npy", "--out", "OUT/a.png"),
    ("explore", "manifold", "RUN", "-n", 100_000, "--out", "OUT/m.png"),
    ("explore", "interpolate", "RUN", "--steps", 100_000, "--out", "OUT/m.png"),
    ("sample", "RUN", "-n", 10**12, "--out", "OUT/s.npy"),
    ("eval", "RUN", "--nll-samples", 10**9, "--limit", 10, "--json", "OUT/e.json"),
    ("compare", "--data", "digits", "--variants", "basic", "--train-limit", -5, "--out", "OUT/c"),
    (*TRAIN, "--data", "digits", "--test-fraction", 2, "--out", "OUT/t"),
])
def test_a_bad_value_is_one_line(argv, run, tmp_path, capsys):
    (tmp_path / "empty.npy").write_bytes(b"")
    argv = [str(a).replace("OUT", str(tmp_path)) if a != "RUN" else run for a in argv]
    refused(capsys, *argv)


# ---- detectors -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base_detector(tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "det"
    assert main(["detect", "fit", "--data", "digits", "--epochs", "1", "--latent-dim", "2", "--hidden", "8",
                 "--out", str(out)]) == 0
    return out


def _meta(fn):
    return _edit_json(lambda d: d / "detector.json", fn)


def _fitted(fn):
    return _edit_tensors(lambda d: d / "fitted.safetensors", fn)


DETECTOR_DAMAGE = {
    "no-n_features": _meta(lambda j: j.pop("n_features")),
    "threshold-str": _meta(lambda j: j.__setitem__("threshold", "x")),
    "scaling-bogus": _meta(lambda j: j["params"].__setitem__("scaling", "bogus")),
    "params-list": _meta(lambda j: j.__setitem__("params", [1])),
    "non-utf8": lambda d: (d / "detector.json").write_bytes(b"\xff\xfe"),
    "no-decision_scores": _fitted(lambda t: t.pop("decision_scores")),
    "no-scaler": _fitted(lambda t: [t.pop(k) for k in list(t) if k.startswith("scaler_")]),
}


@pytest.mark.parametrize("name", sorted(DETECTOR_DAMAGE))
def test_a_damaged_detector_is_one_line(name, base_detector, tmp_path, capsys):
    from zspace.detect import load_detector

    d = tmp_path / "det"
    shutil.copytree(base_detector, d)
    DETECTOR_DAMAGE[name](d)
    refused(capsys, "detect", "score", d, "--data", "digits", "--out", tmp_path / "s.csv")
    with pytest.raises(ZspaceError):
        load_detector(d)


def test_scores_may_not_be_written_into_the_detector(base_detector, tmp_path, capsys):
    before = snapshot(base_detector)
    refused(capsys, "detect", "score", base_detector, "--data", "digits", "--out", base_detector / "s.csv")
    assert snapshot(base_detector) == before
