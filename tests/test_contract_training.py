"""The training half of the model contract, for every registered model with its tiny config:
exact resume through the trainer, a bf16 step, and a 2-rank data-parallel (gloo) step."""
import os
import tempfile

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import zspace
from zspace.data import ArrayData, DataSplits
from zspace.models import MODELS, VQPrior
from zspace.training import resume, train
from zspace.training.distributed import exit_process

from .test_contract import READS_CODES, TINY, tiny

STEPS = dict(epochs=None, batch_size=8, lr=3e-3, lr_schedule="constant", eval_limit=8, threads=1, seed=5)


def splits_for(model, n=40) -> DataSplits:
    """Data each model takes: 8-bit integers below its levels, real values in [0, 1], or code grids."""
    rng = np.random.default_rng(0)
    shape = tuple(model.config.input_shape)
    if model.integer_inputs:
        levels = model.vqvae.num_codes if isinstance(model, VQPrior) else model.config.levels
        x = rng.integers(0, levels, size=(n, *shape), dtype=np.uint8)
    else:
        x = rng.random((n, *shape), dtype=np.float32).round(1)
    k = model.num_classes or getattr(model, "num_targets", 0)   # a classifier's targets are labels too
    y = np.arange(n) % k if k else None
    data = ArrayData.from_arrays(x, y)
    return DataSplits(data.head(32), data.subset(np.arange(32, n)), "tiny")


def _preprocessing(model):
    return "uint8" if model.integer_inputs else ("none" if model.name == "sae" else "scale")


@pytest.mark.parametrize("name", sorted(TINY))
def test_resume_through_the_trainer_is_exact(name, tmp_path):
    data = splits_for(tiny(name))
    cfg = zspace.TrainConfig(steps=6, **STEPS)
    full = train(tiny(name), data, out=tmp_path / "full", config=cfg, preprocessing=_preprocessing(tiny(name)),
                 progress=False, figures=False)
    train(tiny(name), data, out=tmp_path / "part", config=cfg.replace(steps=2), preprocessing=_preprocessing(tiny(name)),
          progress=False, figures=False)
    again = resume(tmp_path / "part", steps=6, data=data, progress=False, figures=False)
    for (k, a), b in zip(full.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), f"{name}: {k} differs after resume"


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_bf16_step_trains(name, tmp_path, bf16_anywhere):
    model = tiny(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run = train(model, splits_for(model), config=zspace.TrainConfig(steps=2, precision="bf16", **STEPS),
                preprocessing=_preprocessing(model), progress=False, figures=False)
    row = run.history()[-1]
    assert all(np.isfinite(v) for k, v in row.items() if k.startswith("train_"))
    changed = [k for k, v in run.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, f"{name}: a bf16 step changed no weight"
    assert all(p.dtype == torch.float32 for p in run.model.parameters())   # autocast, fp32 master weights


def _settled(model):
    """Data-dependent initialisation (the VQ-VAE codebook from the first batch; under DDP rank 0's
    draw) done beforehand, so one step's gradients can be compared with per-half references."""
    for m in model.modules():
        if isinstance(getattr(m, "initialized", None), torch.Tensor):
            m.initialized.fill_(True)
    return model.train()


def _ddp_worker(rank: int, init: str, names: list[str], out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        results = {}
        for name in names:
            model = _settled(tiny(name))
            x, y = _batch(model)
            ddp = torch.nn.parallel.DistributedDataParallel(model)
            half = slice(rank * 4, rank * 4 + 4)
            torch.manual_seed(7 + rank)
            ddp(x[half], None if y is None else y[half]).loss.backward()
            results[name] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        torch.save(results, f"{out}/rank{rank}.pt")
    except BaseException:
        dist.destroy_process_group()
        raise
    exit_process(0)   # not the interpreter's finalisation: see exit_process


def _batch(model):
    g = torch.Generator().manual_seed(1)
    shape = tuple(model.config.input_shape)
    if model.integer_inputs:
        levels = model.vqvae.num_codes if isinstance(model, VQPrior) else model.config.levels
        x = torch.randint(0, levels, (8, *shape), generator=g)
    else:
        x = torch.rand(8, *shape, generator=g).round()
    k = model.num_classes or getattr(model, "num_targets", 0)
    y = torch.arange(8) % k if k else None
    return x, y


def test_a_two_rank_ddp_step_for_every_model(tmp_path):
    """Each rank gets half the batch; after the all-reduce both ranks hold the same gradients,
    equal to the mean of the two halves' gradients computed in one process."""
    names = sorted(MODELS)
    init = f"file://{tempfile.mktemp(dir=tmp_path)}"
    mp.start_processes(_ddp_worker, args=(init, names, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for name in names:
        x, y = _batch(tiny(name))
        halves = []
        for rank in range(2):
            m = _settled(tiny(name))
            torch.manual_seed(7 + rank)
            sl = slice(rank * 4, rank * 4 + 4)
            m(x[sl], None if y is None else y[sl]).loss.backward()
            halves.append({n: p.grad for n, p in m.named_parameters() if p.grad is not None})
        assert r0[name].keys() == r1[name].keys() and r0[name], name
        for k in r0[name]:
            torch.testing.assert_close(r0[name][k], r1[name][k], msg=f"{name}: ranks disagree on {k}")
            torch.testing.assert_close(r0[name][k], (halves[0][k] + halves[1][k]) / 2, rtol=1e-4, atol=1e-6,
                                       msg=f"{name}: {k} is not the mean of the halves' gradients")


def _ema_worker(rank: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from zspace.models.vqvae import VectorQuantizer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        q = VectorQuantizer(8, 4, restart_threshold=0.0)
        z = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(1))
        q.initialized.fill_(True)
        q.train()
        q(z[rank * 3:rank * 3 + 3])
        torch.save({k: v.clone() for k, v in q.state_dict().items()}, f"{out}/ema{rank}.pt")
    except BaseException:
        dist.destroy_process_group()
        raise
    exit_process(0)


def test_the_vqvae_ema_codebook_is_all_reduced_across_ranks(tmp_path):
    """Two ranks with half a batch each end with the codebook one process gets from the whole batch."""
    from zspace.models.vqvae import VectorQuantizer

    init = f"file://{tempfile.mktemp(dir=tmp_path)}"
    mp.start_processes(_ema_worker, args=(init, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    torch.manual_seed(0)
    q = VectorQuantizer(8, 4, restart_threshold=0.0)
    q.initialized.fill_(True)
    q.train()
    q(torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(1)))
    for rank in range(2):
        got = torch.load(tmp_path / f"ema{rank}.pt")
        for k, v in q.state_dict().items():
            torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6, msg=f"rank {rank}: {k}")
