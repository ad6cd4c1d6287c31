import json
import shutil

import numpy as np
import pytest
import torch

import zspace
from zspace import CheckpointError, ConfigError, TrainConfig, TrainingDiverged
from zspace.training import checkpoint as ck
from zspace.training.run import load_run, resume, train

from .conftest import tiny_config

OPTS = dict(latent_dim=4, hidden=(32,))


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def strip_times(history):
    return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in history]


def test_same_seed_same_numbers(digits, tmp_path):
    a = train("vae", digits, out=tmp_path / "a", config=tiny_config(), progress=False, figures=False, **OPTS)
    b = train("vae", digits, out=tmp_path / "b", config=tiny_config(), progress=False, figures=False, **OPTS)
    c = train("vae", digits, config=tiny_config(seed=1), progress=False, figures=False, **OPTS)
    assert same_weights(weights(a.model), weights(b.model))
    assert strip_times(a.history()) == strip_times(b.history())
    assert not same_weights(weights(a.model), weights(c.model))


def test_checkpoint_round_trip(digits, tmp_path):
    run = train("vae", digits, out=tmp_path / "r", config=tiny_config(epochs=1), progress=False,
                figures=False, **OPTS)
    loaded = load_run(tmp_path / "r")
    assert same_weights(weights(run.model), weights(loaded.model))
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["model"]["name"] == "vae" and cfg["model"]["config"]["latent_dim"] == 4
    assert cfg["data"]["preprocessing"] == "dynamic-binarize" and cfg["train"]["seed"] == 0
    x = next(iter(loaded.loader("test", batch_size=8).epoch(0))).x
    assert torch.equal(run.model.eval().embed(x), loaded.model.embed(x))


def test_optimizer_state_round_trip_without_pickle():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.9))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = ck.optimizer_to_flat(opt)
    json.dumps(meta)                                   # JSON-serialisable
    opt2 = torch.optim.Adam(model.parameters(), lr=0.5)
    ck.optimizer_from_flat(opt2, tensors, json.loads(json.dumps(meta)))
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["betas"] == (0.8, 0.9) and s2["param_groups"][0]["lr"] == 0.01
    for pid in s1["state"]:
        for key in s1["state"][pid]:
            assert torch.equal(torch.as_tensor(s1["state"][pid][key]), torch.as_tensor(s2["state"][pid][key]))




def test_fused_adam_moments_come_back_in_the_parameters_layout():
    """Checkpoints store moments contiguous; a channels-last weight's moments must return channels-last,
    or the fused Adam kernel (the trainer's default) pairs the wrong elements on the next step."""
    from zspace.training.trainer import build_optimizer

    def make():
        torch.manual_seed(0)
        return torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)

    def step(model, opt, seed):
        torch.manual_seed(seed)
        opt.zero_grad()
        model(torch.randn(2, 3, 5, 5).to(memory_format=torch.channels_last)).square().sum().backward()
        opt.step()

    cfg = TrainConfig(lr=0.01)
    full = make()
    opt = build_optimizer(full, cfg)
    assert opt.param_groups[0]["fused"] is True
    for seed in (1, 2, 3):
        step(full, opt, seed)
    part = make()
    opt_part = build_optimizer(part, cfg)
    for seed in (1, 2):
        step(part, opt_part, seed)
    tensors, meta = ck.optimizer_to_flat(opt_part)
    again = make()
    again.load_state_dict(part.state_dict())
    again = again.to(memory_format=torch.channels_last)
    opt_again = build_optimizer(again, cfg)
    ck.optimizer_from_flat(opt_again, tensors, json.loads(json.dumps(meta)))
    moment = opt_again.state[again.weight]["exp_avg"]
    assert moment.stride() == again.weight.stride()
    step(again, opt_again, 3)
    assert torch.equal(again.weight, full.weight)
@pytest.mark.parametrize("model, opts", [("vae", OPTS), ("ae", dict(latent_dim=4, hidden=(32,)))])
def test_resume_equals_uninterrupted(digits, tmp_path, model, opts):
    cfg = tiny_config(epochs=3, lr_schedule="constant")
    full = train(model, digits, out=tmp_path / "full", config=cfg, progress=False, figures=False, **opts)
    part = tmp_path / "part"
    train(model, digits, out=part, config=cfg.replace(epochs=1), progress=False, figures=False, **opts)
    resumed = resume(part, epochs=3, progress=False, figures=False)
    assert same_weights(weights(full.model), weights(resumed.model))
    assert strip_times(full.history()) == strip_times(resumed.history())
    assert (part / "metrics.csv").read_text().count("\n") == 4


