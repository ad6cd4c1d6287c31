"""Training and evaluating sparse autoencoders on harvested activations.

``train_sae`` builds a :class:`~zspace.models.sae.SparseAutoencoder` over a shard store of
activations, fits its input scale and b_dec (geometric median) on a sample of the training
rows, and trains it with the common trainer (checkpoints, exact resume, DDP, bf16).
``evaluate_sae`` measures what the literature reports:

* FVU: squared error over the variance about the mean, on held-out rows;
* L0: mean number of active features per token;
* dead fraction: features with no activation in the N evaluation tokens (N stated);
* the feature-density histogram (log10 firing frequency);
* fidelity, by splicing the reconstruction back into the model at the hook point: for a
  causal LM the cross-entropy loss recovered, (CE_zero - CE_sae) / (CE_zero - CE_clean), with
  zero ablation as the floor, and the KL from the clean to the spliced next-token
  distributions; for an encoder (MiniLM) the cosine between clean and spliced sentence
  embeddings and how often each sentence's nearest neighbour stays the same.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.shards import ShardStore
from ..data.sources import load_dataset
from ..errors import ConfigError, DataError
from ..models.sae import SAEConfig, SparseAutoencoder
from ..training import TrainConfig
from ..training.run import Run, load_run, train
from .hooks import _windows as document_windows
from .hooks import replace_output
from .lm import LanguageModel, load_language_model, sentence_embeddings

INIT_ROWS = 20_000     # rows sampled (evenly) for the input scale and the geometric median


def default_lr(width: int) -> float:
    """5e-3 / sqrt(width / 2^14): the 1/sqrt(width) scaling of Gao et al. (2024) with sparsify's
    constant (0.028 at 512 features; on stories260K at 128 steps of 4096 with Adam, 512/k16 test
    FVU 0.076 against 0.082 at 0.01 and 0.218 at 1e-3; the schedule-free signum default is best
    at it too: 2048/k32 FVU 0.042 at 1x, 0.043 at 2x, 0.099 at 0.3x)."""
    return 5e-3 / math.sqrt(width / 2 ** 14)


# One pass over the activations, 4096 rows a step, a constant rate. TopK and BatchTopK train
# with schedule-free sign descent (sparsify's default; against Adam at the same rate on
# stories260K, 128 steps: FVU 0.052 -> 0.042 at 2048 features k = 32, 0.110 -> 0.101 at 512
# k = 8). ReLU and JumpReLU keep Adam: their sparsity penalty must move the step's size, and a
# sign step ignores it (JumpReLU at sparsity weight 1, 5 and 20 gave the same L0 of 21.6 under
# signum).
TRAIN_DEFAULTS = dict(epochs=1, batch_size=4096, lr_schedule="constant")
OPTIMIZER_DEFAULTS = {"topk": dict(optimizer="signum", momentum=0.95),
                      "batchtopk": dict(optimizer="signum", momentum=0.95)}


def default_precision(kind: str, device: str = "cpu") -> str:
    """bf16 for TopK where the device computes it natively (AVX512-BF16 or AMX CPUs, Ampere or
    later GPUs), else fp32. Under bf16 only the product that ranks the features is in bf16; the
    chosen features' values, the reconstruction and every gradient stay fp32 (``_TopKEncode``),
    so bf16 decides near-ties of the selection only. The other kinds would reconstruct from bf16
    activations, and keep fp32. The choice is written into the run's config.json."""
    from ..training.trainer import bf16_supported

    if kind != "topk":
        return "fp32"
    try:
        return "bf16" if bf16_supported(torch.device(device)) else "fp32"
    except (RuntimeError, AssertionError):      # an unusable device: the trainer says so in one line
        return "fp32"


def default_config(width: int, kind: str = "topk", **given) -> TrainConfig:
    """The SAE training defaults for ``width`` features of ``kind``, with the options ``given`` on top."""
    precision = default_precision(kind, given.get("device", "cpu"))
    return TrainConfig(**{**TRAIN_DEFAULTS, **OPTIMIZER_DEFAULTS.get(kind, {}), "lr": default_lr(width),
                          "precision": precision, **given})


