"""Sparse autoencoder models, their metrics on cases with a known answer, training and splicing."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch

import zspace
from zspace.cli import main
from zspace.data import ShardWriter
from zspace.errors import ConfigError, DataError
import zspace.models.sae as sae_module
from zspace.models.sae import SAEConfig, SparseAutoencoder, geometric_median
from zspace.sae.train import causal_fidelity, density_histogram, feature_statistics, train_sae

D = 16


def sae(**kw):
    torch.manual_seed(0)
    return SparseAutoencoder(SAEConfig(input_shape=(D,), **{"width": 64, "k": 4, **kw}))


def sparse_data(n=4000, d=D, atoms=48, active=3, seed=0):
    """Each row a sum of ``active`` of ``atoms`` unit directions with positive weights."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(atoms, d, generator=g), dim=1)
    idx = torch.stack([torch.randperm(atoms, generator=g)[:active] for _ in range(n)])
    f = torch.zeros(n, atoms).scatter(1, idx, torch.rand(n, active, generator=g) + 0.5)
    return f @ dirs, dirs


def test_topk_keeps_exactly_k_and_batchtopk_keeps_k_on_average():
    x, _ = sparse_data(256)
    m = sae(kind="topk")
    m.init_from_data(x)
    f = m.encode_features(x)
    assert ((f > 0).sum(1) <= 4).all() and ((f > 0).sum(1) == 4).float().mean() > 0.9
    b = sae(kind="batchtopk")
    b.init_from_data(x)
    b.train()
    out = b(x)
    assert float(out.terms["l0"].sum()) <= 4 * len(x) and float(out.terms["l0"].mean()) > 3.5
    assert float(out.terms["l0"].std()) > 0          # the budget is shared, not per example
    assert float(b.threshold) > 0                     # learned for evaluation


PATHS = ("compiled", "torch-dense", "torch-gathered")


def use_path(monkeypatch, path):
    """compiled: the C kernels (float32 on the CPU); torch-*: the fallbacks, dense products or
    gathered rows, in several row chunks."""
    from zspace.nn import sparse_rows

    if path == "compiled":
        assert sparse_rows.compiled_available()
        return torch.float32
    monkeypatch.setenv("ZSPACE_NATIVE", "0")
    big = 10**6 if path == "torch-dense" else 0
    monkeypatch.setattr(sparse_rows, "DENSE_GATHER", big)
    monkeypatch.setattr(sparse_rows, "DENSE_SCATTER", big)
    monkeypatch.setattr(sparse_rows, "CHUNK_ELEMENTS", 50)
    monkeypatch.setattr(sae_module, "_RANK_ROWS", 16)
    return torch.float64


@pytest.mark.parametrize("path", PATHS)
def test_sparse_decode_gradients_equal_the_dense_product(monkeypatch, path):
    """Every backward path (compiled, dense products, gathered rows) gives autograd's gradient of f @ W."""
    from zspace.models.sae import sparse_decode

    dtype = use_path(monkeypatch, path)
    g = torch.Generator().manual_seed(3)
    W = torch.randn(40, 7, generator=g, dtype=dtype, requires_grad=True)
    idx = torch.stack([torch.randperm(40, generator=g)[:5] for _ in range(9)])
    vals = torch.rand(9, 5, generator=g, dtype=dtype, requires_grad=True)
    up = torch.randn(9, 7, generator=g, dtype=dtype)
    (sparse_decode(idx, vals, W) * up).sum().backward()
    gv, gw = vals.grad.clone(), W.grad.clone()
    vals.grad = W.grad = None
    f = torch.zeros(9, 40, dtype=dtype).scatter(1, idx, vals)
    ((f @ W) * up).sum().backward()
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else {}
    assert torch.allclose(gv, vals.grad, **tol) and torch.allclose(gw, W.grad, **tol)