def test_resume_mid_epoch_with_steps(digits, tmp_path):
    cfg = tiny_config(epochs=None, steps=40, lr_schedule="constant")   # 23 batches per epoch
    full = train("vae", digits, out=tmp_path / "full", config=cfg, progress=False, figures=False, **OPTS)
    part = tmp_path / "part"
    train("vae", digits, out=part, config=cfg.replace(steps=10), progress=False, figures=False, **OPTS)
    assert (part / "checkpoints" / "latest").read_text().strip() == "epoch-0000-batch-000010"
    resumed = resume(part, steps=40, progress=False, figures=False)
    assert same_weights(weights(full.model), weights(resumed.model))
    assert strip_times(full.history()) == strip_times(resumed.history())   # epoch 1 averages all 23 batches


def test_resume_continues_where_it_stopped(digits, tmp_path):
    cfg = tiny_config(epochs=2, lr_schedule="constant")
    train("vae", digits, out=tmp_path / "r", config=cfg, progress=False, figures=False, **OPTS)
    run = resume(tmp_path / "r", progress=False, figures=False)   # nothing left to do
    assert [row["epoch"] for row in run.history()] == [1, 2]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(digits, tmp_path, monkeypatch):
    out = tmp_path / "r"
    train("vae", digits, out=out, config=tiny_config(epochs=1), progress=False, figures=False, **OPTS)
    good = weights(load_run(out).model)
    original = zspace.VAE.loss

    def poisoned(self, x, y=None, warmup=1.0):
        res = original(self, x, y, warmup)
        res.loss = res.loss * float("nan")
        return res

    monkeypatch.setattr(zspace.VAE, "loss", poisoned)
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 2, step 24.*last good checkpoint"):
        resume(out, epochs=3, progress=False, figures=False)
    assert same_weights(good, weights(load_run(out).model))


def test_nan_gradient_on_an_epochs_last_batch_is_not_checkpointed(digits, tmp_path, monkeypatch):
    out = tmp_path / "r"
    train("vae", digits, out=out, config=tiny_config(epochs=1), progress=False, figures=False, **OPTS)
    good = weights(load_run(out).model)
    real_step = torch.optim.Adam.step
    calls = {"n": 0}

    def poisoned_step(self, *a, **kw):   # NaN gradients on epoch 2's last batch only; every loss is finite
        calls["n"] += 1
        if calls["n"] == 23:
            for group in self.param_groups:
                for p in group["params"]:
                    p.grad.fill_(float("nan"))
        return real_step(self, *a, **kw)

    monkeypatch.setattr(torch.optim.Adam, "step", poisoned_step)
    with pytest.raises(TrainingDiverged, match="weights became non-finite.*last good checkpoint"):
        resume(out, epochs=2, progress=False, figures=False)
    assert (out / "checkpoints" / "latest").read_text().strip() == "epoch-0001"
    assert same_weights(good, weights(load_run(out).model))


def test_gradient_norm_is_checked_when_clipping(digits, monkeypatch):
    real_backward = torch.Tensor.backward

    def nan_backward(self, *a, **kw):
        real_backward(self, *a, **kw)
        for p in model.parameters():
            p.grad.fill_(float("inf"))

    model = zspace.VAE(zspace.VAEConfig(input_shape=(1, 8, 8), **OPTS))
    monkeypatch.setattr(torch.Tensor, "backward", nan_backward)
    from zspace.training.trainer import Trainer

    t = Trainer(model, digits.train, None, zspace.Preprocessing("dynamic-binarize"),
                tiny_config(grad_clip=1.0), progress=False)
    with pytest.raises(TrainingDiverged, match="gradient norm became"):
        t.fit()


def test_malformed_state_is_a_checkpoint_error(digits, tmp_path):
    out = tmp_path / "r"
    train("vae", digits, out=out, config=tiny_config(epochs=1), progress=False, figures=False, **OPTS)
    (out / "checkpoints" / "epoch-0001" / "state.json").write_text("{}")
    with pytest.raises(CheckpointError, match="incomplete"):
        resume(out, epochs=2, progress=False, figures=False)


