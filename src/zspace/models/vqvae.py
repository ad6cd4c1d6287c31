"""VQ-VAE (van den Oord et al. 2017, "Neural discrete representation learning").

    z_e = encoder(x)                     (B, D, h, w): a grid of D-dim vectors ("tiles")
    k   = argmin_j ||z_e - e_j||         the nearest of K codebook vectors, per tile
    z_q = e_k                            decoded: x_hat = decoder(z_q)
    loss = reconstruction + beta ||z_e - sg(z_q)||^2 (+ ||sg(z_e) - z_q||^2 without EMA)

The encoder gets the decoder's gradient through the straight-through estimator
(z_e + sg(z_q - z_e)). The codebook follows exponential moving averages of the vectors
assigned to each code (appendix A.1), the codes start on encoder outputs of the first training batch, and a
code that has gone unused (EMA count of assignments per step below ``restart_threshold``)
is restarted on a random encoder output of the current batch (restarts belong to the EMA
codebook; with ``ema=False`` the codebook is learned by gradient and never restarted).
Codebook usage is reported as the perplexity exp(H(code frequencies)).

Two architectures: ``conv`` (strided 4x4 convolutions, the grey 28x28 default) and
``resnet``, the residual trunk of ``nn.resnet`` (``blocks`` per stage, GroupNorm) for colour
images: 64x64 faces with three stages give an 8x8 code grid, with two a 16x16 one.

An autoregressive prior over the code grids ("a sequence of tiles": a PixelCNN or a causal
transformer) is trained separately; its samples decode to images through ``decode_codes``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError
from ..nn import NORMS
from ..nn.mlp import activation
from ..nn.resnet import check_resnet_shape
from .base import Losses, Model, ModelConfig, Statistic, check_positive, check_positive_int, register
from .capabilities import DiscreteCodes, Reconstructs
from .networks import build_spatial_decoder, build_spatial_encoder


def perplexity_of_counts(counts: torch.Tensor) -> torch.Tensor:
    """exp(H) of the code frequencies given assignment counts (K,): how many codes are used."""
    p = counts / counts.sum()
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


class VectorQuantizer(nn.Module):
    """Nearest-code quantisation of (B, D, h, w) grids with an EMA codebook."""

    def __init__(self, num_codes: int, dim: int, commitment: float = 0.25, ema: bool = True,
                 decay: float = 0.99, restart_threshold: float = 0.1, eps: float = 1e-5):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"EMA decay must lie in (0, 1), got {decay}")
        self.num_codes, self.dim, self.commitment = num_codes, dim, commitment
        self.ema, self.decay, self.restart_threshold, self.eps = ema, decay, restart_threshold, eps
        init = torch.randn(num_codes, dim) / math.sqrt(dim)
        if ema:
            self.register_buffer("codebook", init.clone())
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        # the first training batch places the codes on encoder outputs (no collapse onto one code)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of (N, D)."""
        d = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.T + self.codebook.pow(2).sum(1)[None])
        return d.argmin(1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, h, w) -> vectors (B, D, h, w)."""
        return self.codebook[codes].permute(0, 3, 1, 2)

    def forward(self, z_e: torch.Tensor):
        """-> (z_q with straight-through gradient, codes (B, h, w), loss (B,), perplexity)."""
        b, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        if self.training and not bool(self.initialized):
            self._init_from(flat.detach())
        codes = self.nearest(flat)
        z_q = self.lookup(codes.reshape(b, h, w))
        per_tile = ((z_e - z_q.detach()) ** 2).sum(1)                      # (B, h, w)
        loss = self.commitment * per_tile.flatten(1).sum(1)
        if not self.ema:
            loss = loss + ((z_e.detach() - z_q) ** 2).sum(1).flatten(1).sum(1)
        elif self.training:
            self._ema_update(flat.detach(), codes)
        perplexity = perplexity_of_counts(torch.bincount(codes, minlength=self.num_codes).float())
        z_st = z_e + (z_q - z_e).detach()                                   # straight-through
        return z_st, codes.reshape(b, h, w), loss, perplexity

    @torch.no_grad()
    def _init_from(self, flat: torch.Tensor) -> None:
        pick = torch.randint(0, len(flat), (self.num_codes,), device=flat.device)
        start = _from_rank0(flat[pick].contiguous())      # every data-parallel replica alike
        self.codebook.data.copy_(start)
        if self.ema:
            self.ema_sum.copy_(start)
            self.ema_count.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        onehot = F.one_hot(codes, self.num_codes).type(flat.dtype)         # (N, K)
        counts, sums = _summed_over_ranks(onehot.sum(0), onehot.T @ flat)  # the global batch's
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (n + self.num_codes * self.eps) * n   # Laplace smoothing
        self.codebook.copy_(self.ema_sum / smoothed[:, None])
        dead = self.ema_count < self.restart_threshold
        if dead.any():                       # restart unused codes on random encoder outputs
            pick = torch.randint(0, len(flat), (int(dead.sum()),), device=flat.device)
            fresh = _from_rank0(flat[pick].contiguous())
            self.codebook[dead] = fresh
            self.ema_sum[dead] = fresh
            self.ema_count[dead] = 1.0


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _summed_over_ranks(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Under data parallelism the EMA codebook sees the whole global batch: per-code counts and
    sums are all-reduced (one collective), so every replica keeps the same codebook and it equals
    one process's at the same global batch. A no-op in one process."""
    if not _distributed():
        return tensors
    import torch.distributed as dist

    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    out, at = [], 0
    for t in tensors:
        out.append(flat[at:at + t.numel()].view_as(t))
        at += t.numel()
    return tuple(out)


