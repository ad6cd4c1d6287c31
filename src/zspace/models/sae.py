"""Sparse autoencoders: an overcomplete dictionary of features read off another network.

x (B, d) is an activation vector (a transformer's residual stream, say). With the input
scaled by a fixed ``scale`` (so that E||x||^2 = d, fitted once from data) and b_dec the
decoder bias:

    pre   = (x * scale - b_dec) W_enc + b_enc          # (B, width)
    f     = sparse(pre)                                 # the feature activations, >= 0
    x_hat = (f W_dec + b_dec) / scale                   # W_dec: (width, d), rows = features

``kind`` chooses ``sparse`` and the sparsity mechanism:

* ``relu``: f = ReLU(pre), penalty lambda * sum_i f_i ||W_dec,i|| (the L1 weighted by
  decoder norms of Anthropic's April 2024 update; no norm constraint is then needed).
* ``topk``: the k largest ReLU(pre) per example (Gao et al. 2024); decoder rows unit norm.
* ``batchtopk``: the k * B largest over the whole batch (Bussmann et al. 2024), so examples
  share a budget of k on average; at evaluation a threshold learned as the running mean of
  the smallest kept activation replaces the batch rule, so each example stands alone.
* ``jumprelu``: f = pre * H(pre - theta) with a learned threshold per feature, trained with
  straight-through gradients through a rectangle kernel of ``bandwidth`` and an L0 penalty
  (Rajamanoharan et al. 2024).

Standard practice, all on by default: b_dec at the geometric median of a data sample (and
the input scale from it, ``init_from_data``); for topk/batchtopk, decoder rows half toward centred training
examples (``data_init``); W_enc initialised as W_dec's transpose (times ``encoder_scale``); unit-norm
decoder rows for topk/batchtopk/jumprelu, kept by removing the gradient's component along each
row and renormalising after every step (``training_callbacks``); the aux-k loss (Gao et al.
2024): the ``aux_k`` largest pre-activations of latents that have not fired for ``dead_tokens``
tokens reconstruct the residual, weighted ``aux_weight``, their sum scaled down to its least-squares
fit where it overshoots (``aux_rescale``). Features are decoded sparsely
(``embedding_bag`` over the active indices) when k is small against the width.

Per-example terms: ``mse`` (squared error per dimension, normalised space), ``l0`` (active
features), ``sparsity`` (the penalty); batch statistic ``fvu`` (fraction of variance
unexplained: squared error over the variance about the batch-accumulated mean, exact over
batches and ranks). ``dead_fraction`` reads the firing tracker.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError
from .base import Losses, Model, ModelConfig, Statistic, check_positive, check_positive_int, register
from ..nn.sparse_rows import gather_dot, row_chunks, row_topk, scatter_outer
from .capabilities import ContinuousCode, Reconstructs

SAE_KINDS = ("relu", "topk", "batchtopk", "jumprelu")


@dataclass(frozen=True)
class SAEConfig(ModelConfig):
    input_shape: tuple[int, ...] = (64,)   # activation vectors; any shape is flattened to d
    width: int = 512                       # features in the dictionary (e.g. 8x or 32x d)
    kind: str = "topk"                     # relu | topk | batchtopk | jumprelu
    k: int = 32                            # topk: active features per example; batchtopk: on average
    sparsity_weight: float = 5.0           # relu: lambda of the norm-weighted L1; jumprelu: of L0
    jump_threshold: float = 0.1            # jumprelu: initial theta (normalised units)
    bandwidth: float = 0.05                # jumprelu: straight-through kernel width
    aux_k: int = 256                       # aux-k latents for dead features (0: off)
    aux_weight: float = 1 / 32             # Gao et al.'s alpha
    aux_share: float = 0.0625              # aux-k reads every row while at most this share of features is dead,
                                           # proportionally fewer (evenly spaced) beyond; 0: every row always
    aux_rescale: bool = True               # aux-k scales an overshooting sum down to its least-squares fit (off: Gao's plain loss)
    dead_tokens: int = 1_000_000           # a feature silent this many tokens is dead
    unit_norm_decoder: bool | None = None  # None: on for topk, batchtopk, jumprelu
    encoder_scale: float | None = None     # W_enc = this x W_dec^T at init; None: 0.4 for topk/batchtopk, else 1
    data_init: float | None = None         # initial decoder rows' share from centred examples; None: 0.5 for topk/batchtopk, else 0
    threshold_momentum: float = 0.9        # batchtopk's running evaluation threshold (recent batches)

    def __post_init__(self):
        if self.kind not in SAE_KINDS:
            raise ConfigError(f"unknown SAE kind {self.kind!r}; choose one of {', '.join(SAE_KINDS)}")
        if not self.input_shape or any(int(s) < 1 for s in self.input_shape):
            raise ConfigError(f"input_shape must be positive sizes, got {self.input_shape}")
        check_positive_int("width", self.width)
        if self.kind in ("topk", "batchtopk"):
            check_positive_int("k", self.k)
            if self.k > self.width:
                raise ConfigError(f"k = {self.k} is more than the width ({self.width} features)")
        check_positive_int("aux_k", self.aux_k, minimum=0)
        if not (math.isfinite(self.aux_share) and 0 <= self.aux_share <= 1):
            raise ConfigError(f"aux_share must be in [0, 1], got {self.aux_share}")
        check_positive_int("dead_tokens", self.dead_tokens)
        if not isinstance(self.aux_rescale, bool):
            raise ConfigError(f"aux_rescale must be true or false, got {self.aux_rescale!r}")
        for name in ("jump_threshold", "bandwidth", "aux_weight"):
            check_positive(name, getattr(self, name))
        if self.encoder_scale is not None:
            check_positive("encoder_scale", self.encoder_scale)
        if self.data_init is not None and not (math.isfinite(self.data_init) and 0 <= self.data_init <= 1):
            raise ConfigError(f"data_init must be in [0, 1], got {self.data_init}")
        if not (math.isfinite(self.sparsity_weight) and self.sparsity_weight >= 0):
            raise ConfigError(f"sparsity_weight must be >= 0, got {self.sparsity_weight}")
        if not 0 < self.threshold_momentum < 1:
            raise ConfigError(f"threshold_momentum must be in (0, 1), got {self.threshold_momentum}")

    @property
    def d(self) -> int:
        return int(math.prod(self.input_shape))

    @property
    def encoder_init_scale(self) -> float:
        """The encoder starts as the decoder's transpose times this. Under sign descent every entry
        moves by the same step, so a smaller start is a relatively faster encoder: 0.4 was chosen
        for TopK over {0.25, 0.4, 0.577, 1} leaving one model out (stories260K, MiniLM; 9 width/k
        cells each; benchmarks/RESULTS.md, "SAE encoder initial scale"); 1 (Gao et al.'s plain
        transpose) stays for the L1 and JumpReLU kinds, whose penalties and thresholds were set with it."""
        if self.encoder_scale is not None:
            return float(self.encoder_scale)
        return 0.4 if self.kind in ("topk", "batchtopk") else 1.0

    @property
    def data_init_share(self) -> float:
        """Each decoder row starts as the unit mix (1 - q) r + q u of a random direction r and the direction u
        of a training example less b_dec. A dictionary of random directions leaves most features of a wide SAE
        out of every top k from the first steps (MiniLM layer 3, 12,288 features, k = 8: 55% silent over the
        first 65,536 tokens), and in a short run many are never trained; examples put each feature where data
        is (that cell's FVU 0.1857 -> 0.1754). Over q in {0, 0.5, 1}, leaving one model out (stories260K,
        MiniLM; benchmarks/RESULTS.md, "SAE dictionary initialised from data") chose 1 with stories260K held
        out and 0.5 with MiniLM held out; both beat 0 on the held-out model. 0.5 is the default: the best mean
        FVU rank over all 12 cells (pure examples lose most where the dictionary is small against the data's
        spread: MiniLM 3072 features k = 16, 32). 0 (random) stays for the L1 and JumpReLU kinds, whose penalties
        and thresholds were set with it."""
        if self.data_init is not None:
            return float(self.data_init)
        return 0.5 if self.kind in ("topk", "batchtopk") else 0.0

    @property
    def unit_norm(self) -> bool:
        return self.kind != "relu" if self.unit_norm_decoder is None else bool(self.unit_norm_decoder)


def _near(pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
    """The rectangle kernel K((pre - theta) / eps) / eps of the straight-through estimators."""
    return ((pre - theta).abs() < eps / 2).to(pre.dtype) / eps


class _JumpReLU(torch.autograd.Function):
    """pre * H(pre - theta): the exact value forward; backward passes the gradient to pre where
    the unit is on and to theta through a rectangle kernel of width ``bandwidth``."""

    @staticmethod
    def forward(ctx, pre, theta, bandwidth):
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        near = _near(pre, theta, ctx.bandwidth).to(grad.dtype)
        g_theta = -(theta * near * grad).sum(0)
        return grad * (pre > theta), g_theta, None


class _Heaviside(torch.autograd.Function):
    """H(pre - theta) with the same straight-through kernel (for the L0 penalty)."""

    @staticmethod
    def forward(ctx, pre, theta, bandwidth):
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        near = _near(pre, theta, ctx.bandwidth).to(grad.dtype)
        return None, -(near * grad).sum(0), None


def _low_precision(device: torch.device) -> torch.dtype | None:
    """The dtype autocast would give a matrix product here, or None when it is off."""
    kind = device.type
    if hasattr(torch, "get_autocast_dtype"):                       # torch >= 2.4
        return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None
    if kind == "cpu":
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
    return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None


class _SparseDecode(torch.autograd.Function):
    """sum_j vals[b, j] W[idx[b, j]]: embedding_bag forward; the backward through the k indices
    of each row (``gather_dot`` for vals, ``scatter_outer`` for W), because embedding_bag's own
    backward sorts every index and was the slowest step of a TopK SAE on a CPU."""

    @staticmethod
    def forward(ctx, idx, vals, W):
        ctx.save_for_backward(idx, vals, W)
        return F.embedding_bag(idx, W, per_sample_weights=vals, mode="sum")

    @staticmethod
    def backward(ctx, grad):
        idx, vals, W = ctx.saved_tensors
        grad = grad.to(W.dtype).contiguous()
        g_vals = gather_dot(grad, W, idx) if ctx.needs_input_grad[1] else None
        g_W = scatter_outer(idx, vals, grad, W.shape[0]) if ctx.needs_input_grad[2] else None
        return None, g_vals, g_W


def _column_sums(idx: torch.Tensor, g: torch.Tensor, width: int) -> torch.Tensor:
    """(width,): sum of g[b, j] over every (b, j) with idx[b, j] = column: the bias gradient of
    features read through k indices per row."""
    return torch.zeros(width, dtype=g.dtype, device=g.device).index_add_(0, idx.reshape(-1), g.reshape(-1))


# The ranking product's row chunks have at least this many rows: the CPU's matrix product is slow on
# thin pieces (4096 x 384 x 12288 in bf16, one thread: 85-row pieces 144 GFLOP/s, 256-row pieces 176;
# a MiniLM 32x TopK step 550 -> 460 ms, benchmarks/RESULTS.md "SAEs against SAELens and sparsify").
_RANK_ROWS = 256


class _TopKEncode(torch.autograd.Function):
    """idx, vals = the k largest of pre = (xn - b_dec) W + b_enc in every row, vals through a ReLU,
    without ever holding pre whole: it is formed and selected in row chunks, and the backward touches
    only the k selected columns of each row. Under bf16 autocast the product that ranks the features
    runs in bf16 (5x faster than fp32 on a CPU with AVX512-BF16), and the chosen features' values are
    then computed exactly in fp32 (``gather_dot``): bf16 only decides near-ties of the selection,
    and every value and gradient is fp32. The input is centred in fp32 before any cast.

    ``aux_cols``, ``aux_every``: also returns the pre-activations of those columns (aux-k's dead
    features) on rows 0, every, 2 every, ..., read from the same chunks, so aux-k needs no product
    of its own to choose its latents (a third of its cost). They carry no gradient; ``_AuxK``'s
    backward gives the parameters theirs."""

    @staticmethod
    def forward(ctx, xn, W, b_enc, b_dec, k, aux_cols=None, aux_every=1):
        rows, width = len(xn), W.shape[1]
        low = _low_precision(xn.device)
        with torch.autocast(xn.device.type, enabled=False):
            xc = (xn - b_dec).contiguous()
            Wr, br = (W.to(low), b_enc.to(low)) if low is not None else (W, b_enc)   # cast once, not per chunk
            xr = xc.to(Wr.dtype)
            idx = torch.empty(rows, k, dtype=torch.long, device=xn.device)
            vals = torch.empty(rows, k, dtype=xn.dtype, device=xn.device)
            n_aux = 0 if aux_cols is None else len(aux_cols)
            aux_pre = torch.empty(len(range(0, rows, aux_every)) if n_aux else 0, n_aux, dtype=Wr.dtype, device=xn.device)
            for r in row_chunks(rows, width, min_rows=_RANK_ROWS):
                pre = torch.addmm(br, xr[r], Wr)
                v, idx[r] = row_topk(pre, k)
                if low is None:
                    vals[r] = v
                first = -(-r.start // aux_every) * aux_every          # the chunk's first aux row
                if n_aux and first < r.stop:
                    taken = pre[first - r.start::aux_every].index_select(1, aux_cols)
                    aux_pre[first // aux_every:first // aux_every + len(taken)] = taken
            Wt = W.t().contiguous()                                         # (width, d): feature rows
            if low is not None:
                vals = gather_dot(xc, Wt, idx) + b_enc[idx]
        vals.clamp_min_(0)
        ctx.save_for_backward(xc, Wt, idx, vals)
        ctx.mark_non_differentiable(idx, aux_pre)
        return idx, vals, aux_pre

    @staticmethod
    def backward(ctx, _g_idx, g_vals, _g_aux):
        xc, Wt, idx, vals = ctx.saved_tensors
        g = (g_vals.to(xc.dtype) * (vals > 0)).contiguous()
        g_xn = g_W = g_b = g_bdec = None
        if ctx.needs_input_grad[0]:          # sum_j g[b, j] W[:, idx[b, j]]: a sparse read of W's columns
            g_xn = F.embedding_bag(idx, Wt, per_sample_weights=g, mode="sum")
        if ctx.needs_input_grad[1]:
            g_W = scatter_outer(idx, g, xc, Wt.shape[0]).t()
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            g_b = _column_sums(idx, g, Wt.shape[0])
            if ctx.needs_input_grad[3]:      # -sum over rows of d pre / d xc: one product with the summed g
                g_bdec = -(g_b @ Wt)
        return g_xn, g_W, g_b, g_bdec, None, None, None


class _AuxK(torch.autograd.Function):
    """Gao et al.'s L_aux over the dead columns ``cols``: the k largest ReLU pre-activations of
    the dead latents decode the residual, ||s e_hat - e||^2 over the residual's variance, averaged
    over the rows, with s = 1 or (``rescale``) min(1, <e_hat, e> / ||e_hat||^2) per row, constant
    in the gradient. The pre-activations ``pre`` (R, n) = (xn - b_dec) W_enc[:, cols] + b_enc[cols]
    on the R rows of ``xn`` come from the encoder's own pass (``_TopKEncode``'s aux outputs, or the
    dense pre-activations); the gradients of W_enc, b_enc and b_dec through them are given here.

    While k is a large share of the dead (4 k > n) the latents are decoded and differentiated by
    dense products in ``low`` precision (bf16 under autocast), every operand cast once; with many
    more dead than k (MiniLM 32x early on: 3,700 dead, k = 256) through the k chosen per row, in fp32
    with the values the encoder's pass ranked them by (``sparse_decode``'s gathers and scatters), a
    14th of the work. Loss and gradients come back in the parameters' dtype and memory layout (fp32;
    a gradient laid out unlike its parameter made autograd's accumulation 3x slower)."""

    @staticmethod
    def forward(ctx, xn, residual, e_e, pre, W_enc, b_enc, b_dec, W_dec, cols, k, low, rescale):
        sparse = 4 * k <= len(cols)
        dt = xn.dtype if sparse or low is None else low
        with torch.autocast(xn.device.type, enabled=False):
            xl, Wd = (xn - b_dec).to(dt), W_dec[cols].to(dt)                      # (R, d) (n, d)
            if sparse:                      # the top k of each row: indices j, values f (R, k)
                f, j = row_topk(pre, k)
                f = f.to(dt).clamp_min_(0)
                e_hat = F.embedding_bag(j, Wd, per_sample_weights=f, mode="sum")
            else:                           # all dead, or their top k scattered densely
                pre = pre.to(dt)
                if k < len(cols):
                    j = row_topk(pre, k)[1]
                    f = torch.zeros_like(pre).scatter_(1, j, pre.gather(1, j).clamp_min_(0))
                else:
                    f = pre.clamp_min(0)
                e_hat = f @ Wd
            e_hat = e_hat.to(residual.dtype)                                      # (R, d)
            # the loss from three numbers per row, no (R, d) difference formed: ||s e_hat - e||^2 =
            # s^2 ||e_hat||^2 - 2 s <e_hat, e> + ||e||^2 (e_e, the caller's squared error per row); the
            # variance from the same ||e||^2
            eh_e, eh_eh = torch.linalg.vecdot(e_hat, residual), torch.linalg.vecdot(e_hat, e_hat)
            if rescale:    # each row's least-squares scale, held constant: the loss sees e_hat's direction
                s = (eh_e / eh_eh.clamp_min(1e-12)).clamp_(0, 1)
            else:
                s = torch.ones_like(eh_e)
            rows = len(residual)
            mean = residual.mean(0, dtype=torch.float64)
            var = ((e_e.sum(dtype=torch.float64) - rows * mean.square().sum()) / rows).to(residual.dtype).clamp_min(1e-12)
            loss = ((s * s * eh_eh - 2 * s * eh_e + e_e).clamp_min(0).mean() / var)
        ctx.sparse = sparse
        ctx.save_for_backward(xl, f, j if sparse else None, Wd, e_hat, residual, s, cols, var, W_enc, W_dec)
        return loss

    @staticmethod
    def backward(ctx, g):
        xl, f, j, Wd, e_hat, residual, s, cols, var, W_enc, W_dec = ctx.saved_tensors
        n = len(cols)
        with torch.autocast(xl.device.type, enabled=False):
            c = (2 * g / (len(residual) * var)) * s[:, None]                       # d loss / d e_hat = c (s e_hat - e)
            g_e = torch.addcmul(residual * -c, e_hat, c * s[:, None]).to(f.dtype).contiguous()   # (R, d)
            if ctx.sparse:                  # through the k chosen per row only
                g_f = gather_dot(g_e, Wd, j).mul_(f > 0)                          # (R, k)
                g_Wd_cols = scatter_outer(j, f, g_e, n)                          # (n, d)
                g_We_cols = scatter_outer(j, g_f, xl, n).t()                     # (d, n)
                g_b_cols = _column_sums(j, g_f, n)
            else:                           # through the ReLU and the top k, densely
                g_pre = (g_e @ Wd.t()).mul_(f > 0)
                g_Wd_cols, g_We_cols, g_b_cols = f.t() @ g_e, (g_pre.t() @ xl).t(), g_pre.sum(0, dtype=residual.dtype)
            g_We = torch.zeros_like(W_enc, dtype=residual.dtype)                     # W_enc's layout: no strided add
            g_We[:, cols] = g_We_cols.to(residual.dtype)
            g_Wd = torch.zeros_like(W_dec, dtype=residual.dtype)
            g_Wd[cols] = g_Wd_cols.to(residual.dtype)
            g_b = torch.zeros(W_enc.shape[1], dtype=residual.dtype, device=residual.device)
            g_b[cols] = g_b_cols.to(residual.dtype)
            g_bdec = -(W_enc[:, cols].to(g_b.dtype) @ g_b_cols.to(g_b.dtype))    # pre moves against b_dec
        return None, None, None, None, g_We, g_b, g_bdec, g_Wd, None, None, None, None


