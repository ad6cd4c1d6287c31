"""Distributions over z (encoder) and x (decoder).

Every log-probability is in nats, summed over the event dimensions (all but the
first, batch, dimension) and includes every normalising constant, so likelihoods
are comparable with the literature (Kingma & Welling 2014; Burda et al. 2016).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import ConfigError

LOG_2PI = math.log(2.0 * math.pi)


def _sum_event(t: torch.Tensor, event_dims: int) -> torch.Tensor:
    """Sums the trailing ``event_dims`` dimensions."""
    return t.flatten(start_dim=t.dim() - event_dims).sum(-1) if event_dims else t


class DiagonalGaussian:
    """N(mean, diag(exp(log_var))) over vectors; shapes (..., D).

    Every distribution here has ``.mean`` as a property (as torch.distributions does), a
    ``log_prob`` in nats and a ``sample()`` (``rsample`` for the reparameterisable ones)."""

    def __init__(self, mean: torch.Tensor, log_var: torch.Tensor):
        self.mean = mean
        self.log_var = log_var

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.log_var)

    def rsample(self, num_samples: int | None = None) -> torch.Tensor:
        """Reparameterised sample: mean + std * eps. Shape (S, ..., D) if num_samples."""
        shape = self.mean.shape if num_samples is None else (num_samples, *self.mean.shape)
        eps = torch.randn(shape, dtype=self.mean.dtype, device=self.mean.device)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; mean, var) in nats, summed over D. z broadcasts against mean."""
        sq = (z - self.mean) ** 2 * torch.exp(-self.log_var)
        return -0.5 * (sq + self.log_var + LOG_2PI).sum(-1)

    def kl_standard_normal(self) -> torch.Tensor:
        """KL(q || N(0, I)) in closed form (Kingma & Welling 2014, appendix B); shape (...)."""
        return 0.5 * (self.mean**2 + torch.exp(self.log_var) - 1.0 - self.log_var).sum(-1)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) in nats, summed over the last dimension."""
    return -0.5 * (z**2 + LOG_2PI).sum(-1)


class Bernoulli:
    """Independent Bernoulli over every dimension of x, parameterised by logits.

    ``event_dims`` trailing dimensions form one observation (e.g. 3 for (C, H, W)).
    """

    def __init__(self, logits: torch.Tensor, event_dims: int):
        self.logits = logits
        self.event_dims = event_dims

    @property
    def probs(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = sum x l - softplus(l) over the event (l the logits; x in [0, 1] broadcasts
        over leading sample dimensions). Each term is -BCE with logits, finite for confident
        logits, with no broadcast copy of x (the importance-sampled NLL spends much of its time
        here): softplus with autograd, vectorised passes without."""
        l = self.logits
        if torch.compiler.is_compiling():
            # one fused loop under torch.compile, out of place (the in-place passes below
            # compile to slower code, and softplus's log1p is 1.8x dearer than log(1 + u) here)
            nll = torch.log(1 + torch.exp(-l.abs())) + l.clamp_min(0) - l * x
        elif torch.is_grad_enabled() and l.requires_grad:
            # softplus(l) - x l >= 0 per dimension; in place is safe for autograd (softplus's
            # backward reads its input, not its output)
            nll = F.softplus(l).addcmul_(l, x, value=-1.0)
        else:
            # no gradient (evaluation): softplus(l) = max(l, 0) + log(1 + exp(-|l|)) in passes
            # that are all vectorised here (torch's softplus and log1p are not: 2-4x slower per
            # element). log(1 + u) for u = exp(-|l|) in (0, 1] is off from log1p(u) by under
            # half an ulp of 1 (6e-8 nats) per dimension.
            nll = l.clamp_min(0)
            t = torch.sub(l, nll, alpha=2).exp_().add_(1).log_()     # l - 2 max(l, 0) = -|l|
            nll = t.add_(nll.addcmul_(l, x, value=-1.0))
        return -_sum_event(nll, self.event_dims)

    @property
    def mean(self) -> torch.Tensor:
        return self.probs

    def sample(self) -> torch.Tensor:
        return torch.bernoulli(self.probs)


class Gaussian:
    """Independent Gaussian over every dimension of x with mean and log-variance.

    With a fixed variance c, log p(x|z) = -||x - mu||^2 / (2c) - D/2 log(2 pi c): the
    lectures' weight C = 1/(2c) between squared reconstruction error and the KL.
    """

    def __init__(self, mean: torch.Tensor, log_var: torch.Tensor, event_dims: int):
        self.loc = mean
        self.log_var = log_var
        self.event_dims = event_dims

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        sq = (x - self.loc) ** 2 * torch.exp(-self.log_var)
        ll = -0.5 * (sq + self.log_var + LOG_2PI)
        if ll.shape != self.loc.shape:  # broadcast log_var was smaller than x
            ll = ll.expand(torch.broadcast_shapes(ll.shape, self.loc.shape))
        return _sum_event(ll, self.event_dims)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    def sample(self) -> torch.Tensor:
        return self.loc + torch.exp(0.5 * self.log_var) * torch.randn_like(self.loc)