def _from_rank0(t: torch.Tensor) -> torch.Tensor:
    """Rank 0's draw on every rank (codebook initialisation and dead-code restarts)."""
    if _distributed():
        import torch.distributed as dist

        dist.broadcast(t, src=0)
    return t


VQ_ARCHITECTURES = ("conv", "resnet")


@dataclass(frozen=True)
class VQVAEConfig(ModelConfig):
    input_shape: tuple[int, ...] = (1, 28, 28)
    architecture: str = "conv"              # "conv" (strided convolutions) or "resnet" (residual, for colour)
    channels: tuple[int, ...] = (32, 64)    # conv stages, each halving the resolution (28 -> 7)
    blocks: int = 1                         # resnet: residual blocks per stage
    norm: str = "group"                     # resnet: "group", "batch" or "none"
    embedding_dim: int = 32                 # D
    num_codes: int = 128                    # K (<= 256 so code grids store as 8-bit for the prior)
    commitment: float = 0.25                # beta
    ema: bool = True
    ema_decay: float = 0.99
    restart_threshold: float = 0.1          # EMA count (assignments per step) under which a code restarts
    activation: str = "relu"

    def __post_init__(self):
        if len(self.input_shape) != 3:
            raise ConfigError(f"VQ-VAE needs image inputs (C, H, W), got {self.input_shape}")
        if self.architecture not in VQ_ARCHITECTURES:
            raise ConfigError(f"unknown VQ-VAE architecture {self.architecture!r}; choose conv or resnet")
        if not self.channels or any(int(c) < 1 for c in self.channels):
            raise ConfigError("channels must be one or more positive widths")
        check_resnet_shape(self.input_shape, len(self.channels))     # H, W divisible by 2^stages
        if not isinstance(self.blocks, int) or isinstance(self.blocks, bool) or self.blocks < 0:
            raise ConfigError(f"blocks (residual blocks per stage) must be an integer >= 0, got {self.blocks!r}")
        if self.norm not in NORMS:
            raise ConfigError(f"unknown norm {self.norm!r}; choose one of {', '.join(NORMS)}")
        check_positive_int("embedding_dim", self.embedding_dim)
        check_positive_int("num_codes", self.num_codes, minimum=2)
        if self.num_codes > 256:
            raise ConfigError(f"num_codes must be <= 256 (code grids are stored as 8-bit), got {self.num_codes}")
        check_positive("commitment", self.commitment)
        activation(self.activation)


