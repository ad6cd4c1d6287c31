"""Likelihood evaluation: test ELBO, importance-sampled NLL and bits/dim.

The importance-sampled estimate (Burda et al. 2016, eq. 8 with the encoder as proposal)

    log p(x) ~= log 1/k sum_i p(x, z_i) / q(z_i|x),   z_i ~ q(z|x)

is a stochastic lower bound on log p(x) that rises with k; the NLL reported is its
negative, in nats per example. Samples are drawn in chunks with a running
log-sum-exp, so memory stays bounded for any k (k = 5000 included).

A large estimate (k x batch x output values >= COMPILE_MIN_ELEMENTS, e.g. k = 5000) runs each
chunk through ``torch.compile``: the decoder's bias and activation passes, the likelihood's
log-density, its sum and the log-sum-exp become a few fused loops instead of a dozen passes
over memory (about 2x per chunk, timed alone, for the 784-200-200-50 VAE on this 2-core CPU;
1.2-1.3x over a whole k = 5000 estimate; the products are unchanged). The draws are made outside the compiled code, so both paths see the same normals
and agree to float rounding. Where compilation is unavailable (no C++ compiler, an
unsupported backend) the estimate falls back to the eager path once, with a warning.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

from ..data.loader import Batch
from ..errors import ConfigError
from ..models.losses import mean_loss_terms  # noqa: F401  (re-exported: the trainer imports it here)
from ..models.policies import LikelihoodMeaning, likelihood_meaning  # noqa: F401  (re-exported)

LN2 = math.log(2.0)


def bits_per_dim(nll_nats, num_dims: int, offset_nats_per_dim: float = 0.0):
    """NLL in nats per example -> bits per dimension.

    ``offset_nats_per_dim`` = log(256) turns a density on [0, 1)^D data dequantized from
    8 bits (x = (pixel + u) / 256) into bits per 8-bit subpixel.
    """
    if num_dims < 1:
        raise ConfigError(f"num_dims must be positive, got {num_dims}")
    return (nll_nats / num_dims + offset_nats_per_dim) / LN2


COMPILE_MIN_ELEMENTS = 1 << 27   # decoder output values in one call (k = 5000 on 100 MNIST images: 3.9e8)
_compile_state = {"fn": None, "failed": None}


def _chunk_log_sum(model, x, q, eps, y):
    """log sum_i w_i over one chunk of draws, (B,) in float64."""
    return torch.logsumexp(model.log_importance_weights(x, q, eps.shape[0], y, eps=eps).double(), dim=0)


def _compiled_chunk_log_sum():
    """The compiled chunk (one per process; torch.compile recompiles per model structure and shape),
    or None where compiling failed before."""
    if _compile_state["failed"] is not None:
        return None
    if _compile_state["fn"] is None:
        _compile_state["fn"] = torch.compile(_chunk_log_sum, dynamic=False)
    return _compile_state["fn"]


def _run_chunk(step, model, x, q, eps, y):
    if step is _chunk_log_sum or _compile_state["failed"] is not None:   # eager, or compiling failed already
        return _chunk_log_sum(model, x, q, eps, y)
    try:
        return step(model, x, q, eps, y)
    except Exception as e:   # noqa: BLE001  (any compiler failure: the eager path below re-raises real errors)
        _compile_state["failed"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        warnings.warn(f"torch.compile unavailable for the likelihood estimator ({_compile_state['failed'][:200]}); "
                      "using the eager path", RuntimeWarning, stacklevel=3)
        return _chunk_log_sum(model, x, q, eps, y)


@torch.no_grad()
def importance_sampled_log_likelihood(model, x: torch.Tensor, num_samples: int,
                                      max_elements: int = 1 << 20, y=None, eps: torch.Tensor | None = None,
                                      posterior=None, compile: bool | None = None) -> torch.Tensor:
    """log p(x) estimate per example, (B,), with ``num_samples`` importance samples
    (log p(x|y) for a conditional model, given the labels ``y``).

    Samples go through the decoder in chunks of at most ``max_elements`` output values. The
    default is 4 MB of fp32 logits a chunk: 2^24 took 1.7x as long for the 784-200-200-50 VAE
    (its 64 MB temporaries were mmapped and page-faulted afresh every chunk), and 2^18 pays
    more in per-op overhead than it saves.
    ``eps`` (num_samples, B, latent_dim): the standard-normal draws behind the samples
    z = mean + std * eps, where the caller fixes them (default: the global RNG, one chunk's
    draws at a time); ``posterior``: q(z|x) if already computed; ``compile``: run the chunks
    through torch.compile (None: when the call is large enough to repay the compilation,
    num_samples x B x output values >= COMPILE_MIN_ELEMENTS).
    """
    if num_samples < 1:
        raise ConfigError(f"number of importance samples must be >= 1, got {num_samples}")
    q = posterior if posterior is not None else model.encode(x, y)
    if eps is not None and tuple(eps.shape) != (num_samples, *q.mean.shape):
        raise ConfigError(f"eps must have shape {(num_samples, *q.mean.shape)}, got {tuple(eps.shape)}")
    per_sample = x.shape[0] * model.num_dims * model.likelihood.params_per_dim
    chunk = max(1, min(num_samples, max_elements // max(per_sample, 1)))
    if compile is None:
        compile = num_samples * per_sample >= COMPILE_MIN_ELEMENTS
    step = (_compiled_chunk_log_sum() if compile else None) or _chunk_log_sum
    total = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
    done = 0
    while done < num_samples:
        k = min(chunk, num_samples - done)
        part = (torch.randn((k, *q.mean.shape), dtype=q.mean.dtype, device=q.mean.device) if eps is None
                else eps[done:done + k].to(q.mean))
        total = torch.logaddexp(total, _run_chunk(step, model, x, q, part, y))
        done += k
    return total - math.log(num_samples)


@dataclass
class LikelihoodReport:
    nll: float                 # nats per example, importance-sampled
    nll_std_err: float         # standard error of the mean over examples
    elbo: float                # nats per example (one sample per example)
    rec: float                 # E_q log p(x|z)
    kl: float
    bits_per_dim: float
    num_samples: int
    num_examples: int
    num_dims: int
    seconds: float

    def as_dict(self) -> dict:
        return self.__dict__.copy()


@torch.no_grad()
def evaluate_likelihood(model, batches: Iterable[Batch], num_samples: int = 1000,
                        device="cpu", offset_nats_per_dim: float = 0.0,
                        progress=None) -> LikelihoodReport:
    """Test ELBO (split into reconstruction and KL) and importance-sampled NLL."""
    import time

    start = time.perf_counter()
    was_training = model.training
    model.eval()
    lls, recs, kls = [], [], []
    try:
        for b in batches:
            b = b.to(device)
            x, y = b.x, b.y
            rec, kl = model.elbo_terms(x, y)
            recs.append(rec.double().cpu())
            kls.append(kl.double().cpu())
            lls.append(importance_sampled_log_likelihood(model, x, num_samples, y=y).cpu())
            if progress is not None:
                progress(len(b))
    finally:
        model.train(was_training)
    return _report(model, -torch.cat(lls), torch.cat(recs), torch.cat(kls), num_samples,
                   offset_nats_per_dim, time.perf_counter() - start)


def _report(model, nll: torch.Tensor, rec: torch.Tensor, kl: torch.Tensor, num_samples: int,
            offset_nats_per_dim: float, seconds: float) -> LikelihoodReport:
    """Per-example NLL, reconstruction and KL (nats, (N,)) summarised."""
    mean = float(nll.mean())
    return LikelihoodReport(
        nll=mean, nll_std_err=float(nll.std() / math.sqrt(len(nll))) if len(nll) > 1 else float("nan"),
        elbo=float((rec - kl).mean()), rec=float(rec.mean()), kl=float(kl.mean()),
        bits_per_dim=float(bits_per_dim(mean, model.num_dims, offset_nats_per_dim)),
        num_samples=num_samples, num_examples=len(nll), num_dims=model.num_dims, seconds=seconds)


@torch.no_grad()
def evaluate_exact_likelihood(model, batches: Iterable[Batch], device="cpu", offset_nats_per_dim: float = 0.0,
                              progress=None) -> LikelihoodReport:
    """Exact NLL of an autoregressive model (``model.log_prob``), nats per example."""
    import time

    start = time.perf_counter()
    was_training = model.training
    model.eval()
    lls = []
    try:
        for b in batches:
            b = b.to(device)
            lls.append(model.log_prob(b.x, b.y).double().cpu())
            if progress is not None:
                progress(len(b))
    finally:
        model.train(was_training)
    nll = -torch.cat(lls)
    # no latent variable: the "ELBO" is the exact log-likelihood, with no KL
    return _report(model, nll, -nll, torch.zeros_like(nll), 0, offset_nats_per_dim, time.perf_counter() - start)


@torch.no_grad()
def reconstruction_error(model, batches: Iterable[Batch], device="cpu") -> float:
    """Mean squared error per dimension between x and the model's reconstruction."""
    model.eval()
    sse, n = 0.0, 0
    for b in batches:
        b = b.to(device)
        x = b.x.float()
        sse += float(((model.reconstruct(x, b.y) - x) ** 2).double().sum())
        n += x.numel()
    return sse / max(n, 1)


def collect(model, batches: Iterable[Batch], fn, device="cpu") -> np.ndarray:
    """Applies ``fn(model, x, y)`` to every batch (y: labels or None) and stacks the results
    as a NumPy array."""
    model.eval()
    out = []
    with torch.no_grad():
        for b in batches:
            b = b.to(device)
            out.append(fn(model, b.x, b.y).cpu().numpy())
    return np.concatenate(out)
