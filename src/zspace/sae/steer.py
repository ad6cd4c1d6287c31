"""Steering a language model through one SAE feature, with the SAE's error term kept.

At the hook point each position's activation a becomes

    a' = a + (x_hat(f') - x_hat(f))          (original activation space)

where f are the SAE's features of a and f' is f with feature i clamped to ``value`` (or with
``add`` added to it: its decoder direction added with that coefficient). The reconstruction
error a - x_hat(f) is kept, so only feature i's contribution moves: with ``value`` equal to the
feature's own activation nothing changes. The SAE's decoder is linear, so the difference is
exactly (f'_i - f_i) W_dec[i] / scale, computed in that form (no rounding from decoding twice).
The BOS position is never steered (it is an attention sink whose activation is unlike any text).

``steer`` reports completions with and without steering (the same seeds), the mean
log-probability of the feature's top promoted tokens (``promoted_tokens``: W_U (W_dec[i] / scale),
the final RMSNorm ignored) at the generated positions and over the prompt, and the cross-entropy
on an unrelated text with and without steering.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from .hooks import replace_output, resolve_hook

UNRELATED_TEXT = "wizard-of-oz.txt"


def _check_feature(sae, feature) -> int:
    W = int(sae.config.width)
    if isinstance(feature, bool) or not isinstance(feature, int) or not 0 <= feature < W:
        raise ConfigError(f"feature {feature!r} is out of range: the SAE has features 0..{W - 1}")
    return feature


def _check_amount(value, add) -> tuple[float | None, float | None]:
    if (value is None) == (add is None):
        raise ConfigError("give exactly one of value (clamp the feature to it) or add (add its decoder direction)")
    v = value if value is not None else add
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"the steering amount must be a number, got {v!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise ConfigError(f"the steering amount must be finite, got {v}")
    return (v, None) if value is not None else (None, v)


def steering_fn(sae, feature: int, *, value=None, add=None, skip_first: bool = True):
    """The replacement a -> a + (x_hat(f') - x_hat(f)) for ``replace_output``; (B, T, d) or (B, d)."""
    feature = _check_feature(sae, feature)
    value, add = _check_amount(value, add)
    direction = (sae.W_dec[feature].detach() / sae.scale.detach())          # original space

    def fn(a: torch.Tensor) -> torch.Tensor:
        shape = a.shape
        x = a.reshape(-1, shape[-1])
        with torch.no_grad():
            fi = sae.encode_features(x.to(direction.dtype))[:, feature]
        delta = (value - fi) if value is not None else torch.full_like(fi, add)
        delta = delta.view(*shape[:-1], 1)
        if skip_first and a.dim() == 3:                                      # the BOS position
            delta = delta.clone()
            delta[:, 0] = 0
        return a + (delta * direction).to(a.dtype)
    return fn


@contextmanager
def steering(lm, sae, hook: str, feature: int, *, value=None, add=None):
    """Within the block the model runs steered (the first position is left alone when it is BOS)."""
    skip = lm.bos_id is not None and lm.kind == "causal" and bool(lm.prefix)
    with replace_output(lm.model, hook, steering_fn(sae, feature, value=value, add=add, skip_first=skip)):
        yield


def promoted_tokens(lm, sae, feature: int, n: int = 10) -> tuple[list[int], list[float]]:
    """The ``n`` tokens whose logits the feature's decoder direction raises most (final norm ignored)."""
    if lm.kind != "causal" or lm.unembed is None:
        raise ConfigError(f"{lm.name} is not a causal language model with an unembedding; nothing to promote")
    feature = _check_feature(sae, feature)
    with torch.no_grad():
        direction = sae.W_dec[feature].detach().float() / sae.scale.float()
        logits = lm.unembed.detach().float() @ direction.to(lm.unembed.device)
        v, i = logits.cpu().topk(min(n, len(logits)))
    return i.tolist(), v.tolist()


@torch.no_grad()
def _generate(lm, ids: list[int], max_new_tokens: int, temperature: float, seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(int(seed))
    ids = list(ids)
    limit = lm.max_length or (len(ids) + max_new_tokens)
    eos = getattr(getattr(lm.model, "config", None), "eos_token_id", None)
    for _ in range(max_new_tokens):
        window = ids[-limit:]
        if lm.prefix and window[:len(lm.prefix)] != list(lm.prefix):
            window = list(lm.prefix) + window[len(lm.prefix):]
        logits = lm.forward(torch.tensor([window]))[0, -1].float().cpu()   # the CPU generator draws
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            p = F.softmax(logits / temperature, dim=-1)
            nxt = int(torch.multinomial(p, 1, generator=gen))
        ids.append(nxt)
        if eos is not None and nxt == eos:
            break
    return ids


@torch.no_grad()
def _target_logprob(lm, seqs: list[list[int]], starts: list[int], targets: torch.Tensor) -> float:
    """Mean log p(target) over targets and the positions predicting tokens start.. of each sequence."""
    vals = []
    for ids, s in zip(seqs, starts):
        if len(ids) < 2:
            continue
        logp = F.log_softmax(lm.forward(torch.tensor([ids]))[0, :-1].float().cpu(), dim=-1)    # predicts ids[1:]
        rows = logp[max(0, s - 1):]
        if len(rows):
            vals.append(rows[:, targets].mean())
    return float(torch.stack(vals).mean()) if vals else float("nan")


@torch.no_grad()
def cross_entropy(lm, ids: list[int], window: int | None = None) -> float:
    """Mean next-token cross-entropy (nats) of a token sequence, in windows that start with BOS."""
    window = min(window or lm.max_length or 256, lm.max_length or 10 ** 9)
    pre = list(lm.prefix)
    body = window - len(pre)
    tot, cnt = 0.0, 0
    for s in range(0, len(ids), body):
        w = pre + list(ids[s:s + body])
        if len(w) < 2:
            continue
        logits = lm.forward(torch.tensor([w]))[0, :-1].float().cpu()
        tgt = torch.tensor(w[1:])
        tot += float(F.cross_entropy(logits, tgt, reduction="sum"))
        cnt += len(tgt)
    if cnt == 0:
        raise DataError("the text for the cross-entropy gave no tokens")
    return tot / cnt


def find_unrelated_text() -> Path | None:
    """$ZSPACE_DATA/text/wizard-of-oz.txt or the repository's ../shared/data copy, if present."""
    roots = [os.environ["ZSPACE_DATA"]] if os.environ.get("ZSPACE_DATA") else []
    roots += [Path(__file__).resolve().parents[4] / "shared" / "data", Path.cwd() / "data",
              Path.cwd().parent / "shared" / "data"]
    for r in roots:
        p = Path(r) / "text" / UNRELATED_TEXT
        if p.is_file():
            return p
    return None


@dataclass
class SteerResult:
    feature: int
    value: float | None
    add: float | None
    prompt: str
    temperature: float
    seeds: list[int]
    target_tokens: list[str]                     # the feature's top promoted tokens
    target_ids: list[int]
    feature_activation: float                    # the feature's mean activation over the prompt (BOS excluded)
    plain: list[str]                             # completions without steering (text after the prompt)
    steered: list[str]                           # the same seeds, steered
    target_logprob_plain: float                  # mean log p(target) at the generated positions, unsteered
    target_logprob_steered: float                # ... of the steered completions, steered
    target_logprob_teacher: float                # ... on the unsteered completions' tokens, run steered
    prompt_logprob_plain: float                  # mean log p(target) over the prompt's next-token predictions
    prompt_logprob_steered: float
    ce_text: str | None = None                   # the unrelated text's source
    ce_tokens: int = 0
    ce_plain: float | None = None                # nats/token
    ce_steered: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def logprob_change(self) -> float:
        """Steered minus unsteered mean target log-probability, each over its own completions."""
        return self.target_logprob_steered - self.target_logprob_plain

    @property
    def prompt_logprob_change(self) -> float:
        return self.prompt_logprob_steered - self.prompt_logprob_plain

    @property
    def ce_change(self) -> float | None:
        return None if self.ce_plain is None else self.ce_steered - self.ce_plain

    def summary(self) -> str:
        amount = f"value {self.value:g}" if self.value is not None else f"add {self.add:g}"
        lines = [f"feature {self.feature} ({amount}; its mean activation on the prompt {self.feature_activation:.3g})",
                 f"target tokens: {' '.join(repr(t) for t in self.target_tokens)}",
                 f"mean log p(target) at generated positions: {self.target_logprob_plain:.3f} -> "
                 f"{self.target_logprob_steered:.3f} ({self.logprob_change:+.3f}); on the unsteered tokens run "
                 f"steered {self.target_logprob_teacher:.3f}",
                 f"over the prompt: {self.prompt_logprob_plain:.3f} -> {self.prompt_logprob_steered:.3f} "
                 f"({self.prompt_logprob_change:+.3f})"]
        if self.ce_plain is not None:
            lines.append(f"CE on {self.ce_text} ({self.ce_tokens} tokens): {self.ce_plain:.4f} -> "
                         f"{self.ce_steered:.4f} nats ({self.ce_change:+.4f})")
        for k, (a, b) in enumerate(zip(self.plain, self.steered)):
            lines += [f"[seed {self.seeds[k]}] plain:   {self.prompt}{a}", f"[seed {self.seeds[k]}] steered: {self.prompt}{b}"]
        return "\n".join(lines)


@torch.no_grad()
def steer(lm, sae, hook: str, prompt: str, feature: int, *, value=None, add=None, max_new_tokens: int = 40,
          seed: int = 0, samples: int = 3, temperature: float = 1.0, targets: int = 10,
          ce_text: str | Path | None = "auto", ce_tokens: int = 2048) -> SteerResult:
    """Completions of ``prompt`` with and without the feature clamped (``value``) or added (``add``).

    ``ce_text``: text (a string, or a file's path) for the unrelated-text cross-entropy; "auto" reads a
    slice of wizard-of-oz.txt when found, None skips it. ``ce_tokens`` bounds its length.
    """
    if lm.kind != "causal":
        raise ConfigError(f"{lm.name} is an encoder; steering generates text, which needs a causal model")
    resolve_hook(lm, hook)
    feature = _check_feature(sae, feature)
    value, add = _check_amount(value, add)
    for name, v, lo in (("max_new_tokens", max_new_tokens, 1), ("samples", samples, 1), ("targets", targets, 1),
                        ("ce_tokens", ce_tokens, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
    if not (isinstance(temperature, (int, float)) and temperature >= 0 and temperature == temperature):
        raise ConfigError(f"temperature must be >= 0 (0: greedy), got {temperature!r}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError("the prompt is empty")
    was_lm, was_sae = lm.model.training, sae.training
    lm.model.eval()
    sae.eval()
    try:
        ids = lm.tokenize(prompt)[0]
        if lm.max_length and len(ids) >= lm.max_length:
            raise ConfigError(f"the prompt has {len(ids)} tokens; {lm.name} takes {lm.max_length} positions")
        from .hooks import activations
        a = activations(lm, hook, torch.tensor([ids]))[0].to(sae.W_dec.device)
        f_prompt = sae.encode_features(a[len(lm.prefix):] if len(ids) > len(lm.prefix) else a)[:, feature]
        t_ids, _ = promoted_tokens(lm, sae, feature, targets)
        tgt = torch.tensor(t_ids)
        seeds = [seed + k for k in range(samples)]
        plain = [_generate(lm, ids, max_new_tokens, float(temperature), s) for s in seeds]
        with steering(lm, sae, hook, feature, value=value, add=add):
            steered = [_generate(lm, ids, max_new_tokens, float(temperature), s) for s in seeds]
            lp_steered = _target_logprob(lm, steered, [len(ids)] * samples, tgt)
            lp_teacher = _target_logprob(lm, plain, [len(ids)] * samples, tgt)
            pr_steered = _target_logprob(lm, [ids], [len(lm.prefix) or 1], tgt)
        lp_plain = _target_logprob(lm, plain, [len(ids)] * samples, tgt)
        pr_plain = _target_logprob(lm, [ids], [len(lm.prefix) or 1], tgt)
        res = SteerResult(feature=feature, value=value, add=add, prompt=prompt, temperature=float(temperature),
                          seeds=seeds, target_tokens=[lm.token_str(t) for t in t_ids], target_ids=t_ids,
                          feature_activation=float(f_prompt.mean()),
                          plain=[_continuation(lm, ids, s) for s in plain],
                          steered=[_continuation(lm, ids, s) for s in steered],
                          target_logprob_plain=lp_plain, target_logprob_steered=lp_steered,
                          target_logprob_teacher=lp_teacher, prompt_logprob_plain=pr_plain,
                          prompt_logprob_steered=pr_steered)
        text, source = _ce_text(ce_text)
        if text is not None:
            toks = lm.tokenize(text, special=False)[0][:ce_tokens]
            if toks:
                res.ce_text, res.ce_tokens = source, len(toks)
                res.ce_plain = cross_entropy(lm, toks)
                with steering(lm, sae, hook, feature, value=value, add=add):
                    res.ce_steered = cross_entropy(lm, toks)
        return res
    finally:
        lm.model.train(was_lm)
        sae.train(was_sae)


def _continuation(lm, prompt_ids, ids) -> str:
    full, head = lm.decode(ids[len(lm.prefix):]), lm.decode(prompt_ids[len(lm.prefix):])
    return full[len(head):] if full.startswith(head) else lm.decode(ids[len(prompt_ids):])


def _ce_text(ce_text) -> tuple[str | None, str | None]:
    if ce_text is None:
        return None, None
    if isinstance(ce_text, str) and ce_text == "auto":
        p = find_unrelated_text()
        if p is None:
            return None, None
        return p.read_text(encoding="utf-8", errors="replace")[:40_000], p.name
    if isinstance(ce_text, Path) or (isinstance(ce_text, str) and len(ce_text) < 4096 and "\n" not in ce_text
                                     and Path(ce_text).is_file()):
        p = Path(ce_text)
        if not p.is_file():
            raise DataError(f"{p}: no such text file for the cross-entropy")
        return p.read_text(encoding="utf-8", errors="replace")[:400_000], p.name
    return str(ce_text), "<given text>"


__all__ = ["SteerResult", "steer", "steering", "steering_fn", "promoted_tokens", "cross_entropy",
           "find_unrelated_text"]