def sparse_decode(idx: torch.Tensor, vals: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """(B, d) = sum over the k active features of each row: vals (B, k) times W[idx] (B, k, d)."""
    return _SparseDecode.apply(idx, vals.to(W.dtype), W)


def geometric_median(x: torch.Tensor, iterations: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of Euclidean distances to rows of x."""
    m = x.mean(0)
    for _ in range(iterations):
        w = 1.0 / (x - m).norm(dim=1).clamp_min(1e-8)
        new = (w[:, None] * x).sum(0) / w.sum()
        if (new - m).norm() <= tol * (m.norm() + 1e-12):
            return new
        m = new
    return m


@register
class SparseAutoencoder(Model, ContinuousCode, Reconstructs):
    """Sparse autoencoder (relu, topk, batchtopk, jumprelu) over activation vectors."""

    name = "sae"
    warms_up = True
    config_class = SAEConfig

    def __init__(self, config: SAEConfig):
        super().__init__(config)
        d, n = config.d, config.width
        w = torch.randn(n, d)
        w = w / w.norm(dim=1, keepdim=True) * (1.0 if config.unit_norm else 0.1)
        self.W_dec = nn.Parameter(w)                      # (width, d): one row per feature
        self.W_enc = nn.Parameter(w.t() * config.encoder_init_scale)   # (d, width): the decoder's transpose, scaled
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.b_dec = nn.Parameter(torch.zeros(d))
        if config.kind == "jumprelu":
            self.log_theta = nn.Parameter(torch.full((n,), math.log(config.jump_threshold)))
        self.register_buffer("scale", torch.ones(()))      # input normalisation (init_from_data)
        self.register_buffer("threshold", torch.zeros(()))  # batchtopk's evaluation threshold
        self.register_buffer("silent_tokens", torch.zeros(n, dtype=torch.long))  # since last firing
        if config.unit_norm:
            self.W_dec.register_hook(self._orthogonal_gradient)

    def __setstate__(self, state):
        """A copy (``copy.deepcopy``, pickle) gets the decoder's gradient hook again, bound to itself:
        tensor hooks are not copied, and without it the copy's decoder rows would leave the sphere."""
        super().__setstate__(state)
        if self.config.unit_norm and not self.W_dec._backward_hooks:
            self.W_dec.register_hook(self._orthogonal_gradient)

    # ---- set-up ----------------------------------------------------------------------------
    @property
    def code_dim(self) -> int:
        return int(self.config.width)

    def default_preprocessing(self, data) -> str:
        return "none"

    def check_preprocessing(self, preprocessing: str) -> None:
        if preprocessing not in ("none", "scale"):
            raise ConfigError(f"a sparse autoencoder reads real-valued activations as they are: "
                              f"preprocessing must be 'none', not {preprocessing!r}")

    def likelihood_meaning(self, preprocessing):
        from .policies import LikelihoodMeaning

        return LikelihoodMeaning("not a likelihood", 0.0, "a sparse autoencoder has no likelihood")

    def check_data(self, data) -> None:
        if data.is_8bit:
            raise DataError(f"{data.name}: 8-bit data; a sparse autoencoder reads real-valued activations")

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Input scale so that E||x||^2 = d, b_dec at the geometric median (normalised space), and the
        dictionary partly from the examples (``SAEConfig.data_init_share``; rows drawn from torch's RNG)."""
        x = x.reshape(len(x), -1).float()
        if not torch.isfinite(x).all():
            raise DataError("activations contain NaN or infinite values")
        mean_sq = x.pow(2).sum(1).mean()
        if mean_sq <= 0:
            raise DataError("activations are all zero; nothing to learn")
        self.scale.fill_(math.sqrt(self.config.d / float(mean_sq)))
        self.b_dec.copy_(geometric_median(x * self.scale))
        q = self.config.data_init_share
        if q > 0:
            n = self.config.width
            picks = torch.randperm(len(x))[:n]
            if len(picks) < n:                  # fewer examples than features: some drawn twice
                picks = torch.cat([picks, torch.randint(len(x), (n - len(picks),))])
            u = F.normalize(x[picks] * self.scale - self.b_dec, dim=1)
            norms = self.W_dec.norm(dim=1, keepdim=True)
            w = F.normalize((1 - q) * self.W_dec / norms + q * u, dim=1)
            self.W_dec.copy_(w * norms)
            self.W_enc.copy_(self.W_dec.t() * self.config.encoder_init_scale)

    def _orthogonal_gradient(self, grad: torch.Tensor) -> torch.Tensor:
        """Removes each row's gradient component along the (unit) row: steps stay on the sphere
        to first order; the renormalisation after the step corrects the rest."""
        w = self.W_dec.detach()
        return torch.addcmul(grad, torch.linalg.vecdot(grad, w).unsqueeze(1), w, value=-1)

    @torch.no_grad()
    def normalize_decoder(self, *copies: torch.Tensor) -> None:
        """Unit decoder rows, in W_dec and in any ``copies`` of it an optimizer keeps (the
        iterates of a schedule-free method, so that the average it evaluates is on the sphere too)."""
        for w in (self.W_dec, *copies):
            w.div_(w.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def training_callbacks(self) -> list:
        if not self.config.unit_norm:
            return []

        from_model = self

        class _UnitNorm:
            def on_step_end(self, trainer):
                copies = trainer.parameter_copies(from_model.W_dec) if trainer is not None else ()
                from_model.normalize_decoder(*copies)

            def on_eval(self, trainer, metrics):
                pass

            def on_checkpoint(self, trainer, path):
                pass

        return [_UnitNorm()]

    # ---- the map ------------------------------------------------------------------------------
    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return self._encode_normalised(x.reshape(len(x), -1) * self.scale)

    def _encoder_bias(self) -> torch.Tensor:
        """(xn - b_dec) W_enc + b_enc is computed as xn W_enc + (b_enc - b_dec W_enc): the same value,
        but b_dec's gradient then costs one (width x d) product instead of a (B x width x d) one
        (a third of the matrix products of a training step). Always in fp32: under bf16 autocast
        the two large terms would cancel in bf16's 8 bits."""
        with torch.autocast(self.b_dec.device.type, enabled=False):
            return self.b_enc - self.b_dec @ self.W_enc

    def _encode_normalised(self, xn: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self._encoder_bias(), xn, self.W_enc)

    def _codes(self, xn: torch.Tensor, aux_rows: tuple[torch.Tensor, int] | None = None):
        """(f dense or None, top indices or None, top values or None, pre-activations or None, aux's
        pre-activations or None). topk's indices and values come straight from xn, the pre-activations
        never whole. ``aux_rows`` = (cols, every): also the pre-activations of columns ``cols`` on
        rows 0, every, 2 every, ... (detached), from the same pass."""
        cols, every = aux_rows if aux_rows is not None else (None, 1)
        if self.config.kind == "topk":
            idx, vals, aux_pre = _TopKEncode.apply(xn, self.W_enc, self.b_enc, self.b_dec, self.config.k, cols, every)
            return None, idx, vals, None, (aux_pre if aux_rows is not None else None)
        pre = self._encode_normalised(xn)
        aux_pre = pre.detach()[::every].index_select(1, cols) if aux_rows is not None else None
        return (*self._sparse(pre), pre, aux_pre)

    def _sparse(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(f dense (B, width), None, None) from whole pre-activations (topk never forms them: ``_codes``)."""
        c = self.config
        if c.kind == "relu":
            return F.relu(pre), None, None
        if c.kind == "jumprelu":
            return _JumpReLU.apply(pre, self.log_theta.exp(), c.bandwidth), None, None
        assert c.kind == "batchtopk", c.kind
        if self.training:
            act = F.relu(pre)
            keep = min(act.numel(), c.k * len(pre))
            vals, flat = act.flatten().topk(keep, sorted=False)
            f = torch.zeros_like(act).flatten().scatter(0, flat, vals).view_as(act)
            with torch.no_grad():
                positive = vals[vals > 0]
                if len(positive):
                    m = c.threshold_momentum
                    low = positive.min().to(self.threshold.dtype)
                    self.threshold.copy_(low if self.threshold == 0 else m * self.threshold + (1 - m) * low)
            return f, None, None
        act = F.relu(pre)
        return act * (act > self.threshold), None, None

    def encode_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations f (B, width) of inputs x (B, d)."""
        f, idx, vals, _, _ = self._codes(x.reshape(len(x), -1) * self.scale)
        if f is None:
            f = torch.zeros(len(x), self.config.width, dtype=vals.dtype, device=vals.device).scatter_(1, idx, vals)
        return f

    def decode_features(self, f: torch.Tensor, idx=None, vals=None) -> torch.Tensor:
        """x_hat in normalised space from features (dense f, or top indices and values)."""
        if idx is not None and (f is None or idx.shape[1] * 8 <= self.config.width):
            return sparse_decode(idx, vals, self.W_dec) + self.b_dec       # cost ~ k, not width
        return f @ self.W_dec + self.b_dec

    # ---- capabilities ---------------------------------------------------------------------------
    def embed(self, x: torch.Tensor, y=None) -> torch.Tensor:
        return self.encode_features(x)

    def decode_mean(self, z: torch.Tensor, y=None) -> torch.Tensor:
        return ((z @ self.W_dec + self.b_dec) / self.scale).view(len(z), *self.config.input_shape)

    def reconstruct(self, x: torch.Tensor, y=None) -> torch.Tensor:
        f, idx, vals, _, _ = self._codes(x.reshape(len(x), -1) * self.scale)
        return (self.decode_features(f, idx, vals) / self.scale).view_as(x)

    def dead_fraction(self) -> float:
        """Share of features that have not fired for ``dead_tokens`` training tokens."""
        return float((self.silent_tokens >= self.config.dead_tokens).float().mean())

    # ---- the loss ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, y=None, warmup: float = 1.0) -> Losses:
        c = self.config
        xn = x.reshape(len(x), -1) * self.scale
        # dead: silent for dead_tokens tokens before this batch, as in Gao et al.
        aux_rows = self._aux_rows(self.silent_tokens >= c.dead_tokens) if self.training else None
        f, idx, vals, pre, aux_pre = self._codes(xn, aux_rows)
        x_hat = self.decode_features(f, idx, vals)
        err = xn - x_hat
        sse = err.square().sum(1)                                   # (B,); pow(2)'s backward calls pow again
        if f is None:                                               # topk: only the k per row
            on = vals > 0
            l0 = on.sum(1).to(sse.dtype)
            fired = torch.zeros(c.width, dtype=torch.bool, device=x.device).index_fill_(0, idx[on], True)
        else:
            active = f > 0
            l0 = active.sum(1).to(sse.dtype)
            fired = active.any(0)
        if c.kind == "relu":
            sparsity = (f * self.W_dec.norm(dim=1)).sum(1)
        elif c.kind == "jumprelu":
            sparsity = _Heaviside.apply(pre, self.log_theta.exp(), c.bandwidth).sum(1)
        else:
            sparsity = torch.zeros_like(sse)
        # Anthropic's (April 2024) and Rajamanoharan et al.'s objective ||x - x_hat||^2 + lambda * penalty,
        # divided by d so that its scale does not grow with the width of the activations
        penalty = warmup * c.sparsity_weight * sparsity if c.kind in ("relu", "jumprelu") else 0.0
        loss = (sse + penalty).mean() / c.d
        terms = {"mse": sse.detach() / c.d, "l0": l0, "sparsity": sparsity.detach()}
        if self.training:
            if aux_rows is not None:
                aux = self._aux_loss(xn, err.detach(), sse.detach(), aux_rows, aux_pre)
                loss = loss + c.aux_weight * aux
                terms["aux"] = aux.detach().expand(len(x))
            with torch.no_grad():
                self.silent_tokens.add_(len(x)).masked_fill_(fired, 0)
        stats = _fvu_stats(sse, xn)
        return Losses(loss, terms, stats)

    def _aux_rows(self, dead: torch.Tensor) -> tuple[torch.Tensor, int] | None:
        """(the dead columns, every) for aux-k, or None when it is off or nothing is ``dead``; its
        rows are every n-th (``_aux_loss``)."""
        c = self.config
        if not c.aux_k or not bool(dead.any()):
            return None
        cols = dead.nonzero().squeeze(1)
        every = math.ceil(len(cols) / (c.aux_share * c.width)) if c.aux_share and len(cols) > c.aux_share * c.width else 1
        return cols, every

    def _aux_loss(self, xn: torch.Tensor, residual: torch.Tensor, sse: torch.Tensor,
                  aux_rows: tuple[torch.Tensor, int], pre: torch.Tensor) -> torch.Tensor:
        """Gao et al.'s L_aux: the top aux_k dead latents reconstruct the residual, normalised by
        the residual's variance (from ``sse``, its squared length per row), on the rows and dead
        columns ``aux_rows`` names (``_aux_rows``), with their pre-activations ``pre`` from the
        encoder's pass; with no more dead columns than aux_k, all of them take part. Its four products
        over the dead columns cost 4 x dead / width of the encoder's product while they are dense
        (``_AuxK``), more than the rest of a step once many features are dead (MiniLM, 3072
        features, k = 8, 41% dead: 190 of 300 ms at 4096 rows). So
        while more than ``aux_share`` of the features are dead it reads every n-th row only, n =
        ceil(dead / (aux_share x width)): an unbiased estimate of the batch's loss at a capped cost. With
        few dead it reads every row: revival rests on the rare rows where a dead latent comes
        near firing, and reading a quarter of them left 2.1% of stories260K's 2048 features silent
        over 1M tokens instead of 0.2% (benchmarks/RESULTS.md, "SAEs against SAELens and sparsify").

        ``aux_rescale``: where the aux latents' sum e_hat is longer along the residual than the residual
        itself, it is scaled by s = <e_hat, e> / ||e_hat||^2 (held constant) before the loss, so the loss
        asks the dead latents to point at what the live ones leave unexplained, not to shrink together.
        Under sign descent the aux weight does not reach the dead features' parameters (they get no other
        gradient, and signum steps by the sign), and 256 aux latents summing to several times the residual
        drove them below the ReLU gate for good: MiniLM layer 3, 12,288 features, k = 8: 56% silent over
        the training tokens with Gao et al.'s plain form (benchmarks/RESULTS.md, "SAE aux-k")."""
        c = self.config
        cols, every = aux_rows
        return _AuxK.apply(xn[::every], residual[::every], sse[::every], pre, self.W_enc, self.b_enc, self.b_dec,
                           self.W_dec, cols, min(c.aux_k, len(cols)), _low_precision(xn.device), c.aux_rescale)

    def describe(self) -> str:
        c = self.config
        k = f", k={c.k}" if c.kind in ("topk", "batchtopk") else ""
        return f"SAE ({c.kind}{k}), {c.width} features over d={c.d}"


def _fvu_stats(sse: torch.Tensor, xn: torch.Tensor) -> dict[str, Statistic]:
    """FVU = sum of squared errors / sum ||x - mean||^2 over every example seen, with the mean
    over every example too: additive totals (sse, sum x, sum ||x||^2, count) finished once."""
    d, x, f64 = xn.shape[1], xn.detach(), torch.float64
    total = torch.cat([sse.detach().sum(dtype=f64).view(1),       # sums accumulated in fp64, no fp64 copies
                       torch.tensor([float(len(xn))], dtype=f64, device=xn.device),
                       x.square().sum(dtype=f64).view(1),
                       x.sum(0, dtype=f64)])
    return {"fvu": Statistic(total, lambda t: t[0] / (t[2] - t[3:3 + d].pow(2).sum() / t[1]).clamp_min(1e-30))}