def test_crash_during_checkpoint_leaves_previous_one(digits, tmp_path, monkeypatch):
    out = tmp_path / "r"
    train("vae", digits, out=out, config=tiny_config(epochs=1), progress=False, figures=False, **OPTS)
    good = weights(load_run(out).model)
    calls = {"n": 0}
    real = ck.save_file

    def failing(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] == 2:      # the optimiser file of the next checkpoint
            raise OSError(28, "No space left on device")
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(ck, "save_file", failing)
    with pytest.raises(CheckpointError, match="No space left on device.*previous checkpoint epoch-0001 is intact"):
        resume(out, epochs=2, progress=False, figures=False)
    assert (out / "checkpoints" / "latest").read_text().strip() == "epoch-0001"
    assert [p.name for p in (out / "checkpoints").iterdir() if p.is_dir()] == ["epoch-0001"]
    assert same_weights(good, weights(load_run(out).model))


def test_damaged_runs_raise_checkpoint_errors(digits, tmp_path):
    out = tmp_path / "r"
    train("vae", digits, out=out, config=tiny_config(epochs=1), progress=False, figures=False, **OPTS)
    with pytest.raises(CheckpointError, match="not a zspace run"):
        load_run(tmp_path / "nothing-here")
    broken = tmp_path / "b1"
    shutil.copytree(out, broken)
    (broken / "checkpoints" / "epoch-0001" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_run(broken)
    broken = tmp_path / "b2"
    shutil.copytree(out, broken)
    (broken / "checkpoints" / "latest").write_text("epoch-0099\n")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_run(broken)
    broken = tmp_path / "b3"
    shutil.copytree(out, broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_run(broken)
    broken = tmp_path / "b4"
    shutil.copytree(out, broken)
    cfg = json.loads((broken / "config.json").read_text())
    cfg["model"]["config"]["latent_dim"] = 5
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape"):
        load_run(broken)


def test_refuses_to_overwrite_a_run(digits, tmp_path):
    train("vae", digits, out=tmp_path / "r", config=tiny_config(epochs=1), progress=False, figures=False, **OPTS)
    with pytest.raises(ConfigError, match="already holds a run"):
        train("vae", digits, out=tmp_path / "r", config=tiny_config(epochs=1), progress=False, **OPTS)


def test_overwrite_leaves_nothing_of_the_old_run(digits, tmp_path):
    out = tmp_path / "r"
    train("vae", digits, out=out, config=tiny_config(epochs=2), progress=False, **OPTS)
    (out / "eval-test-k5.json").write_text("{}")
    with pytest.raises(TrainingDiverged):   # the new run diverges before its first checkpoint
        train("vae", digits, out=out, config=tiny_config(epochs=2, lr=1e30), progress=False,
              overwrite=True, **OPTS)
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    with pytest.raises(CheckpointError, match="no checkpoint yet"):
        resume(out, progress=False)
    # ...and such a folder can simply be trained into again.
    run = train("vae", digits, out=out, config=tiny_config(epochs=1), progress=False, figures=False, **OPTS)
    assert [r["epoch"] for r in run.history()] == [1]


def test_run_folder_contents(digits, tmp_path):
    train("vae", digits, out=tmp_path / "r", config=tiny_config(epochs=2), progress=False, **OPTS)
    names = {p.name for p in (tmp_path / "r" / "figures").iterdir()}
    assert names == {"reconstructions.png", "samples.png", "loss_curves.png"}
    header = (tmp_path / "r" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "step", "lr", "train_elbo", "train_kl", "test_elbo", "test_rec"} <= set(header)


def test_data_and_model_shape_must_agree(digits):
    m = zspace.VAE(zspace.VAEConfig(input_shape=(1, 28, 28)))
    with pytest.raises(ConfigError, match="shape"):
        train(m, digits, config=tiny_config(epochs=1), progress=False, figures=False)


def test_learning_rate_schedules():
    c = TrainConfig(lr=1.0, lr_final_fraction=0.1, lr_schedule="cosine")
    assert c.lr_at(0, 100) == pytest.approx(1.0) and c.lr_at(100, 100) == pytest.approx(0.1)
    assert c.lr_at(50, 100) == pytest.approx(0.55)
    e = c.replace(lr_schedule="exponential")
    assert e.lr_at(50, 100) == pytest.approx(0.1 ** 0.5)
    assert c.replace(lr_schedule="constant").lr_at(70, 100) == 1.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(epochs=None, steps=None), "epochs or of steps"),
    (dict(epochs=0), "epochs"),
    (dict(batch_size=0), "batch_size"),
    (dict(lr=-1.0), "lr"),
    (dict(lr_schedule="step"), "lr_schedule"),
    (dict(lr_final_fraction=0.0), "lr_final_fraction"),
    (dict(kl_warmup_epochs=-1), "kl_warmup"),
    (dict(grad_clip=0.0), "grad_clip"),
])
def test_bad_training_configs(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs)


