"""Data-parallel training: 2 local gloo ranks through torchrun (`zspace train --nproc 2` or
`python -m torch.distributed.run`), tiny seeded runs, every subprocess under a timeout."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import zspace
from zspace.cli import main
from zspace.training import trainer as trainer_module
from zspace.training.distributed import SINGLE, Dist
from zspace.training.run import load_run, train

TIMEOUT = 180
AE = ["--latent-dim", "4", "--hidden", "16", "--threads", "1", "--no-progress", "--eval-limit", "32"]


@pytest.fixture
def rows(tmp_path):
    """320 rows of 16 values in [0, 1]: 288 to train (9 global batches of 32), 32 to test."""
    path = tmp_path / "rows.npy"
    np.save(path, np.random.default_rng(0).random((320, 16)).astype(np.float32))
    return path


def zspace_cli(*args, cwd, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "zspace", *map(str, args)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=TIMEOUT)
    return p, time.perf_counter() - start


def latest_weights(run):
    name = (run / "checkpoints" / "latest").read_text().strip()
    return load_file(str(run / "checkpoints" / name / "model.safetensors"))


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_single_process_needs_no_process_group():
    assert SINGLE.world_size == 1 and SINGLE.is_main and not SINGLE.enabled
    t = torch.tensor([1.0, 2.0])
    assert SINGLE.all_reduce_sum(t) is t and SINGLE.any(torch.tensor(True)) and not SINGLE.any(False)
    assert SINGLE.ranks_with(True) == [0] and SINGLE.broadcast_flag(True)
    assert not torch.distributed.is_initialized()


def test_two_ranks_equal_one_process_with_the_same_global_batch(rows, tmp_path):
    cfg = zspace.TrainConfig(epochs=2, batch_size=32, eval_limit=32, threads=1, seed=3)
    one = train("ae", str(rows), out=tmp_path / "one", config=cfg, progress=False, figures=False,
                latent_dim=4, hidden=(16,))
    p, _ = zspace_cli("train", "ae", "--data", rows, "--out", tmp_path / "two", "--nproc", "2",
                      "--epochs", "2", "--batch-size", "32", "--seed", "3", *AE, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("trained ") == 1          # rank 0 alone reports
    a, b = latest_weights(tmp_path / "one"), latest_weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    two = load_run(tmp_path / "two").history()
    assert [r["step"] for r in two] == [9, 18] == [r["step"] for r in one.history()]
    for r1, r2 in zip(one.history(), two):      # all-reduced train sums and evaluation sums
        assert r2["train_mse"] == pytest.approx(r1["train_mse"], rel=1e-5)
        assert r2["test_mse"] == pytest.approx(r1["test_mse"], rel=1e-5)


def test_resume_under_ddp_is_exact(rows, tmp_path, capsys):
    vae = ["--latent-dim", "4", "--hidden", "16", "--threads", "1", "--no-progress", "--eval-limit", "32",
           "--lr-schedule", "constant", "--batch-size", "32"]
    p, _ = zspace_cli("train", "vae", "--data", rows, "--out", tmp_path / "full", "--nproc", "2",
                      "--steps", "14", *vae, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    p, _ = zspace_cli("train", "vae", "--data", rows, "--out", tmp_path / "part", "--nproc", "2",
                      "--steps", "5", *vae, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "part" / "checkpoints" / "latest").read_text().strip() == "epoch-0000-batch-000005"
    p, _ = zspace_cli("train", "vae", "--resume", tmp_path / "part", "--steps", "14", "--nproc", "2",
                      "--no-progress", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    full, resumed = latest_weights(tmp_path / "full"), latest_weights(tmp_path / "part")
    assert all(torch.equal(full[k], resumed[k]) for k in full)   # per-rank noise restored exactly
    hf, hr = load_run(tmp_path / "full").history(), load_run(tmp_path / "part").history()
    assert [r["step"] for r in hf] == [r["step"] for r in hr] == [9, 14]
    assert hr[-1]["train_elbo"] == pytest.approx(hf[-1]["train_elbo"], rel=1e-9)
    # a mid-epoch checkpoint of 2 ranks cannot be continued by 1 (its rows are split by rank)
    code = main(["train", "vae", "--resume", str(tmp_path / "part"), "--steps", "16", "--no-progress"])
    err = error_lines(capsys.readouterr().err)
    assert code == 2 and len(err) == 1 and "written mid-epoch by 2 process(es)" in err[0]


WORKER = r'''
import os, signal, sys
import zspace
from zspace.cli import main
from zspace.training.distributed import exit_process

mode, argv = sys.argv[1], sys.argv[2:]
rank, real, calls = int(os.environ["RANK"]), zspace.Autoencoder.loss, [0]

def loss(self, x, y=None, warmup=1.0):
    out = real(self, x, y, warmup)
    if self.training:
        calls[0] += 1
        if rank == 1 and calls[0] == 4:
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            out.loss = out.loss * float("nan")
    return out

zspace.Autoencoder.loss = loss
exit_process(main(argv))
'''


def torchrun_worker(tmp_path, mode, *args):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LOGLEVEL": "CRITICAL"}
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        str(script), mode, *map(str, args)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=TIMEOUT)
    return p, time.perf_counter() - start


def test_nan_on_one_rank_stops_every_rank_with_one_message(rows, tmp_path):
    p, _ = torchrun_worker(tmp_path, "nan", "train", "ae", "--data", rows, "--out", tmp_path / "r",
                           "--steps", "8", "--batch-size", "32", "--checkpoint-every-steps", "2", *AE)
    assert p.returncode != 0
    lines = [line for line in error_lines(p.stderr) if line.startswith("zspace: error")]
    assert lines == [lines[0]] and "loss became non-finite on rank 1 at epoch 1, step 4" in lines[0]
    assert "last good checkpoint is kept" in lines[0]
    assert "[rank" not in p.stderr      # no worker traceback (torchrun's own failure report remains)
    assert (tmp_path / "r" / "checkpoints" / "latest").read_text().strip() == "epoch-0000-batch-000002"


def test_killing_one_rank_stops_the_other(rows, tmp_path):
    """SIGKILL to one rank of `zspace train --nproc 2`: the survivor stops, the command says which
    rank died, no traceback, and the last checkpoint is complete."""
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "zspace", "train", "ae", "--data", str(rows), "--out", str(out), "--nproc", "2",
           "--epochs", "5000", "--batch-size", "32", *AE]
    p = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (out / "checkpoints" / "latest").exists():   # training is under way
            assert p.poll() is None and time.monotonic() < deadline, "run did not start"
            time.sleep(0.2)
        children = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
        assert len(children) == 2, children                    # the two ranks
        os.kill(int(children[-1]), signal.SIGKILL)
        start = time.monotonic()
        _, stderr = p.communicate(timeout=90)                  # no rank left waiting in a collective
    finally:
        if p.poll() is None:
            p.kill()
    assert time.monotonic() - start < 60 and p.returncode == 1
    assert "Traceback" not in stderr
    lines = error_lines(stderr)
    assert "was killed by signal 9; every rank was stopped" in lines[-1], stderr
    assert all(line.startswith("zspace: error: ") for line in lines), stderr
    assert load_run(out).history()[-1]["epoch"] >= 1              # what was saved is complete


def test_bf16_step_on_cpu(digits, bf16_anywhere):
    cfg = zspace.TrainConfig(steps=3, batch_size=64, eval_limit=64, lr_schedule="constant")
    fp32 = train("vae", digits, config=cfg, progress=False, figures=False, latent_dim=4, hidden=(32,))
    bf16 = train("vae", digits, config=cfg.replace(precision="bf16"), progress=False, figures=False,
                 latent_dim=4, hidden=(32,))
    row = bf16.history()[-1]
    assert np.isfinite(row["train_elbo"]) and np.isfinite(row["test_elbo"])
    a, b = fp32.model.state_dict(), bf16.model.state_dict()
    assert all(b[k].dtype == torch.float32 for k in b)       # weights stay fp32 under autocast
    assert any(not torch.equal(a[k], b[k]) for k in a)       # ...but the step ran in bf16
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff < 0.05


def test_bf16_unsupported_is_one_line(digits, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(trainer_module, "bf16_supported", lambda device: False)
    code = main(["train", "vae", "--data", "digits", "--out", str(tmp_path / "r"), "--steps", "1",
                 "--precision", "bf16", "--no-progress"])
    err = error_lines(capsys.readouterr().err)
    assert code == 2 and len(err) == 1 and "bf16" in err[0] and "--precision fp32" in err[0]


@pytest.mark.parametrize("value", ["0", "-1"])
def test_nproc_below_one_is_one_line(tmp_path, capsys, value):
    code = main(["train", "ae", "--data", "digits", "--out", str(tmp_path / "r"), "--nproc", value])
    err = error_lines(capsys.readouterr().err)
    assert code == 2 and len(err) == 1 and "--nproc must be an integer >= 1" in err[0]


def test_more_ranks_than_rows_is_one_line(tmp_path):
    np.save(tmp_path / "three.npy", np.random.default_rng(0).random((3, 4)).astype(np.float32))
    p, _ = zspace_cli("train", "ae", "--data", tmp_path / "three.npy", "--test-fraction", "0.34",
                      "--out", tmp_path / "r", "--nproc", "3", "--batch-size", "3", "--steps", "1",
                      "--latent-dim", "2", "--hidden", "4", "--no-progress", cwd=tmp_path)
    err = error_lines(p.stderr)
    assert p.returncode == 2, p.stderr
    assert len(err) == 1 and "3 processes but only 2 training row(s)" in err[0], p.stderr


def test_global_batch_must_split_evenly(digits):
    model = zspace.VAE(zspace.VAEConfig(input_shape=(1, 8, 8), latent_dim=4, hidden=(32,)))
    with pytest.raises(zspace.ConfigError, match="multiple of the 2 processes"):
        trainer_module.Trainer(model, digits.train, None, zspace.Preprocessing("dynamic-binarize"),
                               zspace.TrainConfig(batch_size=33), progress=False, dist=Dist(0, 2))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_through_torchrun_rendezvous_equal_one_process(rows, tmp_path):
    """Two torchrun 'nodes' on 127.0.0.1 (one rank each, c10d rendezvous) train like one process."""
    cfg = zspace.TrainConfig(epochs=1, batch_size=32, eval_limit=32, threads=1, seed=4)
    one = train("ae", str(rows), out=tmp_path / "one", config=cfg, progress=False, figures=False,
                latent_dim=4, hidden=(16,))
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
                               f"--node-rank={r}", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
                               "--rdzv-id=zspace-test", "-m", "zspace", "train", "ae", "--data", str(rows),
                               "--out", str(tmp_path / "two"), "--epochs", "1", "--batch-size", "32",
                               "--seed", "4", *AE], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [n.communicate(timeout=TIMEOUT) for n in nodes]
    assert all(n.returncode == 0 for n in nodes), [o[1][-2000:] for o in outs]
    assert sum(o[0].count("trained ") for o in outs) == 1      # the rank-0 node alone reports
    a, b = latest_weights(tmp_path / "one"), latest_weights(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
