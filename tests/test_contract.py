"""One contract for every registered model, with a tiny config each: forward/backward,
save/load round trip, config JSON round trip, and every declared capability working."""
import dataclasses

import pytest
import torch

from zspace import ConfigError
from zspace.core.io import read_json, write_json_atomic
from zspace.models import MODELS, VQPrior, build_model
from zspace.models import capabilities as cap
from zspace.models.losses import Losses, Statistic, mean_loss_terms
from zspace.training.checkpoint import load_weights, save_checkpoint

SHAPE = (1, 8, 8)
TINY = {
    "vae": dict(latent_dim=3, hidden=(16,)),
    "cvae": dict(latent_dim=3, hidden=(16,), num_classes=3),
    "ae": dict(latent_dim=3, hidden=(16,), code_activation="sigmoid", sparsity="kl", sparsity_weight=1e-3),
    "pixelcnn": dict(channels=8, residual_blocks=1, head_channels=8, first_kernel=3),
    "gated-pixelcnn": dict(channels=8, residual_blocks=1, head_channels=8, first_kernel=3, num_classes=3,
                           head="categorical", levels=4),
    "vqvae": dict(channels=(4,), embedding_dim=4, num_codes=8),
    # a VQ-VAE over SHAPE and a gated prior over its 4x4 code grids (it reads codes, samples images)
    "vqvae-prior": dict(vqvae=dict(input_shape=SHAPE, channels=(4,), embedding_dim=4, num_codes=8),
                        prior=dict(channels=8, residual_blocks=1, head_channels=8, first_kernel=3,
                                   embedding_dim=4, num_classes=3)),
    "tile-transformer": dict(levels=5, width=8, layers=1, heads=2, num_classes=3),
    "sae": dict(width=16, k=4, aux_k=4, dead_tokens=12),
    "dbvae": dict(latent_dim=3, hidden=(16,), num_classes=3, bins=4),
}
READS_CODES = {"vqvae-prior"}            # its inputs are code grids, not SHAPE


def test_every_registered_model_has_a_tiny_config():
    assert set(TINY) == set(MODELS)


def tiny(name: str):
    torch.manual_seed(0)
    return build_model(name, TINY[name] if name in READS_CODES else {"input_shape": SHAPE, **TINY[name]})


def batch(model, n: int = 6):
    g = torch.Generator().manual_seed(1)
    shape = tuple(model.config.input_shape)
    if model.integer_inputs:
        levels = model.vqvae.num_codes if isinstance(model, VQPrior) else model.config.levels
        x = torch.randint(0, levels, (n, *shape), generator=g)
    else:
        x = torch.rand(n, *shape, generator=g).round()
    k = model.num_classes or getattr(model, "num_targets", 0)   # a classifier's targets are labels too
    y = torch.arange(n) % k if k else None
    return x, y


@pytest.fixture(params=sorted(TINY))
def name(request):
    return request.param


def test_forward_returns_losses_and_backward_reaches_every_parameter(name):
    model = tiny(name)
    x, y = batch(model)
    out = model(x, y)
    assert isinstance(out, Losses) and out.loss.shape == () and torch.isfinite(out.loss)
    assert out.terms and all(v.shape == (len(x),) for v in out.terms.values())
    assert all(isinstance(s, Statistic) and torch.isfinite(torch.tensor(s.value())) for s in out.stats.values())
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert all(p.grad is None for p in frozen) and (bool(frozen) == (name in READS_CODES))
    model.eval()                             # (training steps move the VQ-VAE's EMA codebook)
    torch.manual_seed(2)
    a = model.loss(x, y)                     # the old name is the same call
    torch.manual_seed(2)
    b = model(x, y)
    assert torch.equal(a.loss, b.loss)


def test_statistics_reduce_exactly_over_batches(name):
    """Batch statistics summed over two halves equal the statistic of the whole batch."""
    model = tiny(name).eval()
    x, y = batch(model, 8)
    whole = model(x, y).stats
    halves = [model(x[i:i + 4], None if y is None else y[i:i + 4]).stats for i in (0, 4)]
    for k, s in whole.items():
        assert halves[0][k].merge(halves[1][k]).value() == pytest.approx(s.value(), rel=1e-6)


def test_save_load_round_trip(name, tmp_path):
    model = tiny(name)
    x, y = batch(model)
    model.train()
    model(x, y)                          # buffers (VQ-VAE codebook) move on a training step
    model.eval()
    path = save_checkpoint(tmp_path, "epoch-0001", model, None, {"epoch": 1})
    torch.manual_seed(3)
    again = build_model(name, model.config.to_dict())
    assert not all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    load_weights(again, path / "model.safetensors")
    again.eval()
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    torch.manual_seed(4)
    first = model(x, y).loss
    torch.manual_seed(4)
    assert torch.equal(first, again(x, y).loss)