def test_kl_warmup_starts_near_zero(digits):
    from zspace.training.trainer import Trainer

    m = zspace.VAE(zspace.VAEConfig(input_shape=(1, 8, 8), **OPTS))
    t = Trainer(m, digits.train, None, zspace.Preprocessing("dynamic-binarize"),
                tiny_config(kl_warmup_epochs=2), progress=False)
    steps = t.steps_per_epoch
    assert t.warmup(0) == pytest.approx(1 / (2 * steps))
    assert t.warmup(steps - 1) == pytest.approx(0.5) and t.warmup(10 * steps) == 1.0


def test_in_memory_arrays_train_and_encode():
    rng = np.random.default_rng(0)
    x = rng.random((200, 6)).astype(np.float32)
    splits = zspace.DataSplits(zspace.ArrayData.from_arrays(x[:150]), zspace.ArrayData.from_arrays(x[150:]), "mine")
    run = train("vae", splits, config=tiny_config(epochs=1), progress=False, figures=False,
                latent_dim=2, hidden=(8,), likelihood="gaussian-learned")
    assert run.data_spec.preprocessing == "scale"
    assert run.model.embed(torch.from_numpy(x[:5])).shape == (5, 2)


# ---- optimizers, step intervals, callbacks --------------------------------------------
def _trainer(digits, **kw):
    from zspace.training.trainer import Trainer

    m = zspace.VAE(zspace.VAEConfig(input_shape=(1, 8, 8), **OPTS))
    return Trainer(m, digits.train, digits.test, zspace.Preprocessing("dynamic-binarize"),
                   tiny_config(**kw), progress=False)


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                       ("sgd", torch.optim.SGD)])
def test_optimizer_from_config_spares_biases_from_weight_decay(digits, name, cls):
    t = _trainer(digits, optimizer=name, weight_decay=0.1, momentum=0.5, beta1=0.8)
    opt = t.optimizer
    assert type(opt) is cls
    decayed, spared = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and spared["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decayed["params"]) and all(p.ndim < 2 for p in spared["params"])
    assert len(decayed["params"]) + len(spared["params"]) == len(list(t.model.parameters()))
    if name == "sgd":
        assert decayed["momentum"] == 0.5
    else:
        assert decayed["betas"] == (0.8, 0.999)
    assert len(_trainer(digits, optimizer=name).optimizer.param_groups) == 1   # no decay: one group


def test_optimizers_train_differently_and_resume_exactly(digits, tmp_path):
    cfg = tiny_config(epochs=2, lr_schedule="constant", optimizer="sgd", momentum=0.9, lr=0.05,
                      weight_decay=1e-3)
    full = train("vae", digits, out=tmp_path / "full", config=cfg, progress=False, figures=False, **OPTS)
    adam = train("vae", digits, config=cfg.replace(optimizer="adamw", lr=3e-3), progress=False,
                 figures=False, **OPTS)
    assert not same_weights(weights(full.model), weights(adam.model))
    train("vae", digits, out=tmp_path / "part", config=cfg.replace(epochs=1), progress=False,
          figures=False, **OPTS)
    resumed = resume(tmp_path / "part", epochs=2, progress=False, figures=False)
    assert same_weights(weights(full.model), weights(resumed.model))   # momentum buffers restored


def test_schedule_free_signum_follows_its_recursion():
    """y = (1-b) z + b x is where the gradient is taken; z steps by -lr sign(g); x averages z."""
    from zspace.training.optim import ScheduleFreeSignum

    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = ScheduleFreeSignum([w], lr=0.1, momentum=0.9)
    z, x = w.detach().clone(), w.detach().clone()
    target = torch.tensor([0.3, 0.3, 0.3])
    for t in range(1, 6):
        opt.zero_grad()
        ((w - target) ** 2).sum().backward()
        g = w.grad.detach().clone()
        opt.step()
        z = z - 0.1 * g.sign()
        x = x + (z - x) / t
        assert torch.allclose(w.detach(), 0.1 * z + 0.9 * x, atol=1e-6)
    with opt.average():
        assert torch.allclose(w.detach(), x, atol=1e-6)
    assert torch.allclose(w.detach(), 0.1 * z + 0.9 * x, atol=1e-6)   # the training point is back


def test_signum_saves_and_evaluates_the_average_and_resumes_exactly(digits, tmp_path):
    from safetensors.torch import load_file

    cfg = tiny_config(epochs=2, lr_schedule="constant", optimizer="signum", momentum=0.95, lr=3e-3)
    full = train("vae", digits, out=tmp_path / "full", config=cfg, progress=False, figures=False, **OPTS)
    saved = load_file(str(ck.latest_checkpoint(tmp_path / "full") / "model.safetensors"))
    assert same_weights(weights(full.model), saved)      # the model in memory is the saved average
    train("vae", digits, out=tmp_path / "part", config=cfg.replace(epochs=1), progress=False,
          figures=False, **OPTS)
    resumed = resume(tmp_path / "part", epochs=2, progress=False, figures=False)
    assert same_weights(weights(full.model), weights(resumed.model))
    adam = train("vae", digits, config=cfg.replace(optimizer="adam"), progress=False, figures=False, **OPTS)
    assert not same_weights(weights(full.model), weights(adam.model))


def test_step_intervals_and_callbacks(digits, tmp_path):
    from zspace.training.trainer import Callback

    class Record(Callback):
        def __init__(self):
            self.steps, self.evals, self.checkpoints = [], [], []

        def on_step_end(self, trainer):
            self.steps.append(trainer.state.step)
            with torch.no_grad():   # a decoder-norm projection: every weight row to unit norm
                w = trainer.model.decoder.net[-1].weight if hasattr(trainer.model.decoder, "net") else None
                if w is not None:
                    w /= w.norm(dim=1, keepdim=True)

        def on_eval(self, trainer, metrics):
            self.evals.append((trainer.state.step, metrics["elbo"]))

        def on_checkpoint(self, trainer, path):
            self.checkpoints.append(path.name)

    cb = Record()
    cfg = tiny_config(epochs=2, eval_every_steps=10, checkpoint_every_steps=15)   # 23 steps per epoch
    run = train("vae", digits, out=tmp_path / "r", config=cfg, progress=False, figures=False,
                callbacks=[cb], **OPTS)
    assert cb.steps == list(range(1, 47))
    assert [s for s, _ in cb.evals] == [10, 20, 23, 30, 40, 46]
    assert cb.checkpoints == ["epoch-0000-batch-000015", "epoch-0001", "epoch-0001-batch-000007",
                              "epoch-0001-batch-000022", "epoch-0002"]   # steps 15, 23, 30, 45, 46
    rows = run.history()
    assert [r["step"] for r in rows] == [10, 20, 23, 30, 40, 46]
    assert [r["epoch"] for r in rows][2::3] == [1, 2] and 0 < rows[0]["epoch"] < 1
    assert all("test_elbo" in r and "train_elbo" in r for r in rows)


def test_resume_exact_with_step_intervals(digits, tmp_path):
    cfg = tiny_config(epochs=None, steps=40, lr_schedule="constant", eval_every_steps=6,
                      checkpoint_every_steps=4)
    full = train("vae", digits, out=tmp_path / "full", config=cfg, progress=False, figures=False, **OPTS)
    part = tmp_path / "part"
    train("vae", digits, out=part, config=cfg.replace(steps=14), progress=False, figures=False, **OPTS)
    resumed = resume(part, steps=40, progress=False, figures=False)
    assert same_weights(weights(full.model), weights(resumed.model))
    assert strip_times(full.history()) == strip_times(resumed.history())   # provisional row replaced


def test_metrics_stay_on_the_device_between_logs(digits, monkeypatch):
    t = _trainer(digits, epochs=2, eval_limit=50)   # 46 steps, 2 rows
    syncs = {"n": 0}
    real = torch.Tensor.__float__

    def counting(self):
        syncs["n"] += 1
        return real(self)

    monkeypatch.setattr(torch.Tensor, "__float__", counting)
    t.fit()
    assert t.state.step == 46 and 0 < syncs["n"] < t.state.step   # per logged row, not per step


@pytest.mark.parametrize("kwargs, message", [
    (dict(optimizer="lbfgs"), "optimizer must be one of"),
    (dict(precision="fp16"), "precision must be one of"),
    (dict(momentum=1.0), "momentum"),
    (dict(eval_every_steps=0), "eval_every_steps"),
    (dict(checkpoint_every_steps=-2), "checkpoint_every_steps"),
])
def test_bad_trainer_options(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs)