LIKELIHOODS = ("bernoulli", "gaussian-fixed", "gaussian-learned", "logistic")


class DecoderLikelihood:
    """Turns a decoder's raw output into a distribution over x.

    bernoulli: output = logits, one channel per dimension of x.
    gaussian-fixed: output = mean; variance is the constant ``variance`` (c).
    gaussian-learned: output = mean and log-variance stacked on the channel axis,
    so the decoder has twice the channels of x.
    logistic: a discretized logistic (``mixtures`` = 1: mean and log-scale) or a mixture of
    K (logits, means, log-scales) per subpixel over 8-bit x given as k/255 in [0, 1]
    (:class:`DiscretizedLogistic`); 2 or 3K parameter blocks stacked on the channel axis.
    """

    def __init__(self, name: str, variance: float = 1.0, mixtures: int = 1):
        if name not in LIKELIHOODS:
            raise ConfigError(f"unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOODS)}")
        if not (variance > 0 and math.isfinite(variance)):
            raise ConfigError(f"likelihood variance must be positive and finite, got {variance}")
        if not (isinstance(mixtures, int) and mixtures >= 1):
            raise ConfigError(f"the number of logistic mixture components must be an integer >= 1, got {mixtures!r}")
        self.name = name
        self.variance = variance
        self.mixtures = mixtures

    @property
    def params_per_dim(self) -> int:
        if self.name == "logistic":
            return 2 if self.mixtures == 1 else 3 * self.mixtures
        return 2 if self.name == "gaussian-learned" else 1

    def __call__(self, out: torch.Tensor, event_dims: int):
        if self.name == "logistic":
            return DiscretizedLogistic(out, event_dims, self.mixtures)
        if self.name == "bernoulli":
            return Bernoulli(out, event_dims)
        if self.name == "gaussian-fixed":
            log_var = torch.full((), math.log(self.variance), dtype=out.dtype, device=out.device)
            return Gaussian(out, log_var, event_dims)
        # Split the first event axis: (..., 2C, H, W) or (..., 2D).
        mean, log_var = out.chunk(2, dim=out.dim() - event_dims)
        # Bounded log-variance keeps the density finite on flat regions (all-zero pixels).
        return Gaussian(mean, log_var.clamp(min=-9.0, max=5.0), event_dims)


# ---- 8-bit pixels ----------------------------------------------------------------------------
class Categorical:
    """An independent L-way categorical per position (L = 256 for 8-bit pixels, K for the
    codes of a VQ-VAE): logits (B, L, C, H, W); x integers 0..L-1 of shape (B, C, H, W).
    log_prob sums over C, H, W (nats)."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(self.logits, dim=1)
        return logp.gather(1, x.long().unsqueeze(1)).squeeze(1).flatten(1).sum(1)

    def sample(self) -> torch.Tensor:
        probs = F.softmax(self.logits, dim=1).movedim(1, -1)          # (B, C, H, W, L)
        return torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1).reshape(probs.shape[:-1])

    @property
    def mean(self) -> torch.Tensor:
        levels = torch.arange(self.logits.shape[1], dtype=self.logits.dtype, device=self.logits.device)
        return (F.softmax(self.logits, dim=1) * levels[None, :, None, None, None]).sum(1)


def _log_sigmoid_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(sigmoid(a) - sigmoid(b)) for a > b, exactly and stably:
    sigmoid(a) - sigmoid(b) = (e^a - e^b) / ((1 + e^a)(1 + e^b))."""
    # the clamp keeps log finite (and its gradient defined) when a == b in floating point
    return a + torch.log((-torch.expm1(b - a)).clamp_min(1e-30)) - F.softplus(a) - F.softplus(b)