@register
class VQVAE(Model, Reconstructs, DiscreteCodes):
    """VQ-VAE with an EMA codebook and dead-code restarts (van den Oord et al. 2017)."""

    name = "vqvae"
    config_class = VQVAEConfig

    def __init__(self, config: VQVAEConfig):
        super().__init__(config)
        c = config
        if c.architecture == "resnet":
            self.encoder = build_spatial_encoder(c, c.embedding_dim)
            self.decoder = build_spatial_decoder(c, c.embedding_dim)
        else:
            self.encoder, self.decoder = _strided_networks(c)
        self.quantizer = VectorQuantizer(c.num_codes, c.embedding_dim, c.commitment, c.ema, c.ema_decay,
                                         c.restart_threshold)

    @staticmethod
    def grid_of(config: VQVAEConfig) -> tuple[int, int]:
        """(h, w) of the code grid: H and W halved once per stage."""
        return check_resnet_shape(config.input_shape, len(config.channels))

    @property
    def code_shape(self) -> tuple[int, int]:
        return self.grid_of(self.config)

    def describe(self) -> str:
        c = self.config
        h, w = self.code_shape
        n = len(c.channels)
        arch = f", resnet {n} stage{'s' * (n > 1)}" if c.architecture == "resnet" else ""
        return f"VQ-VAE{arch}, {h}x{w} codes from K={c.num_codes} (D={c.embedding_dim}){', EMA' if c.ema else ''}"

    @property
    def num_codes(self) -> int:
        return self.config.num_codes

    def forward(self, x, y=None, warmup: float = 1.0) -> Losses:
        z_q, codes, vq_loss, perplexity = self.quantizer(self.encoder(x))
        x_hat = torch.sigmoid(self.decoder(z_q))
        mse = ((x_hat - x) ** 2).flatten(1).mean(1)
        loss = (mse + vq_loss / x[0].numel()).mean()       # the VQ terms per input dimension, like the MSE
        counts = torch.bincount(codes.flatten(), minlength=self.config.num_codes).double()
        # "perplexity" in terms is this batch's (kept for term-only readers); stats sum the counts
        return Losses(loss, {"mse": mse.detach(), "vq": vq_loss.detach(),
                             "perplexity": perplexity.detach().expand(len(x))},
                      {"perplexity": Statistic(counts, perplexity_of_counts)})

    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> code grids (B, h, w) of integers in [0, K)."""
        flat = self.encoder(x)
        b, d, h, w = flat.shape
        return self.quantizer.nearest(flat.permute(0, 2, 3, 1).reshape(-1, d)).reshape(b, h, w)

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Code grids (B, h, w) -> images in [0, 1]."""
        if codes.dim() != 3 or tuple(codes.shape[1:]) != self.code_shape:
            raise DataError(f"code grids must be (B, {self.code_shape[0]}, {self.code_shape[1]}) for this VQ-VAE, "
                            f"got shape {tuple(codes.shape)}")
        return torch.sigmoid(self.decoder(self.quantizer.lookup(codes.long())))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y=None) -> torch.Tensor:
        return self.decode_codes(self.encode_codes(x))


def _strided_networks(c: VQVAEConfig) -> tuple[nn.Module, nn.Module]:
    """The conv architecture: 4x4 stride-2 convolutions down, transposed ones up."""
    chans = [c.input_shape[0], *c.channels]
    enc: list[nn.Module] = []
    for a, b in zip(chans[:-1], chans[1:]):
        enc += [nn.Conv2d(a, b, 4, stride=2, padding=1), activation(c.activation)]
    enc += [nn.Conv2d(chans[-1], c.embedding_dim, 1)]
    dec: list[nn.Module] = [nn.Conv2d(c.embedding_dim, chans[-1], 3, padding=1), activation(c.activation)]
    rev = chans[::-1]
    for i, (a, b) in enumerate(zip(rev[:-1], rev[1:])):
        dec.append(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1))
        if i < len(rev) - 2:
            dec.append(activation(c.activation))
    return nn.Sequential(*enc), nn.Sequential(*dec)