def dead_window(config: TrainConfig, rows: int) -> int:
    """Tokens a feature may stay silent before aux-k treats it as dead: Gao et al.'s 10M-token
    window assumes budgets of billions; here a 32nd of the training tokens (at least 4 batches,
    at most SAEConfig's 1M). On stories260K, 2048 features, 256 steps of 4096: features silent
    over the 1M training tokens 1.4% -> 0.2% (k = 8) and 0.4% -> 0% (k = 32) against an eighth,
    FVU 0.0583 -> 0.0580 and 0.0278 -> 0.0277; against 1M, 11.7% -> 3.2% at k = 32."""
    tokens = config.steps * config.batch_size if config.steps else (config.epochs or 1) * rows
    return int(min(SAEConfig.dead_tokens, max(4 * config.batch_size, tokens // 32)))


def _store_of(splits) -> ShardStore:
    base = getattr(splits.train, "base", splits.train)
    if not isinstance(base, ShardStore):
        raise ConfigError("train_sae needs a shard store of activations (zspace sae harvest writes one)")
    return base


def train_sae(store: str | Path, out: str | Path | None, *, kind: str = "topk", width: int | None = None,
              expansion: int = 8, k: int = 32, config: TrainConfig | None = None, test_fraction: float = 0.01,
              progress: bool = True, overwrite: bool = False, **options) -> Run:
    """An SAE of ``width`` features (default ``expansion`` x d) trained on the store's rows."""
    splits = load_dataset(str(store), test_fraction=test_fraction)
    if len(splits.example_shape) != 1:
        raise DataError(f"{store}: rows of shape {splits.example_shape}; an SAE reads activation vectors (d,)")
    d = splits.example_shape[0]
    width = width if width is not None else expansion * d
    config = config or default_config(width, kind)
    torch.manual_seed(config.seed)                   # fixes the initial dictionary
    if "dead_tokens" not in options:
        options["dead_tokens"] = dead_window(config, len(splits.train))
    sae = SparseAutoencoder(SAEConfig(input_shape=(d,), width=width, kind=kind, k=k, **options))
    train_rows = splits.train
    idx = np.linspace(0, len(train_rows) - 1, min(INIT_ROWS, len(train_rows))).astype(np.int64)
    sae.init_from_data(torch.from_numpy(train_rows.read(idx)))
    return train(sae, splits, out=out, config=config, progress=progress, overwrite=overwrite,
                 test_fraction=test_fraction, figures=False)


@dataclass
class SAEEvaluation:
    tokens: int                       # held-out rows evaluated
    fvu: float
    l0: float
    dead_fraction: float              # no activation in those tokens
    density_histogram: dict = field(default_factory=dict)   # log10 density bin edges and counts
    fidelity: dict = field(default_factory=dict)            # splice metrics (see module docstring)

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def feature_statistics(sae: SparseAutoencoder, data, *, batch_size: int = 4096, limit: int | None = None):
    """(FVU, mean L0, firing counts per feature, tokens) over the first ``limit`` rows of ``data``."""
    sae.eval()
    n = len(data) if limit is None else min(limit, len(data))
    if n == 0:
        raise DataError("no rows to evaluate")
    fires = torch.zeros(sae.config.width, dtype=torch.long)
    stats, l0 = None, 0.0
    dev = sae.W_dec.device                 # rows to the SAE's device, counts back on the CPU
    for start in range(0, n, batch_size):
        x = torch.from_numpy(data.read(np.arange(start, min(n, start + batch_size)))).to(dev)
        out = sae(x)
        fires += (sae.encode_features(x) > 0).sum(0).cpu()
        l0 += float(out.terms["l0"].double().sum())
        s = out.stats["fvu"]
        stats = s if stats is None else stats.merge(s)
    return stats.value(), l0 / n, fires, n


def density_histogram(fires: torch.Tensor, tokens: int, bins: int = 20) -> dict:
    """Counts of features per log10(firing frequency) bin; dead features counted apart."""
    density = fires.double() / tokens
    alive = density[density > 0]
    lo = math.floor(math.log10(1.0 / tokens))
    edges = np.linspace(lo, 0.0, bins + 1)
    counts = np.histogram(np.log10(alive.numpy()), edges)[0] if len(alive) else np.zeros(bins, int)
    return {"log10_edges": [round(float(e), 3) for e in edges], "counts": counts.tolist(),
            "dead": int((density == 0).sum())}


def _splice(sae: SparseAutoencoder, keep_first: int):
    """The reconstruction in place of the activation, leaving the first ``keep_first`` positions."""
    def fn(a: torch.Tensor) -> torch.Tensor:
        out = a.clone()
        body = a[:, keep_first:]
        out[:, keep_first:] = sae.reconstruct(body.reshape(-1, body.shape[-1]).float()).reshape(body.shape).to(a.dtype)
        return out
    return fn


def _zero(keep_first: int):
    def fn(a):
        out = a.clone()
        out[:, keep_first:] = 0
        return out
    return fn


def _windows(lm: LanguageModel, texts, context: int, max_tokens: int) -> list[list[int]]:
    """The harvest's windows of the texts (specials included), those with at least 2 tokens,
    until ``max_tokens`` tokens."""
    windows, total = [], 0
    for _, _, window, rows in document_windows(lm, list(texts), context, exclude_special=True):
        if len(rows) < 2:
            continue
        windows.append(window)
        total += len(rows)
        if total >= max_tokens:
            break
    return windows


@torch.no_grad()
def causal_fidelity(lm: LanguageModel, sae: SparseAutoencoder, hook: str, texts, *, context: int = 128,
                    max_tokens: int = 20_000, batch_size: int = 16) -> dict:
    """CE clean / spliced / zero-ablated (nats per predicted token), loss recovered, and the KL
    from the clean next-token distribution to the spliced one."""
    if lm.kind != "causal":
        raise ConfigError(f"{lm.name} is not a causal language model")
    windows = _windows(lm, texts, context, max_tokens)
    if not windows:
        raise DataError("no text to measure the splice on")
    keep = len(lm.prefix)
    sums = {"clean": 0.0, "sae": 0.0, "zero": 0.0, "kl": 0.0}
    count = 0
    lm.model.eval()
    for i in range(0, len(windows), batch_size):
        ids, mask = lm.batch(windows[i:i + batch_size])
        ids, mask = ids.to(lm.device), mask.to(lm.device)
        target, valid = ids[:, 1:], mask[:, 1:].bool()
        logp = {}
        logp["clean"] = F.log_softmax(lm.forward(ids, mask)[:, :-1].float(), -1)
        with replace_output(lm.model, hook, _splice(sae, keep)):
            logp["sae"] = F.log_softmax(lm.forward(ids, mask)[:, :-1].float(), -1)
        with replace_output(lm.model, hook, _zero(keep)):
            logp["zero"] = F.log_softmax(lm.forward(ids, mask)[:, :-1].float(), -1)
        for k, lp in logp.items():
            sums[k] += float(-lp.gather(-1, target[..., None])[..., 0][valid].double().sum())
        kl = (logp["clean"].exp() * (logp["clean"] - logp["sae"])).sum(-1)
        sums["kl"] += float(kl[valid].double().sum())
        count += int(valid.sum())
    ce = {k: sums[k] / count for k in ("clean", "sae", "zero")}
    recovered = (ce["zero"] - ce["sae"]) / (ce["zero"] - ce["clean"]) if ce["zero"] != ce["clean"] else float("nan")
    return {"tokens": count, "ce_clean": ce["clean"], "ce_spliced": ce["sae"], "ce_zero_ablated": ce["zero"],
            "ce_loss_recovered": recovered, "kl_clean_to_spliced": sums["kl"] / count,
            "ablation": "zero ablation at the hook point, BOS position left as it is"}


@torch.no_grad()
def encoder_fidelity(lm: LanguageModel, sae: SparseAutoencoder, hook: str, texts, *, max_texts: int = 500) -> dict:
    """Cosine of clean and spliced sentence embeddings, and nearest-neighbour agreement."""
    texts = [t for t in texts if t.strip()][:max_texts]
    if len(texts) < 3:
        raise DataError("need at least 3 sentences to measure nearest-neighbour agreement")
    clean = sentence_embeddings(lm, texts)
    with replace_output(lm.model, hook, _splice(sae, len(lm.prefix))):
        spliced = sentence_embeddings(lm, texts)
    cos = (clean * spliced).sum(1)

    def neighbours(e):
        s = e @ e.t()
        s.fill_diagonal_(-2.0)
        return s.argmax(1)
    agree = float((neighbours(clean) == neighbours(spliced)).double().mean())
    return {"sentences": len(texts), "embedding_cosine_mean": float(cos.mean()),
            "embedding_cosine_min": float(cos.min()), "nearest_neighbour_agreement": agree}


def evaluate_sae(run: Run | str | Path, *, lm: LanguageModel | None = None, texts=None, limit: int | None = 200_000,
                 fidelity_tokens: int = 20_000, device: str = "cpu") -> SAEEvaluation:
    """The metrics of the module docstring on the run's held-out rows (and, given ``texts``,
    fidelity on them through the model named in the store's metadata, or ``lm``). A run folder is
    loaded onto ``device``, and the language model named in the store too (a given ``lm`` should
    be on the run's device)."""
    run = run if isinstance(run, Run) else load_run(run, map_location=device)
    sae = run.model
    if not isinstance(sae, SparseAutoencoder):
        raise ConfigError(f"{run.path} is not a sparse autoencoder run")
    splits = run.data()
    fvu, l0, fires, n = feature_statistics(sae, splits.test, limit=limit)
    result = SAEEvaluation(n, fvu, l0, float((fires == 0).double().mean()), density_histogram(fires, n))
    if texts is not None:
        meta = _store_of(splits).metadata
        lm = lm or load_language_model(meta.get("model", ""), device=str(sae.W_dec.device))
        hook = meta.get("hook")
        if not hook:
            raise ConfigError("the store's metadata names no hook point; pass lm and hook explicitly")
        if lm.kind == "causal":
            result.fidelity = causal_fidelity(lm, sae, hook, texts, context=int(meta.get("context", 128)),
                                              max_tokens=fidelity_tokens)
        else:
            result.fidelity = encoder_fidelity(lm, sae, hook, texts)
    return result