@pytest.mark.parametrize("path", PATHS)
def test_topk_encoder_gradients_equal_autograds_through_the_dense_path(monkeypatch, path):
    """_TopKEncode (chunked rows, gradients only at the selected columns) gives the same indices,
    values and gradients for xn, W, b_enc and b_dec as autograd through addmm, topk and ReLU, and
    the pre-activations aux-k asks for (some columns, every 3rd row) from the same chunks."""
    import zspace.models.sae as S
    from zspace.nn import sparse_rows

    dtype = use_path(monkeypatch, path)
    monkeypatch.setattr(sparse_rows, "CHUNK_ELEMENTS", 16 * 40)     # 16-row chunks: the aux rows cross them
    monkeypatch.setattr(S, "_RANK_ROWS", 16)
    g = torch.Generator().manual_seed(5)
    xn = torch.randn(50, 6, generator=g, dtype=dtype, requires_grad=True)
    W = torch.randn(6, 40, generator=g, dtype=dtype, requires_grad=True)
    b = (torch.randn(40, generator=g, dtype=dtype) - 3.0).requires_grad_()
    b_dec = (0.3 * torch.randn(6, generator=g, dtype=dtype)).requires_grad_()
    up = torch.randn(50, 4, generator=g, dtype=dtype)
    cols = torch.tensor([3, 17, 39, 0])
    idx, vals, aux_pre = S._TopKEncode.apply(xn, W, b, b_dec, 4, cols, 3)
    order = idx.argsort(1)                                  # compare in column order
    (vals.gather(1, order) * up).sum().backward()
    leaves = (xn, W, b, b_dec)
    grads = [t.grad.clone() for t in leaves]
    for t in leaves:
        t.grad = None
    pre = torch.addmm(b, xn - b_dec, W)
    assert aux_pre.shape == (17, 4) and torch.allclose(aux_pre, pre.detach()[::3][:, cols], rtol=1e-5, atol=1e-5)
    ref_vals, ref_idx = pre.topk(4, dim=1)
    ref_order = ref_idx.argsort(1)
    assert torch.equal(idx.gather(1, order), ref_idx.gather(1, ref_order))
    (torch.relu(ref_vals).gather(1, ref_order) * up).sum().backward()
    assert (vals <= 0).any() and (vals > 0).any()           # the ReLU's gate is exercised
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else {}
    for got, t in zip(grads, leaves):
        assert torch.allclose(got, t.grad, **tol), (got - t.grad).abs().max()


@pytest.mark.parametrize("path", ("compiled", "torch-dense"))
def test_topk_encoder_under_bf16_ranks_in_bf16_and_keeps_fp32_values(monkeypatch, path, bf16_anywhere):
    """Under bf16 autocast the features are the top k of the bf16 product, and their values are
    the exact fp32 pre-activations (fp32 values, gradients as at fp32)."""
    import zspace.models.sae as S

    use_path(monkeypatch, path)
    g = torch.Generator().manual_seed(6)
    xn = torch.randn(300, 24, generator=g)
    W = torch.randn(24, 512, generator=g, requires_grad=True)
    b = torch.randn(512, generator=g) * 0.1
    b_dec = torch.randn(24, generator=g) * 3                  # centred in fp32, before the cast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        idx, vals, _ = S._TopKEncode.apply(xn, W, b, b_dec, 8)
    assert vals.dtype == torch.float32
    exact = torch.addmm(b, xn - b_dec, W.detach())
    assert torch.allclose(vals, exact.gather(1, idx).clamp_min(0), atol=1e-5)
    low = torch.addmm(b.bfloat16(), (xn - b_dec).bfloat16(), W.detach().bfloat16()).float()
    kth = low.topk(8, dim=1).values[:, -1:]
    assert (low.gather(1, idx) >= kth).all()                 # chosen by the bf16 ranking
    vals.sum().backward()
    assert W.grad is not None and W.grad.dtype == torch.float32


