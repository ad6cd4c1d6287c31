"""A small causal transformer over a grid of K-way tokens, read in raster order: the lectures'
"model as a sequence of tiles" with a Transformer, as a prior over a VQ-VAE's code grids.

    p(codes) = prod_t p(c_t | c_<t),   t over the h * w tiles in raster order

A GPT-style decoder (Radford et al. 2019): token and learned position embeddings, pre-norm
blocks of causal multi-head self-attention and a 4x MLP (GELU), a final LayerNorm and a K-way
softmax. The input at position t is the token before it (a learned start token, or the class's
embedding for a class-conditional model, at t = 0), so the output at t never sees c_t.

Sampling with a KV cache: each step runs the new position only, attending to the keys and
values cached for the earlier ones, h * w steps of one token each; ``cached=False`` runs the
whole prefix every step. Both draw the same random numbers, so one seed gives the same grids.

Shapes: x (B, 1, h, w) integers in [0, K); NLL in nats per grid (exact).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError
from .base import Losses, Model, ModelConfig, check_labelled_data, check_positive_int, checked_labels, register
from .capabilities import ExactLikelihood, SamplesFromPrior


@dataclass(frozen=True)
class TileTransformerConfig(ModelConfig):
    input_shape: tuple[int, ...] = (1, 8, 8)   # a grid of tokens (1, h, w): h * w positions
    head: str = "categorical"                  # a K-way softmax per tile (the only head)
    levels: int = 256                          # K, the tokens' values
    width: int = 128                           # d_model
    layers: int = 4
    heads: int = 4                             # attention heads (width divisible by heads)
    dropout: float = 0.0
    num_classes: int = 0                       # > 0: the class's embedding is the start token (p(x|y))

    def __post_init__(self):
        if len(self.input_shape) != 3 or int(self.input_shape[0]) != 1 or any(int(s) < 1 for s in self.input_shape):
            raise ConfigError(f"a tile transformer reads grids of tokens (1, h, w), got {self.input_shape}")
        if self.head != "categorical":
            raise ConfigError(f"a tile transformer has a categorical head over its tokens, got {self.head!r}")
        if not 2 <= self.levels <= 256:
            raise ConfigError(f"levels must lie in [2, 256], got {self.levels}")
        for name in ("width", "layers", "heads"):
            check_positive_int(name, getattr(self, name))
        if self.width % self.heads:
            raise ConfigError(f"width ({self.width}) must be divisible by heads ({self.heads})")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ConfigError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        check_positive_int("num_classes", self.num_classes, minimum=0)

    @property
    def likelihood(self) -> str:
        return "categorical"

    @property
    def positions(self) -> int:
        return int(self.input_shape[1]) * int(self.input_shape[2])


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t attends to positions <= t; (B, T, D) -> same."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, d = t.shape
        return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)          # (B, H, T, d/H)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        """``cache`` (sampling): {"capacity": T}, then buffers of T keys and values written in place
        as positions arrive (no copy of the past each step)."""
        q, k, v = (self._split(t) for t in self.qkv(x).chunk(3, dim=-1))
        if cache is not None:
            if "k" not in cache:
                shape = (k.shape[0], k.shape[1], cache["capacity"], k.shape[3])
                cache["k"], cache["v"], cache["n"] = k.new_empty(shape), v.new_empty(shape), 0
            n0, n1 = cache["n"], cache["n"] + k.shape[2]
            cache["k"][:, :, n0:n1], cache["v"][:, :, n0:n1], cache["n"] = k, v, n1
            k, v = cache["k"][:, :, :n1], cache["v"][:, :, :n1]
        t_new, t_all = q.shape[2], k.shape[2]
        # the whole sequence is causal and one new position sees every key; a block of new positions after
        # cached ones needs the offset mask: query i (absolute t_all - t_new + i) sees keys up to its own position
        mask = (torch.ones(t_new, t_all, dtype=torch.bool, device=x.device).tril(t_all - t_new)
                if 1 < t_new < t_all else None)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.drop.p if self.training else 0.0,
                                             is_causal=1 < t_new == t_all)
        out = out.transpose(1, 2).reshape(x.shape)
        return self.drop(self.proj(out))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache)
        return x + self.mlp(self.ln2(x))


@register
class TileTransformer(Model, ExactLikelihood, SamplesFromPrior):
    """Causal transformer over grids of K-way tokens (a prior over VQ-VAE code grids), KV-cached sampling."""

    name = "tile-transformer"
    config_class = TileTransformerConfig
    integer_inputs = True

    def __init__(self, config: TileTransformerConfig):
        super().__init__(config)
        c = config
        self.token = nn.Embedding(c.levels, c.width)
        self.position = nn.Parameter(torch.randn(c.positions, c.width) * 0.02)
        self.start = nn.Embedding(max(c.num_classes, 1), c.width)                 # one start token, or one a class
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList([Block(c.width, c.heads, c.dropout) for _ in range(c.layers)])
        self.ln = nn.LayerNorm(c.width)
        self.out = nn.Linear(c.width, c.levels)

    def describe(self) -> str:
        c = self.config
        cond = f", {c.num_classes} classes" if c.num_classes else ""
        return (f"causal transformer over {c.input_shape[1]}x{c.input_shape[2]} tiles, {c.layers} layers x "
                f"{c.width} wide, {c.heads} heads{cond}")

    @property
    def mutation_levels(self) -> tuple[int, float]:
        return self.config.levels, float(self.config.levels - 1)

    def check_data(self, data) -> None:
        c = self.config
        if not data.is_8bit:
            raise DataError(f"{data.name}: a tile transformer reads integer tokens (8-bit), got floats")
        top = int(data.sampled_range()[1])
        if top >= c.levels:
            raise DataError(f"{data.name}: tokens up to {top} but the transformer has {c.levels} levels (--levels)")
        if c.num_classes:
            check_labelled_data(data, c.num_classes, "a class-conditional transformer")

    def _start(self, y, n: int) -> torch.Tensor:
        """The start token's embedding, (n, 1, width)."""
        device = self.position.device
        if self.num_classes:
            idx = checked_labels(y, n, self.num_classes, device, self.describe())
        else:
            idx = torch.zeros(n, dtype=torch.long, device=device)
        return self.start(idx)[:, None]

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Grids (B, 1, h, w) -> token sequences (B, h*w), checked."""
        want = tuple(self.config.input_shape)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise DataError(f"code grids must be (B, {', '.join(map(str, want))}) for this transformer, "
                            f"got shape {tuple(x.shape)}")
        return x.reshape(len(x), -1).long()

    def logits(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """p(c_t | c_<t) for every position at once (teacher forcing): (B, h*w, K) logits."""
        tokens = self._tokens(x)
        n = tokens.shape[1]
        h = torch.cat([self._start(y, len(x)), self.token(tokens[:, :-1])], 1) + self.position[:n]
        h = self.drop(h)
        for blk in self.blocks:
            h = blk(h)
        return self.out(self.ln(h))

    def log_prob(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """Exact log p(grid) (log p(grid|y) if conditional) in nats, (B,)."""
        logp = F.log_softmax(self.logits(x, y), -1)
        return logp.gather(-1, self._tokens(x)[..., None]).squeeze(-1).sum(1)

    def forward(self, x, y=None, warmup: float = 1.0) -> Losses:
        nll = -self.log_prob(self.training_input(x), y)
        return Losses(nll.mean(), {"nll": nll.detach()})

    def _step(self, token_in: torch.Tensor, t: int, caches: list[dict]) -> torch.Tensor:
        """The logits at position t from its input embedding (n, 1, width), extending the caches."""
        h = self.drop(token_in + self.position[t:t + 1])
        for blk, cache in zip(self.blocks, caches):
            h = blk(h, cache)
        return self.out(self.ln(h))[:, -1]

    @torch.no_grad()
    def sample(self, n: int, y=None, cached: bool = True) -> torch.Tensor:
        """n grids (n, 1, h, w) drawn tile by tile in raster order (one seed, same grids cached or not)."""
        if n < 1:
            raise ConfigError(f"the number of samples must be >= 1, got {n}")
        c = self.config
        inputs = self._start(y, n)                                               # (n, 1, width)
        tokens = torch.zeros(n, c.positions, dtype=torch.long, device=self.position.device)
        caches: list[dict] = [{"capacity": c.positions} for _ in self.blocks]
        for t in range(c.positions):
            if cached:
                logits = self._step(inputs, t, caches)
            else:
                h = self.drop(inputs + self.position[:t + 1])
                for blk in self.blocks:
                    h = blk(h)
                logits = self.out(self.ln(h))[:, -1]
            tokens[:, t] = torch.multinomial(F.softmax(logits, -1), 1)[:, 0]
            new = self.token(tokens[:, t:t + 1])
            inputs = new if cached else torch.cat([inputs, new], 1)
        return tokens.reshape(n, *c.input_shape)