def _discretized_log_mass(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """log of a logistic's mass on level x's bin of [-1, 1] (v = 2x/255 - 1, bins 2/255 wide;
    the edge levels 0 and 255 take the tails): integer x broadcasting against means/log-scales."""
    v = 2.0 * x.to(means.dtype) / 255.0 - 1.0
    inv_s = torch.exp(-log_scales)
    upper = inv_s * (v - means + 1.0 / 255.0)
    lower = inv_s * (v - means - 1.0 / 255.0)
    xi = x.expand_as(upper)
    low_edge = F.logsigmoid(upper)                      # k = 0: mass below the upper edge
    high_edge = F.logsigmoid(-lower)                    # k = 255: mass above the lower edge
    middle = _log_sigmoid_difference(upper, lower)
    return torch.where(xi == 0, low_edge, torch.where(xi == 255, high_edge, middle))


def _logistic_draw(means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """One draw per element, rounded to the nearest of the 256 levels (int64)."""
    u = torch.rand_like(means).clamp(1e-5, 1 - 1e-5)
    v = means + torch.exp(log_scales) * (torch.log(u) - torch.log1p(-u))
    return torch.round((v.clamp(-1, 1) + 1) * 127.5).long()


class DiscretizedLogisticMixture:
    """Salimans et al. (2017)'s discretized mixture of logistics over 8-bit grey levels.

    params (B, 3K, C, H, W): mixture logits, means and log-scales of K logistics on the
    rescaled axis v = 2 x / 255 - 1 in [-1, 1]. Level k takes the logistic's mass on
    [v - 1/255, v + 1/255]; the edge levels take the whole tail (k = 0 from -inf,
    k = 255 to +inf), so the 256 probabilities sum to exactly 1. Differences of CDFs are
    computed in log space, so no bin's mass is approximated.
    """

    def __init__(self, params: torch.Tensor, num_mixtures: int):
        k = num_mixtures
        if params.shape[1] != 3 * k:
            raise ConfigError(f"a {k}-component logistic mixture needs {3 * k} parameter channels, "
                              f"got {params.shape[1]}")
        self.logit_weights, self.means, log_scales = params.split(k, dim=1)   # each (B, K, C, H, W)
        self.log_scales = log_scales.clamp(min=-7.0)
        self.k = k

    def _component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log P(x | component) for integer x (B, C, H, W): (B, K, C, H, W)."""
        return _discretized_log_mass(x.unsqueeze(1), self.means, self.log_scales)

    def log_prob_per_subpixel(self, x: torch.Tensor) -> torch.Tensor:
        """log P(x) of each subpixel, (B, C, H, W) in nats."""
        log_w = F.log_softmax(self.logit_weights, dim=1)
        return torch.logsumexp(log_w + self._component_log_probs(x), dim=1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_prob_per_subpixel(x).flatten(1).sum(1)

    @property
    def mean(self) -> torch.Tensor:
        """E[clamp(v, -1, 1)] on the [-1, 1] axis, (B, C, H, W): the mixture's mean before
        rounding to a level (within half a level of the discrete mean). For a logistic of
        location m and scale s, E[clamp(v, a, b)] = a + s (softplus((m - a)/s) - softplus((m - b)/s))."""
        s = torch.exp(self.log_scales)
        clamped = -1.0 + s * (F.softplus((self.means + 1.0) / s) - F.softplus((self.means - 1.0) / s))
        return (F.softmax(self.logit_weights, dim=1) * clamped).sum(1)

    def sample(self) -> torch.Tensor:
        b, k = self.means.shape[:2]
        w = F.softmax(self.logit_weights, dim=1).movedim(1, -1)            # (B, C, H, W, K)
        choice = torch.multinomial(w.reshape(-1, k), 1).reshape(w.shape[:-1]).unsqueeze(1)
        return _logistic_draw(self.means.gather(1, choice).squeeze(1), self.log_scales.gather(1, choice).squeeze(1))

class CoupledLogisticMixture:
    """PixelCNN++'s distribution of an RGB pixel (Salimans et al. 2017, section 2.2): a mixture
    of K components shared by the three channels, each a product of discretized logistics whose
    means are coupled in R -> G -> B order through the observed values v = 2x/255 - 1:

        mu_R = m_R,   mu_G = m_G + tanh(a) v_R,   mu_B = m_B + tanh(b) v_R + tanh(c) v_G

    params (B, 10K, H, W): K mixture logits, then means, log-scales and coefficients (a, b, c),
    3K each laid out (K, 3). x integers (B, 3, H, W). The 256^3 colours of a pixel have total
    probability exactly 1 (each channel's 256 levels sum to 1 given the channels before it).
    """

    def __init__(self, params: torch.Tensor, num_mixtures: int):
        k = num_mixtures
        if params.shape[1] != 10 * k:
            raise ConfigError(f"a {k}-component RGB logistic mixture needs {10 * k} parameter channels, "
                              f"got {params.shape[1]}")
        b, _, h, w = params.shape
        self.logit_weights = params[:, :k]                                           # (B, K, H, W)
        means, log_scales, coeffs = params[:, k:].reshape(b, 3, k, 3, h, w).unbind(1)  # (B, K, 3, H, W)
        self.means, self.log_scales, self.coeffs = means, log_scales.clamp(min=-7.0), torch.tanh(coeffs)
        self.k = k

    def _coupled_means(self, x: torch.Tensor) -> torch.Tensor:
        """The channels' means given the pixel's earlier channels, (B, K, 3, H, W)."""
        v = (2.0 * x.to(self.means.dtype) / 255.0 - 1.0).unsqueeze(1)               # (B, 1, 3, H, W)
        m, a = self.means, self.coeffs
        return torch.stack([m[:, :, 0], m[:, :, 1] + a[:, :, 0] * v[:, :, 0],
                            m[:, :, 2] + a[:, :, 1] * v[:, :, 0] + a[:, :, 2] * v[:, :, 1]], 2)

    def log_prob_per_pixel(self, x: torch.Tensor) -> torch.Tensor:
        """log P(R, G, B) of every pixel, (B, H, W) in nats."""
        per_channel = _discretized_log_mass(x.unsqueeze(1), self._coupled_means(x), self.log_scales)
        return torch.logsumexp(F.log_softmax(self.logit_weights, 1) + per_channel.sum(2), dim=1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_prob_per_pixel(x).flatten(1).sum(1)

    def sample(self) -> torch.Tensor:
        """(B, 3, H, W) int64: one component per pixel, then R, G given R, B given R and G, each
        coupled to the drawn (rounded) levels, so draws follow exactly the distribution of log_prob."""
        k = self.k
        w = F.softmax(self.logit_weights, dim=1).movedim(1, -1)                      # (B, H, W, K)
        choice = torch.multinomial(w.reshape(-1, k), 1).reshape(w.shape[:-1])       # (B, H, W)
        pick = choice[:, None, None].expand(-1, 1, 3, -1, -1)

        def chosen(t):
            return t.gather(1, pick).squeeze(1)                                     # (B, 3, H, W)

        m, log_s, a = chosen(self.means), chosen(self.log_scales), chosen(self.coeffs)
        x = torch.zeros_like(m, dtype=torch.long)
        for ch in range(3):
            v = 2.0 * x.to(m.dtype) / 255.0 - 1.0
            mu = m[:, ch] + (a[:, 0] * v[:, 0] if ch == 1 else 0) + (
                a[:, 1] * v[:, 0] + a[:, 2] * v[:, 1] if ch == 2 else 0)
            x[:, ch] = _logistic_draw(mu, log_s[:, ch])
        return x


class DiscretizedLogistic:
    """A VAE decoder's distribution over 8-bit images given as x = k/255 in [0, 1]: per subpixel
    a discretized logistic, or a mixture of K (Salimans et al. 2017, without their coupling of
    the colour channels), evaluated by :class:`DiscretizedLogisticMixture` on the [-1, 1] axis.
    log_prob is the log-probability of the 8-bit values (the 256 levels of a subpixel sum to 1),
    so its NLL in bits/dim is a discrete likelihood, comparable with PixelCNN numbers.

    ``out`` (..., P*C, H, W) (or (..., P*D) for vectors): P = 2 blocks (means, log-scales) for
    K = 1, else 3K (mixture logits, means, log-scales), each block C channels; leading sample
    dimensions are kept, and x broadcasts over them.
    """

    def __init__(self, out: torch.Tensor, event_dims: int, mixtures: int = 1):
        k = mixtures
        p = 2 if k == 1 else 3 * k
        split = out.dim() - event_dims
        self.lead, event = out.shape[:split], out.shape[split:]
        if event[0] % p:
            raise ConfigError(f"a {k}-component discretized logistic needs a multiple of {p} parameter "
                              f"channels, got {event[0]}")
        self.event = (event[0] // p, *event[1:])
        params = out.reshape(-1, p, *self.event)                              # (N, P, C, H, W)
        if k == 1:   # one component: a constant mixture logit
            params = torch.cat([torch.zeros_like(params[:, :1]), params], 1)
        self.mixture = DiscretizedLogisticMixture(params, k)

    @staticmethod
    def levels(x: torch.Tensor) -> torch.Tensor:
        """x = k/255 in [0, 1] -> the integer levels k."""
        return torch.round(x * 255.0).clamp(0, 255).long()

    def log_prob_per_subpixel(self, x: torch.Tensor) -> torch.Tensor:
        """log P(k) of every subpixel, (..., *event) in nats."""
        x = x.expand(*self.lead, *self.event) if tuple(x.shape) != (*self.lead, *self.event) else x
        lp = self.mixture.log_prob_per_subpixel(self.levels(x).reshape(-1, *self.event))
        return lp.reshape(*self.lead, *self.event)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return _sum_event(self.log_prob_per_subpixel(x), len(self.event))

    @property
    def mean(self) -> torch.Tensor:
        """The mixture mean mapped to [0, 1], (..., *event)."""
        return ((self.mixture.mean + 1.0) / 2.0).reshape(*self.lead, *self.event)

    def sample(self) -> torch.Tensor:
        """A draw of the 8-bit values, as k/255, (..., *event)."""
        return (self.mixture.sample().to(self.mixture.means.dtype) / 255.0).reshape(*self.lead, *self.event)