def test_encoder_starts_as_the_scaled_decoder_transpose():
    for kind, scale in (("topk", 0.4), ("batchtopk", 0.4), ("relu", 1.0), ("jumprelu", 1.0)):
        m = sae(kind=kind)
        assert torch.allclose(m.W_enc, m.W_dec.t() * scale), kind
    assert torch.allclose(sae(kind="topk", encoder_scale=1.0).W_enc, sae(kind="topk").W_dec.t())
    with pytest.raises(ConfigError, match="encoder_scale"):
        SAEConfig(encoder_scale=0.0)


def test_dictionary_initialised_partly_from_examples():
    x, _ = sparse_data(256)
    whole = sae(kind="topk", data_init=1.0)
    whole.init_from_data(x)
    centred = torch.nn.functional.normalize(x * whole.scale - whole.b_dec, dim=1)
    cos = whole.W_dec.detach() @ centred.t()                       # (width, examples)
    assert torch.allclose(cos.max(1).values, torch.ones(64), atol=1e-5)   # each row is an example's direction
    assert len(set(cos.argmax(1).tolist())) == 64                  # 64 different examples of the 256
    assert torch.allclose(whole.W_enc, whole.W_dec.t() * 0.4)
    half = sae(kind="topk")                                        # the TopK default: an even mix
    random_dirs = half.W_dec.detach().clone()
    half.init_from_data(x)
    w = half.W_dec.detach()
    assert torch.allclose(w.norm(dim=1), torch.ones(64), atol=1e-5)
    between = (w * random_dirs).sum(1)
    assert (between > 0.3).all() and (between < 0.99).all()         # moved toward an example, not onto it
    for kind in ("relu", "jumprelu"):                             # random, as their penalties were set with
        m = sae(kind=kind)
        before = m.W_dec.detach().clone()
        m.init_from_data(x)
        assert torch.equal(m.W_dec.detach(), before)
    with pytest.raises(ConfigError, match="data_init"):
        SAEConfig(data_init=1.5)


def test_fvu_and_l0_known_answers():
    x, _ = sparse_data(500)
    m = sae(kind="relu")
    with torch.no_grad():        # reconstruction = the mean of x exactly: FVU = 1
        m.W_enc.zero_()
        m.b_enc.fill_(-1.0)
        m.b_dec.copy_(x.mean(0))
    out = m(x)
    assert out.stats["fvu"].value() == pytest.approx(1.0, abs=1e-6)
    assert float(out.terms["l0"].sum()) == 0
    # the statistic accumulated over batches equals the whole-set value
    parts = [m(x[i:i + 100]).stats["fvu"] for i in range(0, 500, 100)]
    total = parts[0]
    for p in parts[1:]:
        total = total.merge(p)
    assert total.value() == pytest.approx(1.0, abs=1e-6)


def identity_sae(d=D):
    """relu(x) - relu(-x) = x: a two-sided identity dictionary."""
    m = SparseAutoencoder(SAEConfig(input_shape=(d,), width=2 * d, kind="relu", sparsity_weight=0.0,
                                    unit_norm_decoder=False))
    eye = torch.eye(d)
    with torch.no_grad():
        m.W_enc.copy_(torch.cat([eye, -eye], 1))
        m.W_dec.copy_(torch.cat([eye, -eye], 0))
        m.b_enc.zero_()
        m.b_dec.zero_()
    return m.eval()


def test_identity_reconstruction_and_geometric_median():
    x = torch.randn(50, D)
    m = identity_sae()
    assert torch.allclose(m.reconstruct(x), x, atol=1e-6)
    assert m(x).stats["fvu"].value() == pytest.approx(0.0, abs=1e-10)
    pts = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0], [100.0, 100.0]])
    med = geometric_median(pts)
    assert med.norm() < 3.0 and pts.mean(0).norm() > 20       # robust where the mean is not


def test_dead_fraction_and_density_histogram_count_what_they_say():
    x, _ = sparse_data(300)
    m = sae(kind="topk")
    m.init_from_data(x)
    with torch.no_grad():
        m.b_enc[:10] = -1e4                  # ten features can never fire
    data = zspace.ArrayData.from_arrays(x.numpy())
    fvu, l0, fires, n = feature_statistics(m, data, batch_size=64)
    assert n == 300 and l0 == pytest.approx(4.0, abs=0.1) and (fires[:10] == 0).all()
    hist = density_histogram(fires, n)
    assert hist["dead"] == int((fires == 0).sum()) >= 10
    assert sum(hist["counts"]) + hist["dead"] == 64


