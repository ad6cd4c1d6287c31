"""An autoregressive prior over a VQ-VAE's code grids: "a sequence of tiles".

``train_prior(vqvae_run, out)`` encodes the VQ-VAE run's training and test images into
code grids, stores them in ``out/codes.npz`` (8-bit, with the labels), and trains a
(gated) PixelCNN with a K-way categorical head and embedded inputs, or a causal transformer
(``prior_model="tile-transformer"``), on them: an exact likelihood over tiles, (h * w) steps
per image instead of C * H * W. The run's model is one
``VQPrior`` (models/vqprior.py): the frozen VQ-VAE and the prior in one checkpoint, so
``Run.sample`` and ``zspace sample`` draw code grids and decode them to images without the
VQ-VAE's folder; ``prior_of`` in its config.json records where the VQ-VAE came from.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError
from .models.capabilities import DiscreteCodes
from .models.vqprior import PRIOR_MODELS, VQPrior, VQPriorConfig
from .training.checkpoint import CONFIG_FILE, write_json_atomic
from .training.config import TrainConfig
from .training.run import Run, load_run, read_run_config, train

CODES_FILE = "codes.npz"


@torch.no_grad()
def encode_split(vq_run: Run, split: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Code grids (N, 1, h, w) uint8 and labels of one split of the VQ-VAE run's data."""
    loader = vq_run.loader(split, 500)
    codes = [vq_run.model.encode_codes(b.x).to(torch.uint8).cpu().numpy() for b in loader.epoch(0)]
    return np.concatenate(codes)[:, None], loader.data.y


def train_prior(vqvae_run: str | Path, out: str | Path, *, gated: bool = True, config: TrainConfig | None = None,
                progress: bool = True, overwrite: bool = False, embedding_dim: int = 32,
                prior_model: str | None = None, **options) -> Run:
    """Trains a prior on the code grids of ``vqvae_run``; returns the prior's run. ``prior_model``:
    "gated-pixelcnn" (default), "pixelcnn" (``gated=False``) or "tile-transformer"."""
    prior_model = prior_model or ("gated-pixelcnn" if gated else "pixelcnn")
    if prior_model not in PRIOR_MODELS:
        raise ConfigError(f"prior_model must be one of {', '.join(PRIOR_MODELS)}, got {prior_model!r}")
    if {"levels", "head"} & set(options):
        raise ConfigError("a prior's head and levels follow its VQ-VAE (a categorical over its K codes)")
    vq = load_run(vqvae_run)
    if not isinstance(vq.model, DiscreteCodes):
        raise ConfigError(f"{vqvae_run} holds a {vq.model.name} run; a prior needs a VQ-VAE run")
    out = Path(out)
    if (out / "checkpoints" / "latest").exists() and not overwrite:
        raise ConfigError(f"{out} already holds a run; choose another --out (or --overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split in ("train", "test"):
        x, y = encode_split(vq, split)
        arrays[f"x_{split}"] = x
        if y is not None:
            arrays[f"y_{split}"] = y
    np.savez(out / CODES_FILE, **arrays)
    pixelcnn_defaults = {} if prior_model == "tile-transformer" else {"embedding_dim": embedding_dim,
                                                                      "first_kernel": 3}
    prior_options = {"head": "categorical", "levels": vq.model.config.num_codes, **pixelcnn_defaults, **options}
    config = config or TrainConfig()
    torch.manual_seed(config.seed)           # the prior's initial weights, as train() seeds a named model
    model = VQPrior(VQPriorConfig(vqvae=vq.model.config.to_dict(), prior_model=prior_model, prior=prior_options))
    model.vqvae.load_state_dict(vq.model.state_dict())
    train(model, str((out / CODES_FILE).resolve()), out=out, preprocessing="uint8", config=config,
          progress=progress, overwrite=True, figures=False)
    cfg = read_run_config(out)
    cfg["prior_of"] = str(Path(vqvae_run).resolve())     # provenance (and the images' data set)
    write_json_atomic(out / CONFIG_FILE, cfg)
    run = load_run(out)
    from .report.figures import write_run_figures
    write_run_figures(run)
    return run