def test_config_json_round_trip(name, tmp_path):
    model = tiny(name)
    write_json_atomic(tmp_path / "c.json", model.config.to_dict())
    back = type(model.config).from_dict(read_json(tmp_path / "c.json"))
    assert back == model.config and dataclasses.is_dataclass(back)
    with pytest.raises(ConfigError, match="unknown option"):
        type(model.config).from_dict({**model.config.to_dict(), "no_such_option": 1})


def test_unknown_model_name():
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("gan", {})


def test_declared_capabilities_work(name):
    model = tiny(name).eval()
    x, y = batch(model)
    n = len(x)
    declared = set(cap.capabilities_of(model))
    assert declared, f"{name} declares no capability"
    with torch.no_grad():
        if isinstance(model, cap.ContinuousCode):
            z = model.embed(x, y)
            assert z.shape == (n, model.code_dim)
            assert model.decode_mean(z, y).shape == x.shape
        if isinstance(model, cap.LatentVariableModel):
            q = model.encode(x, y)
            assert q.mean.shape == (n, model.code_dim)
            assert model.decode(q.rsample(), y).log_prob(x).shape == (n,)
            rec, kl = model.elbo_terms(x, y)
            assert rec.shape == kl.shape == (n,) and bool((kl >= 0).all())
        if isinstance(model, cap.ImportanceSampledLikelihood):
            q = model.encode(x, y)
            assert model.log_importance_weights(x, q, 5, y).shape == (5, n)
        if isinstance(model, cap.ExactLikelihood):
            lp = model.log_prob(x, y)
            assert lp.shape == (n,) and bool((lp <= 0).all())
        if isinstance(model, cap.SamplesFromPrior):
            s = model.sample(2, y=None if y is None else y[:2])
            assert s.shape == (2, *SHAPE)
        if isinstance(model, cap.Reconstructs):
            assert model.reconstruct(x, y).shape == x.shape
        if isinstance(model, cap.DiscreteCodes):
            codes = model.encode_codes(x)
            assert codes.shape[0] == n and int(codes.max()) < model.num_codes
            assert model.decode_codes(codes).shape == x.shape
    assert isinstance(model, cap.Conditional) == (model.num_classes > 0)
    if isinstance(model, cap.Conditional):
        with pytest.raises(ConfigError, match="class-conditional"):
            model(x, None)


@dataclasses.dataclass
class Batch:                 # what mean_loss_terms reads of a loader's batch
    x: torch.Tensor
    y: torch.Tensor | None

    def __len__(self):
        return len(self.x)

    def to(self, device):
        return self


def test_mean_loss_terms_reads_terms_and_statistics(name):
    model = tiny(name)
    x, y = batch(model, 8)
    halves = [Batch(x[i:i + 4], None if y is None else y[i:i + 4]) for i in (0, 4)]
    torch.manual_seed(5)
    means = mean_loss_terms(model, halves)
    torch.manual_seed(5)
    outs = [model.eval()(h.x, h.y) for h in halves]
    for k in outs[0].example_terms():
        whole = torch.cat([o.terms[k] for o in outs]).double().mean()
        assert means[k] == pytest.approx(float(whole), rel=1e-6, abs=1e-9)
    for k, s in outs[0].stats.items():
        assert means[k] == pytest.approx(s.merge(outs[1].stats[k]).value(), rel=1e-6)


def test_model_owned_policies(name):
    model = tiny(name)
    pre = "uint8" if model.integer_inputs else "scale"
    model.check_preprocessing(pre)
    with pytest.raises(ConfigError):
        model.check_preprocessing("none" if model.integer_inputs else "uint8")
    meaning = model.likelihood_meaning(pre)
    assert meaning.kind and meaning.note


def test_vqvae_prior_is_one_model_that_samples_images_from_its_own_checkpoint(tmp_path):
    """The composite keeps the VQ-VAE frozen through training steps and decodes its own samples."""
    model = tiny("vqvae-prior")
    codebook = model.vqvae.quantizer.codebook.clone()
    x, y = batch(model)
    model.train()
    model(x, y).loss.backward()
    assert not model.vqvae.training and torch.equal(model.vqvae.quantizer.codebook, codebook)
    path = save_checkpoint(tmp_path, "epoch-0001", model, None, {"epoch": 1})
    again = build_model("vqvae-prior", model.config.to_dict())
    load_weights(again, path / "model.safetensors")
    again.eval()
    torch.manual_seed(0)
    s = again.sample(2, y=torch.tensor([0, 1]))
    torch.manual_seed(0)
    codes = model.eval().sample_codes(2, y=torch.tensor([0, 1]))
    assert s.shape == (2, *SHAPE) and torch.equal(s, model.vqvae.decode_codes(codes[:, 0]))
    assert "code grids" in again.likelihood_meaning("uint8").note
    with pytest.raises(ConfigError, match="train prior"):
        build_model("vqvae-prior", {"input_shape": SHAPE})