def test_aux_k_revives_dead_latents():
    x, _ = sparse_data(3000)
    dead_after = {}
    for aux_k in (0, 32):
        m = sae(kind="topk", width=64, k=3, aux_k=aux_k, dead_tokens=512)
        m.init_from_data(x)
        with torch.no_grad():
            m.b_enc[:32] -= 3.0 * m.config.encoder_init_scale     # half the features start silent
        opt = torch.optim.Adam(m.parameters(), 3e-3)
        m.train()
        for step in range(300):
            b = x[torch.randint(0, len(x), (128,), generator=torch.Generator().manual_seed(step))]
            loss = m(b).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            m.normalize_decoder()
        dead_after[aux_k] = m.dead_fraction()
    assert dead_after[32] < dead_after[0] - 0.1, dead_after


@pytest.mark.parametrize("aux_k", [5, 2])
@pytest.mark.parametrize("share,every,rescale", [(0.0, 1, False), (1 / 16, 3, False), (0.0, 1, True), (1 / 16, 3, True)])
def test_aux_loss_and_gradients_equal_the_autograd_reference(share, every, rescale, aux_k):
    """_AuxK (one cast per operand, gradients by hand) equals autograd through the plain formula:
    the top aux_k ReLU pre-activations of the dead latents decode the residual, over its variance;
    with aux_rescale, e_hat times each row's least-squares scale (held constant) does.
    With 12 of 64 features dead and aux_share 1/16 (4 features) it reads every 3rd row. aux_k 5
    takes the dense products, aux_k 2 (4 x 2 <= 12 dead) the gathers through the chosen 2."""
    x, _ = sparse_data(90)
    m = sae(kind="topk", width=64, k=3, aux_k=aux_k, aux_share=share, aux_rescale=rescale).double()
    m.init_from_data(x)
    g = torch.Generator().manual_seed(1)
    xn = torch.randn(90, D, generator=g, dtype=torch.float64)
    residual = torch.randn(90, D, generator=g, dtype=torch.float64)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[torch.randperm(64, generator=g)[:12]] = True
    params = (m.W_enc, m.b_enc, m.b_dec, m.W_dec)
    aux_rows = m._aux_rows(dead)
    cols = dead.nonzero().squeeze(1)
    assert torch.equal(aux_rows[0], cols) and aux_rows[1] == every
    with torch.no_grad():                                   # the pre-activations the encoder's pass hands over
        pre = m._encode_normalised(xn)[::every][:, cols]
    got = m._aux_loss(xn, residual, residual.square().sum(1), aux_rows, pre)
    got.backward()
    grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    xs, rs = xn[::every], residual[::every]
    pre = xs @ m.W_enc[:, cols] + (m.b_enc - m.b_dec @ m.W_enc)[cols]
    keep = torch.zeros_like(pre, dtype=torch.bool).scatter(1, pre.topk(aux_k, dim=1).indices, True)
    e_hat = (torch.relu(pre) * keep) @ m.W_dec[cols]
    if rescale:
        scale = ((e_hat * rs).sum(1, keepdim=True) / e_hat.square().sum(1, keepdim=True)).clamp(0, 1).detach()
        assert (scale > 0).any() and not torch.allclose(scale, torch.ones_like(scale))
        e_hat = e_hat * scale
    ref = (e_hat - rs).square().sum(1).mean() / (rs - rs.mean(0)).square().sum(1).mean()
    ref.backward()
    assert float(got.detach()) == pytest.approx(float(ref.detach()), rel=1e-12)
    for a, p in zip(grads, params):
        assert torch.allclose(a, p.grad, atol=1e-12), (a - p.grad).abs().max()
    assert grads[0][:, ~dead].abs().max() == 0 and grads[0][:, dead].abs().max() > 0   # only dead columns move
    with pytest.raises(ConfigError, match="aux_share"):
        SAEConfig(aux_share=1.5)


