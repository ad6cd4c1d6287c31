"""What every number zspace reports means: its name, unit, which direction is better, and a line.

One table, used by the HTML report, the comparison page and anything else that shows a
metric. Keys are the names numbers carry in metrics.csv (``train_elbo``, ``test_kl``: a
split prefix and a term) and in the evaluation JSON (``nll``, ``bits_per_dim``).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Measure:
    name: str          # as a reader knows it: "ELBO", "bits/dim"
    unit: str          # "nats/example", "dB", "" for a pure number
    better: str        # "higher", "lower", or "" (a setting, a count, or neither)
    meaning: str       # one line


_NATS = "nats/example"
MEASURES: dict[str, Measure] = {
    # likelihoods and their parts (Kingma & Welling 2014; Burda et al. 2016)
    "elbo": Measure("ELBO", _NATS, "higher", "evidence lower bound E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)): a lower "
                    "bound on log p(x); usually negative, closer to 0 is better"),
    "rec": Measure("reconstruction term", _NATS, "higher",
                   "E_q[log p(x|z)]: how likely the decoder makes the input, given codes drawn from q(z|x)"),
    "kl": Measure("KL", _NATS, "", "KL(q(z|x) ‖ p(z)): information the code carries about x; near 0 means an "
                  "unused code (posterior collapse), large means a hard-to-sample posterior"),
    "iwae": Measure("IWAE bound", _NATS, "higher",
                    "the k-sample importance-weighted bound (Burda et al. 2016): between the ELBO and log p(x)"),
    "tc": Measure("total correlation", _NATS, "lower",
                  "dependence between the code's dimensions under q(z) (β-TCVAE, Chen et al. 2018)"),
    "nll": Measure("NLL", _NATS, "lower", "negative log-likelihood −log p(x): exact for autoregressive models, "
                   "else importance-sampled with k samples (an upper bound that tightens with k)"),
    "nll_std_err": Measure("NLL standard error", _NATS, "",
                           "standard error of the mean NLL over the examples (not of the estimator's bias)"),
    "bits_per_dim": Measure("bits/dim", "bits/dimension", "lower",
                            "NLL / (D · ln 2): the NLL per input dimension in bits, comparable across image sizes"),
    # reconstructions
    "mse": Measure("MSE", "per dimension", "lower", "mean squared error between input and reconstruction, "
                   "in the input's units squared (grey levels in [0, 1])"),
    "reconstruction_mse": Measure("reconstruction MSE", "per dimension", "lower",
                                  "mean squared error of the decoder mean at the posterior mean, per input dimension"),
    "bce": Measure("BCE", _NATS, "lower", "binary cross-entropy of the reconstruction, summed over dimensions"),
    "psnr": Measure("PSNR", "dB", "higher", "peak signal-to-noise ratio 10·log10(1 / MSE) for values in [0, 1]"),
    "ssim": Measure("SSIM", "", "higher", "structural similarity of images (Wang et al. 2004), 1 = identical"),
    # codes
    "code_l1": Measure("code L1", "per example", "", "sum of |code|: the sparse autoencoder's L1 penalty"),
    "sparsity_kl": Measure("sparsity KL", "nats", "lower",
                           "KL between the target and the mean activation of each code unit (Ng's sparse AE)"),
    "code_zero_fraction": Measure("zero codes", "fraction", "", "share of code units below 1e-3 in magnitude"),
    "vq": Measure("VQ loss", "per example", "lower",
                  "codebook + β·commitment loss of vector quantisation (van den Oord et al. 2017)"),
    "perplexity": Measure("codebook perplexity", "codes", "higher",
                          "exp(entropy of code usage): how many of the K codes are in effective use"),
    "l0": Measure("L0", "features/token", "", "features active per token: the sparsity a sparse autoencoder buys"),
    "fvu": Measure("FVU", "fraction", "lower", "fraction of variance unexplained by the reconstruction"),
    "sparsity": Measure("sparsity penalty", "per token", "", "the SAE's penalty term before its weight"),
    "aux": Measure("aux-k loss", "per token", "lower", "reconstruction of the residual by dead features"),
    # sample quality
    "fid": Measure("FID", "feature units²", "lower", "Fréchet distance between Gaussians fitted to real and "
                   "generated features (Heusel et al. 2017); on LeNet features here, not Inception's"),
    "kid": Measure("KID", "feature units²", "lower", "unbiased squared MMD, cubic polynomial kernel, between real "
                   "and generated features (Bińkowski et al. 2018); 0 = same distribution"),
    "auroc": Measure("AUROC", "", "higher", "chance that a random outlier scores above a random inlier; 0.5 = chance"),
    # bookkeeping
    "epoch": Measure("epoch", "epochs", "", "passes over the training split completed"),
    "step": Measure("step", "steps", "", "optimiser steps taken"),
    "batch": Measure("batch", "batches", "", "batches done of the epoch after the completed ones"),
    "lr": Measure("learning rate", "", "", "the optimiser's step size at the end of the row"),
    "wall_seconds": Measure("training time", "s", "", "wall time spent training so far (evaluation excluded)"),
    "seconds": Measure("evaluation time", "s", "", "wall time the evaluation took"),
    "num_samples": Measure("k", "samples/example", "", "importance samples per example (0: exact likelihood)"),
    "num_examples": Measure("N", "examples", "", "examples the numbers are averaged over"),
    "num_dims": Measure("D", "dimensions", "", "input dimensions per example (bits/dim divides by D)"),
}
SPLITS = ("train", "test")


def lookup(key: str) -> tuple[str | None, Measure | None]:
    """(split, measure) of a metric name: 'test_elbo' -> ('test', ELBO); 'nll' -> (None, NLL);
    an unknown name gives (split or None, None)."""
    split, _, term = key.partition("_")
    if split in SPLITS and term:
        return split, MEASURES.get(term)
    return None, MEASURES.get(key)


def unit_of(key: str) -> str:
    _, m = lookup(key)
    return m.unit if m else ""


def arrow(better: str) -> str:
    """↑ for higher-is-better, ↓ for lower-is-better, '' otherwise."""
    return {"higher": "↑", "lower": "↓"}.get(better, "")
