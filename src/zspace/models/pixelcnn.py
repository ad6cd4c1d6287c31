"""PixelCNN (van den Oord et al. 2016, "Pixel recurrent neural networks", section 3.5):
an exact likelihood p(x) = prod_t p(x_t | x_<t) over pixels in raster order.

Masked convolutions keep the order: mask A (first layer) hides the current pixel and
everything after it, mask B (later layers) hides only what comes after. Residual blocks
as in the paper (1x1 down, masked 3x3, 1x1 up). Three heads:

    bernoulli          binary pixels (statically or dynamically binarized data)
    categorical        a 256-way softmax per 8-bit grey level
    logistic-mixture   Salimans et al. (2017)'s discretized mixture of logistics

Colour (3 channels), two ways:

    categorical        subpixels in R -> G -> B order (van den Oord et al. 2016, section 3.4):
                       every layer's feature maps fall into three groups; at the current pixel
                       mask A lets group g see only the input channels before g, mask B groups
                       up to g, so the 256-way softmax of G sees R, and B sees R and G
    logistic-mixture   PixelCNN++'s coupled mixture (Salimans et al. 2017): the network sees
                       only earlier pixels (whole-pixel masks), the mixture couples the channels

NLL in nats per image (exact, no bound); bits/dim via zspace.evaluation.bits_per_dim.

Shapes: x (B, C, H, W), C = 1 or 3: floats in {0, 1} for bernoulli, int64 0..255 otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.progress import Progress
from ..data.corruptions import check_fraction
from ..distributions import Bernoulli, Categorical, CoupledLogisticMixture, DiscretizedLogisticMixture
from ..errors import ConfigError, DataError
from .base import Losses, Model, ModelConfig, check_labelled_data, check_positive_int, checked_labels, register
from .capabilities import ExactLikelihood, SamplesFromPrior

HEADS = ("bernoulli", "categorical", "logistic-mixture")


def colour_group(index: torch.Tensor, n: int, colours: int) -> torch.Tensor:
    """The colour (0 = R, 1 = G, 2 = B) of feature channels ``index`` out of n: contiguous thirds
    (as even as n allows)."""
    return index * colours // n


def colour_mask(out_channels: int, in_channels: int, colours: int, mask: str) -> torch.Tensor:
    """(out, in) 0/1 connections at the current pixel: output group g sees input groups < g
    (mask "A") or <= g ("B")."""
    go = colour_group(torch.arange(out_channels), out_channels, colours)[:, None]
    gi = colour_group(torch.arange(in_channels), in_channels, colours)[None, :]
    return (go > gi if mask == "A" else go >= gi).float()


def raster_mask(kh: int, kw: int, mask: str) -> torch.Tensor:
    """(kh, kw) 0/1 mask of a kernel centred on the current pixel: "A" keeps what comes
    strictly before it in raster order, "B" also the pixel itself; "V" (vertical stack,
    first layer) keeps only the rows above, "V+" also the centre row (later layers: their
    input already excludes the current row)."""
    m = torch.zeros(kh, kw)
    ch, cw = kh // 2, kw // 2
    if mask in ("A", "B"):
        m[:ch, :] = 1
        m[ch, :cw + (mask == "B")] = 1
    elif mask in ("V", "V+"):
        m[:ch + (mask == "V+"), :] = 1
    else:
        raise ConfigError(f"mask must be 'A', 'B', 'V' or 'V+', got {mask!r}")
    return m


class MaskedConv2d(nn.Conv2d):
    """A convolution that only sees pixels before the current one in raster order
    (mask "A") or up to and including it (mask "B"); "V"/"V+" for vertical stacks.
    ``kernel_size`` is an odd int or an (odd, odd) pair. ``colours`` = 3: at the current pixel
    the connections follow :func:`colour_mask` instead (R -> G -> B; 1x1 kernels too)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, mask: str, colours: int = 1):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if kh % 2 != 1 or kw % 2 != 1:
            raise ConfigError(f"masked convolutions need an odd kernel size, got {kernel_size}")
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2))
        m = raster_mask(kh, kw, mask).expand_as(self.weight).clone()
        if colours > 1:
            m[:, :, kh // 2, kw // 2] = colour_mask(out_channels, in_channels, colours, mask)
        self.register_buffer("mask", m, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


def pointwise_conv(c_in: int, c_out: int, colours: int = 1) -> nn.Conv2d:
    """A 1x1 convolution; with colours > 1 one that keeps the R -> G -> B order (mask B)."""
    return MaskedConv2d(c_in, c_out, 1, "B", colours) if colours > 1 else nn.Conv2d(c_in, c_out, 1)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, kernel_size: int, colours: int = 1):
        super().__init__()
        half = channels // 2
        self.net = nn.Sequential(nn.ReLU(), pointwise_conv(channels, half, colours), nn.ReLU(),
                                 MaskedConv2d(half, half, kernel_size, "B", colours), nn.ReLU(),
                                 pointwise_conv(half, channels, colours))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


@dataclass(frozen=True)
class PixelCNNConfig(ModelConfig):
    input_shape: tuple[int, ...] = (1, 28, 28)
    head: str = "bernoulli"              # bernoulli, categorical or logistic-mixture
    channels: int = 64                   # feature maps between blocks (2h in the paper)
    residual_blocks: int = 7
    first_kernel: int = 7                # the mask-A layer
    kernel: int = 3                      # mask-B layers inside the blocks
    head_channels: int = 256             # 1x1 layers before the output
    mixtures: int = 5                    # components of the logistic mixture
    levels: int = 256                    # values of the categorical head (K for a prior over VQ-VAE codes)
    embedding_dim: int = 0               # > 0: categorical inputs enter as learned embeddings, not scaled values
    input_mutation: float = 0.0          # background model for likelihood ratios (Ren et al. 2019)

    def __post_init__(self):
        if len(self.input_shape) != 3 or any(int(s) < 1 for s in self.input_shape):
            raise ConfigError(f"PixelCNN needs image inputs (C, H, W), got {self.input_shape}")
        if self.input_shape[0] not in (1, 3):
            raise ConfigError(f"PixelCNN models grey (1 channel) or RGB (3 channel) images, "
                              f"got {self.input_shape[0]} channels")
        if self.head not in HEADS:
            raise ConfigError(f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        for name in ("channels", "head_channels", "mixtures", "first_kernel", "kernel"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("residual_blocks", self.residual_blocks, minimum=0)
        if self.first_kernel < 3:     # a 1x1 mask-A kernel is all zeros: no pixel would see the past
            raise ConfigError(f"first_kernel must be an odd size >= 3, got {self.first_kernel}")
        if self.channels < 2:
            raise ConfigError("channels must be >= 2 (the blocks halve them)")
        if not 2 <= self.levels <= 256:
            raise ConfigError(f"levels must lie in [2, 256], got {self.levels}")
        if (self.levels != 256 or self.embedding_dim) and self.head != "categorical":
            raise ConfigError("levels and embedding_dim apply to the categorical head only")
        check_positive_int("embedding_dim", self.embedding_dim, minimum=0)
        check_fraction("input_mutation", self.input_mutation)
        if self.input_shape[0] == 3:
            self._check_colour()

    def _check_colour(self) -> None:
        if self.head == "bernoulli" or self.levels != 256 or self.embedding_dim:
            raise ConfigError("a colour PixelCNN models 8-bit RGB: use head categorical (256 levels, "
                              "R -> G -> B masks) or logistic-mixture (PixelCNN++ coupling)")
        if self.colours > 1 and (self.channels < 6 or self.head_channels < 3):
            raise ConfigError(f"R -> G -> B masks split the features in three (the blocks' halves too): "
                              f"channels must be >= 6 and head_channels >= 3, got {self.channels} and "
                              f"{self.head_channels}")

    @property
    def colours(self) -> int:
        """3 where the network itself orders the colour channels (categorical RGB), else 1."""
        return 3 if self.input_shape[0] == 3 and self.head == "categorical" else 1

    @property
    def in_channels(self) -> int:
        return self.embedding_dim or self.input_shape[0]

    @property
    def out_channels(self) -> int:
        c = self.input_shape[0]
        if self.head == "logistic-mixture":
            return 10 * self.mixtures if c == 3 else 3 * self.mixtures
        return {"bernoulli": 1, "categorical": c * self.levels}[self.head]

    @property
    def likelihood(self) -> str:
        """The pixel distribution, named as the VAE names its decoder's (for preprocessing checks)."""
        return self.head


def _input_embedding(c: PixelCNNConfig) -> nn.Embedding | None:
    return nn.Embedding(c.levels, c.embedding_dim) if c.embedding_dim else None


def _output_layers(c: PixelCNNConfig) -> list[nn.Module]:
    """ReLU, 1x1 to head_channels, ReLU, 1x1 to the head's parameters (colour-ordered if need be)."""
    return [nn.ReLU(), pointwise_conv(c.channels, c.head_channels, c.colours), nn.ReLU(),
            pointwise_conv(c.head_channels, c.out_channels, c.colours)]


def _pointwise(conv: nn.Conv2d, v: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution applied to the (B, C) vectors of one pixel."""
    return v @ conv.weight[:, :, 0, 0].T + conv.bias


@register
class PixelCNN(Model, ExactLikelihood, SamplesFromPrior):
    """PixelCNN with masked convolutions and an exact likelihood (van den Oord et al. 2016)."""

    name = "pixelcnn"
    config_class = PixelCNNConfig
    channels_last = False       # NHWC layout; set by the models where it was measured to help

    def __init__(self, config: PixelCNNConfig):
        super().__init__(config)
        c = config
        self.embedding = _input_embedding(c)
        self.net = nn.Sequential(
            MaskedConv2d(c.in_channels, c.channels, c.first_kernel, "A", c.colours),
            *[ResidualBlock(c.channels, c.kernel, c.colours) for _ in range(c.residual_blocks)],
            *_output_layers(c))
        # Channels-last (NHWC) weights and activations for oneDNN's convolutions on these narrow
        # layers: a training step (batch 64, 1 thread, 2-core AVX512/AMX CPU under load) took
        # 1.4-1.75x less time than NCHW at fp32, 3x less with bf16 autocast; at 2 threads on the
        # loaded machine the gain was not reproducible. benchmarks/pixelcnn_step.py re-measures it.
        self.channels_last = True
        self.to(memory_format=torch.channels_last)

    def check_data(self, data) -> None:
        """8-bit heads need integer values below ``levels``."""
        c = self.config
        if c.head != "bernoulli" and data.is_8bit and c.levels < 256 and int(data.sampled_range()[1]) >= c.levels:
            raise DataError(f"{data.name}: values up to {int(data.sampled_range()[1])} but the categorical head has "
                            f"{c.levels} levels (--levels)")

    @property
    def integer_inputs(self) -> bool:            # 8-bit heads read uint8 integers
        return self.config.head != "bernoulli"

    def describe(self) -> str:
        c = self.config
        return f"PixelCNN ({c.head}), {c.residual_blocks} blocks x {c.channels} channels"

    def _network_input(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels (B, C, H, W) -> the network's input (B, in_channels, H, W)."""
        c = self.config
        if self.embedding is not None:
            return self.embedding(x[:, 0].long()).permute(0, 3, 1, 2)
        if c.head == "bernoulli":
            return x.float()
        return x.float() / ((c.levels - 1) / 2.0) - 1.0

    def raw(self, x_in: torch.Tensor, y=None) -> torch.Tensor:
        """The network's output (B, P, H, W) for scaled inputs."""
        if self.channels_last:
            x_in = x_in.contiguous(memory_format=torch.channels_last)
        return self.net(x_in)

    def stepper(self, n: int, y=None) -> "_StepBuffers":
        """Computes the raw output at one pixel at a time (see ``sample``)."""
        h, w = self.config.input_shape[1:]
        p = next(self.parameters())
        return _StepBuffers(self.net, n, h, w, p.dtype, p.device)

    def distribution(self, x: torch.Tensor, y=None):
        """p(x_t | x_<t) for every pixel t at once (teacher forcing)."""
        return self._head(self.raw(self._network_input(x), y))

    def _head(self, out: torch.Tensor):
        """The pixel distribution from the network's raw output (B, P, H, W)."""
        head, colour = self.config.head, self.config.input_shape[0] == 3
        if head == "bernoulli":
            return Bernoulli(out, event_dims=3)
        if head == "categorical":       # (B, levels, C, H, W); colour: the R, G, B blocks of logits
            return Categorical(out.unflatten(1, (-1, self.config.levels)).transpose(1, 2) if colour
                               else out.unsqueeze(2))
        if colour:
            return CoupledLogisticMixture(out, self.config.mixtures)
        return DiscretizedLogisticMixture(out.unsqueeze(2), self.config.mixtures)

    def log_prob(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """Exact log p(x) (log p(x|y) for a class-conditional model) in nats per image, (B,)."""
        return self.distribution(x, y).log_prob(x)

    @property
    def mutation_levels(self) -> tuple[int, float]:
        c = self.config
        return (2, 1.0) if c.head == "bernoulli" else (c.levels, float(c.levels - 1))

    def forward(self, x, y=None, warmup: float = 1.0) -> Losses:
        x = self.training_input(x)
        nll = -self.log_prob(x, y)
        return Losses(nll.mean(), {"nll": nll.detach()})

    @torch.no_grad()
    def sample(self, n: int, y=None, cached: bool = True) -> torch.Tensor:
        """n images drawn pixel by pixel in raster order (given labels y for a
        class-conditional model).

        ``cached`` (default) computes each layer at the new pixel only, from buffers of the
        layer inputs at earlier pixels (masked convolutions never look ahead, and every
        other layer is pointwise), so a step costs one pixel's worth of network instead of
        a whole image's. ``cached=False`` runs the full network for every pixel; both draw
        the same random numbers, so one seed gives the same images either way. A colour model
        with R -> G -> B masks takes three steps per pixel (one per channel); the coupled
        logistic mixture draws a pixel's three channels in one.
        """
        if n < 1:
            raise ConfigError(f"the number of samples must be >= 1, got {n}")
        cfg = self.config
        channels, (h, w) = cfg.input_shape[0], cfg.input_shape[1:]
        device = next(self.parameters()).device
        dtype = next(self.parameters()).dtype
        x = torch.zeros(n, cfg.in_channels, h, w, dtype=dtype, device=device)   # network input
        pixels = torch.zeros(n, channels, h, w, dtype=torch.long, device=device)
        buffers = self.stepper(n, y) if cached else None
        bar = Progress(h * w, f"sample {n} ({self.name}, pixel by pixel)", "pixels")   # shown by the CLI
        # the channels each step fills: one at a time under colour masks, else all of them
        steps = [[ch] for ch in range(channels)] if cfg.colours > 1 else [list(range(channels))]
        for r in range(h):
            for c in range(w):
                bar.update(1)
                for fill in steps:
                    if cached:
                        out = buffers.step(x, r, c)                           # (B, P)
                    else:
                        out = self.raw(x, y)[:, :, r, c]
                    value = self._head(out[:, :, None, None]).sample().reshape(n, channels)
                    pixels[:, fill, r, c] = value[:, fill].long()
                    x[:, :, r, c] = self._network_input(pixels[:, :, r:r + 1, c:c + 1]).reshape(n, -1).to(dtype)
        bar.close()
        return pixels.float() if self.config.head == "bernoulli" else pixels


def _gate(t: torch.Tensor) -> torch.Tensor:
    """tanh(f) * sigmoid(g) over the channel halves (dim 1)."""
    f, g = t.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)


class GatedBlock(nn.Module):
    """One layer of the gated PixelCNN (van den Oord et al. 2016b): a vertical stack that
    sees every row above, a horizontal stack that sees the current row to the left, the
    vertical stack feeding the horizontal one (no blind spot), gated activations, a
    residual connection on the horizontal stack and an optional per-class bias."""

    def __init__(self, channels: int, kernel: int, first: bool, num_classes: int, in_channels: int = 1):
        super().__init__()
        c_in = in_channels if first else channels
        self.first = first
        self.v = MaskedConv2d(c_in, 2 * channels, (kernel, kernel), "V" if first else "V+")
        self.h = MaskedConv2d(c_in, 2 * channels, (1, kernel), "A" if first else "B")
        self.link = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)
        self.cond = nn.Embedding(num_classes, 4 * channels) if num_classes else None

    def bias(self, y, image: bool = True) -> tuple:
        """The per-class biases of the vertical and horizontal stacks: (B, 2C, 1, 1) each for
        images, (B, 2C) for one pixel's vectors; 0 for an unconditional model."""
        if self.cond is None:
            return 0.0, 0.0
        b = self.cond(y)
        return (b[:, :, None, None] if image else b).chunk(2, dim=1)

    def vertical(self, v, bv):
        """The vertical stack: (pre-activation, gated output)."""
        vp = self.v(v)
        return vp, _gate(vp + bv)

    def forward(self, v, h, y=None):
        bv, bh = self.bias(y)
        vp, v_out = self.vertical(v, bv)
        h_new = self.h_out(_gate(self.h(h) + self.link(vp) + bh))
        return v_out, h_new if self.first else h + h_new

    def step(self, buffers: "_StepBuffers", h_vec, r: int, c: int):
        """The horizontal stack at (r, c), (B, C); the vertical pre-activations of the
        current row come from ``buffers.vertical`` (computed once per row)."""
        _, bh = self.bias(buffers.y, image=False)
        vp = buffers.vertical[id(self)][:, :, r, c]
        hp = buffers.masked_conv(self.h, h_vec, r, c, image=self.first) + _pointwise(self.link, vp) + bh
        h_new = _pointwise(self.h_out, _gate(hp))
        return h_new if self.first else h_vec + h_new


@dataclass(frozen=True)
class GatedPixelCNNConfig(PixelCNNConfig):
    residual_blocks: int = 7             # gated layers after the first
    num_classes: int = 0                 # > 0: a per-class bias in every layer (p(x|y))

    def __post_init__(self):
        super().__post_init__()
        if self.colours > 1:
            raise ConfigError("the gated PixelCNN models colour with the coupled logistic mixture "
                              "(head logistic-mixture); R -> G -> B masked categoricals are the plain PixelCNN's")


@register
class GatedPixelCNN(PixelCNN):
    """Gated PixelCNN (van den Oord et al. 2016b): vertical and horizontal stacks, no blind
    spot, optional class conditioning."""

    name = "gated-pixelcnn"
    config_class = GatedPixelCNNConfig

    def __init__(self, config: GatedPixelCNNConfig):
        Model.__init__(self, config)
        c = config
        self.embedding = _input_embedding(c)
        self.blocks = nn.ModuleList(
            [GatedBlock(c.channels, c.first_kernel, True, c.num_classes, c.in_channels)]
            + [GatedBlock(c.channels, c.kernel, False, c.num_classes) for _ in range(c.residual_blocks)])
        self.out = nn.Sequential(*_output_layers(c))

    def describe(self) -> str:
        c = self.config
        cond = f", {c.num_classes} classes" if c.num_classes else ""
        return f"gated PixelCNN ({c.head}), {1 + c.residual_blocks} layers x {c.channels} channels{cond}"

    def _labels(self, y, n: int):
        k = self.config.num_classes
        if not k:
            return None
        return checked_labels(y, n, k, next(self.parameters()).device, self.describe())

    def check_data(self, data) -> None:
        super().check_data(data)
        if self.num_classes:
            check_labelled_data(data, self.num_classes, "a class-conditional PixelCNN")

    def vertical(self, x_in: torch.Tensor, y=None) -> dict[int, torch.Tensor]:
        """Every block's vertical pre-activation over the whole image."""
        y = self._labels(y, len(x_in))
        out, v = {}, x_in
        for blk in self.blocks:
            out[id(blk)], v = blk.vertical(v, blk.bias(y)[0])
        return out

    def raw(self, x_in: torch.Tensor, y=None) -> torch.Tensor:
        y = self._labels(y, len(x_in))
        v = h = x_in
        for blk in self.blocks:
            v, h = blk(v, h, y)
        return self.out(h)

    def stepper(self, n: int, y=None) -> "_StepBuffers":
        h, w = self.config.input_shape[1:]
        p = next(self.parameters())
        return _GatedSteps(self, n, h, w, p.dtype, p.device, self._labels(y, n))


class _StepBuffers:
    """Per-layer input buffers for computing the network one pixel at a time.

    Walks ``net`` (masked convolutions, 1x1 convolutions, ReLUs, residual blocks): at
    pixel (r, c) a masked convolution reads its buffered input around (r, c) (only
    positions already filled count: its mask hides the rest), every other layer works on
    the (B, C) vector at (r, c).
    """

    def __init__(self, net: nn.Module, n: int, h: int, w: int, dtype, device):
        self.net = net
        self.inputs: dict[int, torch.Tensor] = {}
        for m in net.modules():
            if isinstance(m, MaskedConv2d):
                ph, pw = m.padding                 # padded, so patches never leave the buffer
                self.inputs[id(m)] = torch.zeros(n, m.in_channels, h + 2 * ph, w + 2 * pw,
                                                 dtype=dtype, device=device)

    def step(self, x: torch.Tensor, r: int, c: int) -> torch.Tensor:
        return self._run(self.net, x, r, c, image=True)

    def _run(self, m: nn.Module, v: torch.Tensor, r: int, c: int, image: bool = False) -> torch.Tensor:
        if isinstance(m, nn.Sequential):
            for i, layer in enumerate(m):
                v = self._run(layer, v, r, c, image=image and i == 0)
            return v
        if isinstance(m, ResidualBlock):
            return v + self._run(m.net, v, r, c)
        if isinstance(m, MaskedConv2d):
            return self.masked_conv(m, v, r, c, image)
        if isinstance(m, nn.Conv2d):                                  # 1x1: a linear map of the vector
            return _pointwise(m, v)
        if isinstance(m, nn.ReLU):
            return torch.relu(v)
        if isinstance(m, GatedBlock):
            return m.step(self, v, r, c)
        raise TypeError(f"no single-pixel rule for {type(m).__name__}")

    def masked_conv(self, m: MaskedConv2d, v: torch.Tensor, r: int, c: int, image: bool = False) -> torch.Tensor:
        """The layer's output at (r, c), (B, C_out); ``v`` is its input there (or the whole image)."""
        (kh, kw), (ph, pw) = m.kernel_size, m.padding
        buf = self.inputs[id(m)]
        if image:              # the network input: the pixels written so far
            buf[:, :, ph:ph + v.shape[2], pw:pw + v.shape[3]] = v
        else:
            buf[:, :, r + ph, c + pw] = v
        patch = buf[:, :, r:r + kh, c:c + kw]                          # centred on (r, c)
        return torch.einsum("bikl,oikl->bo", patch, m.weight * m.mask) + m.bias


class _GatedSteps(_StepBuffers):
    """Cached steps of the gated model: the vertical stack once per row (it depends on
    the rows above only), the horizontal stack one pixel at a time."""

    def __init__(self, model: GatedPixelCNN, n: int, h: int, w: int, dtype, device, y):
        super().__init__(model, n, h, w, dtype, device)
        self.model, self.y, self.vertical = model, y, {}

    def step(self, x: torch.Tensor, r: int, c: int) -> torch.Tensor:
        if c == 0:
            self.vertical = self.model.vertical(x, self.y)
        h = x
        for i, blk in enumerate(self.model.blocks):
            h = blk.step(self, h, r, c)
        return self._run(self.model.out, h, r, c)