@pytest.mark.parametrize("aux_k", [4, 32])
def test_training_step_with_aux_k_in_fp32_equals_fp64(aux_k):
    """A whole training step with dead features (40 of 64), its aux-k's pre-activations from the
    encoder's pass: fp32 (the compiled gathers and scatters where aux-k goes sparse, aux_k 4) gives
    the float64 step's loss and gradients; aux_k 32 takes the dense products. The float64 model is
    a deep copy, which must keep the decoder's gradient hook (tensor hooks are not copied)."""
    x, _ = sparse_data(200)
    m32 = sae(kind="topk", width=64, k=3, aux_k=aux_k, aux_share=0.0, dead_tokens=10)
    m32.init_from_data(x)
    m64 = copy.deepcopy(m32).double()
    dead = torch.randperm(64, generator=torch.Generator().manual_seed(2))[:40]
    losses, grads = [], []
    for m, xx in ((m32, x), (m64, x.double())):
        m.train()
        m.silent_tokens[dead] = 100
        out = m(xx)
        assert "aux" in out.terms and float(out.terms["aux"][0]) > 0
        out.loss.backward()
        losses.append(float(out.loss.detach()))
        grads.append([p.grad.double() for p in (m.W_enc, m.b_enc, m.b_dec, m.W_dec)])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), (a - b).abs().max()
    assert grads[1][0][:, dead].abs().max() > 0                 # the dead columns get aux-k's gradient


def test_jumprelu_threshold_learns_and_unit_norm_is_kept():
    x, _ = sparse_data(256)
    m = sae(kind="jumprelu", sparsity_weight=0.01)
    m.init_from_data(x)
    m.train()
    loss = m(x).loss
    loss.backward()
    assert m.log_theta.grad is not None and m.log_theta.grad.abs().sum() > 0
    # the decoder gradient has no component along its (unit) rows
    assert (m.W_dec.grad * m.W_dec).sum(1).abs().max() < 1e-5
    [cb] = m.training_callbacks()
    with torch.no_grad():
        m.W_dec.mul_(3.0)
    cb.on_step_end(None)
    assert torch.allclose(m.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)


@pytest.mark.parametrize("options, message", [
    (dict(width=0), "width must be an integer >= 1"),
    (dict(width=8, k=9), "k = 9 is more than the width"),
    (dict(kind="gated"), "unknown SAE kind"),
])
def test_bad_sae_options(options, message):
    with pytest.raises(ConfigError, match=message):
        SAEConfig(input_shape=(D,), **options)


def test_nan_activations_are_refused():
    x = torch.randn(10, D)
    x[3, 2] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        sae().init_from_data(x)


def _store(path, x):
    with ShardWriter(path, (x.shape[1],), "float16", rows_per_shard=1000,
                     metadata={"model": "none", "hook": "x"}) as w:
        w.append(x.numpy())
    return path


@pytest.mark.parametrize("precision,optimizer", [("fp32", "adam"), ("bf16", "signum")])
def test_train_sae_on_a_store_through_the_common_trainer_and_resume(tmp_path, precision, optimizer, bf16_anywhere):
    """Bit-exact resume, also at the TopK default (bf16 ranking, compiled kernels, schedule-free signum)."""
    x, dirs = sparse_data(3000)
    store = _store(tmp_path / "acts", x)
    cfg = zspace.TrainConfig(epochs=None, steps=30, batch_size=128, lr=3e-3, lr_schedule="constant", seed=1,
                             precision=precision, optimizer=optimizer)
    full = train_sae(store, tmp_path / "full", kind="topk", width=64, k=3, config=cfg, test_fraction=0.1,
                     progress=False, dead_tokens=500)
    train_sae(store, tmp_path / "part", kind="topk", width=64, k=3, config=cfg.replace(steps=12),
              test_fraction=0.1, progress=False, dead_tokens=500)
    resumed = zspace.training.resume(tmp_path / "part", steps=30, progress=False, figures=False)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k                # silent-token counters and thresholds included
    assert torch.allclose(full.model.W_dec.norm(dim=1), torch.ones(64), atol=1e-4)
    assert full.history()[-1]["test_fvu"] < 0.9


def test_splicing_an_identity_sae_recovers_all_of_the_loss():
    transformers = pytest.importorskip("transformers")
    from zspace.sae import LanguageModel

    class Chars:
        def encode(self, text):
            return [3 + ord(c) % 60 for c in text]

        def decode(self, ids):
            return "".join(chr(i) for i in ids)

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=D, intermediate_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(cfg).eval()
    lm = LanguageModel(model=model, tokenizer=Chars(), name="tiny", kind="causal", bos_id=1, pad_id=0,
                       prefix=(1,), max_length=64, unembed=model.lm_head.weight)
    texts = ["the cat sat on the mat", "a dog ran in the park today"]
    out = causal_fidelity(lm, identity_sae(), "resid_post.0", texts, context=32)
    assert out["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-5)
    assert out["kl_clean_to_spliced"] == pytest.approx(0.0, abs=1e-6)
    assert out["ce_zero_ablated"] != pytest.approx(out["ce_clean"])


def test_topk_defaults_to_bf16_only_where_the_device_has_it(monkeypatch):
    from zspace.sae import default_config
    from zspace.training import trainer

    monkeypatch.setattr(trainer, "bf16_supported", lambda device: True)
    assert default_config(64).precision == "bf16"
    assert default_config(64, "jumprelu").precision == default_config(64, "relu").precision == "fp32"
    assert default_config(64, precision="fp32").precision == "fp32"             # a given choice stands
    monkeypatch.setattr(trainer, "bf16_supported", lambda device: False)
    assert default_config(64).precision == "fp32"


def test_sae_defaults_schedule_free_on_the_unit_sphere_with_a_budget_relative_dead_window(tmp_path):
    from zspace.sae import default_config

    x, _ = sparse_data(3000)
    store = _store(tmp_path / "acts", x)
    cfg = default_config(64, epochs=None, steps=60, batch_size=128)
    assert cfg.optimizer == "signum" and cfg.lr_schedule == "constant"
    assert default_config(64, "jumprelu").optimizer == "adam"    # its penalty needs step sizes
    run = train_sae(store, tmp_path / "r", kind="topk", width=64, k=3, config=cfg, test_fraction=0.1,
                    progress=False)
    # the schedule-free average is what was saved and evaluated, and its decoder rows are unit too
    assert torch.allclose(run.model.W_dec.detach().norm(dim=1), torch.ones(64), atol=1e-5)
    assert run.model.config.dead_tokens == 4 * 128               # 60 steps: the 4-batch floor
    from zspace.sae.train import dead_window

    assert dead_window(default_config(64, epochs=None, steps=2000, batch_size=128), 0) == 2000 * 128 // 32
    assert dead_window(default_config(64, epochs=None, steps=10**6, batch_size=4096), 0) == 1_000_000
    assert run.history()[-1]["test_fvu"] < 0.5


def test_sae_cli_bad_input_is_one_line(tmp_path, capsys):
    x, _ = sparse_data(200)
    store = _store(tmp_path / "acts", x)
    assert main(["sae", "train", str(store), "--out", str(tmp_path / "r"), "-k", "500", "--width", "64"]) == 2
    assert "k = 500 is more than the width" in capsys.readouterr().err
    assert main(["sae", "train", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file" in err
    assert main(["sae", "train", str(store), "--out", str(tmp_path / "r"), "--width", "64", "-k", "4",
                 "--steps", "5", "--batch-size", "64", "--no-progress"]) == 0
    assert main(["sae", "eval", str(tmp_path / "r"), "--json", str(tmp_path / "ev.json")]) == 0
    assert "FVU" in capsys.readouterr().out and (tmp_path / "ev.json").is_file()
