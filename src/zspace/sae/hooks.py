"""Hook points on any ``nn.Module``, and activations harvested into a shard store or streamed.

A hook point is a module path from ``named_modules()`` (``model.layers.2`` is the residual
stream after block 2 of an HF Llama, ``model.layers.2.mlp`` its MLP output) or an alias that
finds the model's block list itself: ``resid_post.L``, ``mlp_out.L``, ``attn_out.L``. A hook
captures the module's output (the first element when it returns a tuple).

:func:`harvest` writes one row (d,) per token into :class:`zspace.data.ShardWriter` with the
columns ``token`` (int32), ``doc`` (int64, the document's index in the corpus) and ``pos``
(int32, the token's index in its document; -1 for BOS/CLS/SEP kept with
``exclude_special=False``). Documents are cut into windows of ``context`` tokens including the
model's special tokens; padding is never stored. The row stream is a deterministic function
of the corpus and settings, so a resumed harvest skips the rows already stored by tokenising
alone (no forward pass) and checks the last stored row's (doc, pos) against it.
"""
from __future__ import annotations

import re
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.progress import Progress
from ..core.io import write_json_atomic
from ..data.shards import MANIFEST, ShardStore, ShardWriter, is_store
from ..errors import ConfigError, DataError
from .corpus import corpus_digest, read_corpus
from .lm import LanguageModel

ALIASES = ("resid_post", "mlp_out", "attn_out")
_BLOCK_LISTS = ("layers", "layer", "h", "blocks")
_ATTN = ("self_attn", "attn", "attention.output.dense", "self_attention", "attention")
_MLP = ("mlp", "output.dense", "feed_forward", "ffn")
STORE_DTYPES = ("float16", "bfloat16", "float32")


def _module(model) -> nn.Module:
    return model.model if isinstance(model, LanguageModel) else model


def block_list(model) -> tuple[str, nn.ModuleList] | None:
    """(path, blocks) of the model's transformer blocks: the first ModuleList named layers/layer/h/blocks."""
    for name, m in _module(model).named_modules():
        if isinstance(m, nn.ModuleList) and len(m) and name.rsplit(".", 1)[-1] in _BLOCK_LISTS:
            return name, m
    return None


def _examples(model) -> str:
    found = block_list(model)
    if found is None:
        names = [n for n, _ in _module(model).named_modules() if n][:4]
        return ", ".join(names) or "(the model has no submodules)"
    path, blocks = found
    last = len(blocks) - 1
    return (f"resid_post.L, mlp_out.L, attn_out.L with L in 0..{last}, or a module path such as "
            f"{path}.{last}, {path}.0.{next(iter(dict(blocks[0].named_children())), '')}".rstrip("."))


def resolve_hook(model, hook: str) -> str:
    """The module path a hook point names; ConfigError (one line, with valid examples) otherwise."""
    mod = _module(model)
    modules = dict(mod.named_modules())
    if not isinstance(hook, str) or not hook:
        raise ConfigError(f"a hook point must be a non-empty string; use {_examples(model)}")
    found = block_list(model)
    m = re.fullmatch(r"(resid_post|mlp_out|attn_out)\.(-?\d+)", hook)
    if m:
        if found is None:
            raise ConfigError(f"hook {hook!r}: the model has no block list (layers/layer/h/blocks) for aliases; "
                              f"use a module path such as {_examples(model)}")
        path, blocks = found
        layer = int(m.group(2))
        if not 0 <= layer < len(blocks):
            raise ConfigError(f"hook {hook!r}: layer {layer} out of range; the model has {len(blocks)} layers "
                              f"(0..{len(blocks) - 1})")
        if m.group(1) == "resid_post":
            return f"{path}.{layer}"
        for child in (_ATTN if m.group(1) == "attn_out" else _MLP):
            if f"{path}.{layer}.{child}" in modules:
                return f"{path}.{layer}.{child}"
        raise ConfigError(f"hook {hook!r}: block {path}.{layer} has no {m.group(1)[:-4]} module "
                          f"(children: {', '.join(dict(blocks[layer].named_children()))}); use a module path")
    if hook in modules and hook:
        return hook
    if found is not None:
        path, blocks = found
        m = re.fullmatch(re.escape(path) + r"\.(\d+)(\..*)?", hook)
        if m and int(m.group(1)) >= len(blocks):
            raise ConfigError(f"hook {hook!r}: layer {m.group(1)} out of range; the model has {len(blocks)} "
                              f"layers (0..{len(blocks) - 1})")
    raise ConfigError(f"unknown hook point {hook!r}: use {_examples(model)}")


def _first(out):
    """The activation tensor of a module's output: the output itself or its first element."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) or hasattr(out, "to_tuple"):
        return out[0]
    raise ConfigError(f"the hooked module returned {type(out).__name__}, not a tensor or a tuple of them")


class _StopForward(Exception):
    """Raised by a capturing hook to skip the layers after it."""


@contextmanager
def capture(model, hooks):
    """``with capture(model, ["resid_post.2"]) as acts: model(...)``; then ``acts[hook]`` is the output."""
    mod = _module(model)
    hooks = [hooks] if isinstance(hooks, str) else list(hooks)
    modules = dict(mod.named_modules())
    acts, handles = {}, []
    for h in hooks:
        target = modules[resolve_hook(model, h)]

        def fn(_m, _inp, out, h=h):
            acts[h] = _first(out)
        handles.append(target.register_forward_hook(fn))
    try:
        yield acts
    finally:
        for hd in handles:
            hd.remove()


@contextmanager
def replace_output(model, hook: str, fn):
    """Within the block, the hook point's output tensor ``a`` is replaced by ``fn(a)`` (same shape).

    Used to splice an SAE's reconstruction back into the model and to steer it. For modules that
    return tuples only the first element is replaced.
    """
    target = dict(_module(model).named_modules())[resolve_hook(model, hook)]

    def swap(_m, _inp, out):
        a = _first(out)
        new = fn(a)
        if not isinstance(new, torch.Tensor) or new.shape != a.shape:
            raise ConfigError(f"replace_output({hook!r}): fn must return a tensor of shape {tuple(a.shape)}, got "
                              f"{tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__}")
        if isinstance(out, torch.Tensor):
            return new
        if isinstance(out, tuple):
            return (new, *out[1:])
        if isinstance(out, list):
            return [new, *out[1:]]
        out[next(iter(out.keys()))] = new                  # a ModelOutput
        return out
    handle = target.register_forward_hook(swap)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def activations(lm: LanguageModel, hook: str, ids: torch.Tensor, mask: torch.Tensor | None = None,
                *, stop_early: bool = True) -> torch.Tensor:
    """(B, T, d) fp32 output of a hook point for (B, T) ids; the layers after it are skipped."""
    target = dict(lm.model.named_modules())[resolve_hook(lm, hook)]
    got = {}

    def fn(_m, _inp, out):
        got["a"] = _first(out)
        if stop_early:
            raise _StopForward
    handle = target.register_forward_hook(fn)
    was = lm.model.training
    lm.model.eval()
    try:
        with torch.autocast(lm.device.type, enabled=False):
            lm.forward(ids, mask)
    except _StopForward:
        pass
    finally:
        handle.remove()
        lm.model.train(was)
    if "a" not in got:
        raise ConfigError(f"hook {hook!r}: the module did not run during the forward pass")
    return got["a"].float()


# --------------------------------------------------------------------------- the row stream

def _documents(texts, split: str) -> tuple[list[str], str]:
    if isinstance(texts, (str, Path)):
        return read_corpus(texts, split), str(texts)
    docs = [str(t) for t in texts]
    if not any(d.strip() for d in docs):
        raise DataError("the corpus is empty: give at least one document with text")
    return docs, f"<{len(docs)} documents>"


def _windows(lm: LanguageModel, documents, context: int, exclude_special: bool):
    """Yields (doc, start, window ids, window positions of its rows), documents in order."""
    pre, suf = list(lm.prefix), list(lm.suffix)
    body = context - len(pre) - len(suf)
    for d, text in enumerate(documents):
        ids = lm.tokenizer.encode(text) if text.strip() else []
        for s in range(0, len(ids), body):
            piece = ids[s:s + body]
            window = pre + piece + suf
            rows = (range(len(pre), len(pre) + len(piece)) if exclude_special else range(len(window)))
            yield d, s, window, rows


def _check_context(lm: LanguageModel, context: int) -> None:
    need = len(lm.prefix) + len(lm.suffix) + 1
    if not isinstance(context, int) or context < need:
        raise ConfigError(f"context must be an integer of at least {need} tokens for {lm.name}, got {context!r}")
    if lm.max_length and context > lm.max_length:
        raise ConfigError(f"context {context} exceeds {lm.name}'s {lm.max_length} positions")


SORT_BATCHES = 4      # windows of this many batches are run sorted by length (less padding), rows kept in order


def _row_batches(lm, hook, documents, *, context, batch_size, exclude_special, skip_rows=0, max_rows=None,
                 state=None):
    """Yields (acts (n, d) float32 tensor, token, doc, pos) for the rows after the first ``skip_rows``,
    in document order.

    ``state`` (a dict) receives ``last_skipped``, the (doc, pos) of the last skipped row, so a
    resumed harvest can check it continues the same stream. Windows are run ``batch_size`` at a
    time, sorted by length within groups of ``SORT_BATCHES`` batches (less padding).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    state = {} if state is None else state
    n_pre, n_suf = len(lm.prefix), len(lm.suffix)

    def row_info(d, s, w, rows, lo, hi):
        j = np.arange(rows.start, rows.stop)[lo:hi]                      # window positions of the rows
        p = s + j - n_pre
        p[(j < n_pre) | (j >= len(w) - n_suf)] = -1
        return j, p

    def run(chunk):
        order = sorted(range(len(chunk)), key=lambda i: len(chunk[i][2]))
        per = [None] * len(chunk)
        for k in range(0, len(order), batch_size):
            sub = order[k:k + batch_size]
            ids, mask = lm.batch([chunk[i][2] for i in sub])
            a = activations(lm, hook, ids, mask).cpu()                      # (B, T, d)
            infos = [row_info(*chunk[i]) for i in sub]
            flat = np.concatenate([b * ids.shape[1] + j for b, (j, _) in enumerate(infos)])
            x = a.reshape(-1, a.shape[-1])[torch.from_numpy(flat)]
            for i, part in zip(sub, torch.split(x, [len(j) for j, _ in infos])):
                per[i] = part
        x = torch.cat(per)
        infos = [row_info(*c) for c in chunk]
        doc = np.concatenate([np.full(len(j), c[0], np.int64) for c, (j, _) in zip(chunk, infos)])
        finite = torch.isfinite(x).all(-1)
        if not finite.all():
            first = int(doc[int((~finite).nonzero()[0, 0])])
            raise DataError(f"hook {hook!r}: non-finite activations (NaN/Inf) in document {first}; "
                            "check the model's weights and inputs")
        tok = np.concatenate([np.asarray(c[2], np.int32)[j] for c, (j, _) in zip(chunk, infos)])
        pos = np.concatenate([p for _, p in infos]).astype(np.int32)
        return x, tok, doc, pos

    g, pending = 0, []
    for d, s, w, rows in _windows(lm, documents, context, exclude_special):
        if max_rows is not None and g >= max_rows:
            break
        n = len(rows)
        hi = n if max_rows is None else min(n, max_rows - g)
        lo = max(0, skip_rows - g)
        if lo > 0:                                                       # some or all rows stored already
            j = rows[min(lo, hi) - 1]
            state["last_skipped"] = (d, s + j - n_pre if n_pre <= j < len(w) - n_suf else -1)
        if lo < hi:
            pending.append((d, s, w, rows, lo, hi))
            if len(pending) == batch_size * SORT_BATCHES:
                yield run(pending)
                pending = []
        g += hi
    if pending:
        yield run(pending)


# --------------------------------------------------------------------------- harvest and stream

_CHECKED = ("model", "module", "context", "corpus_sha256", "exclude_special", "max_tokens")   # aliases may differ


def harvest(lm: LanguageModel, hook: str, texts, out, *, context: int = 128, batch_size: int = 32,
            max_tokens: int | None = None, dtype: str = "float16", exclude_special: bool = True,
            progress: bool = True, resume: bool = False, rows_per_shard: int = 65536,
            split: str = "auto") -> ShardStore:
    """Runs ``lm`` over a corpus (a text file's path or a list of documents) and stores the hook
    point's activations, one (d,) row per token, in the shard store ``out``; returns it opened.

    fp32 forward passes without gradient; rows stored as ``dtype`` (float16, bfloat16 or float32).
    ``resume=True`` continues a store this function started with the same settings (ConfigError if
    they differ); a finished store is returned as it is.
    """
    if dtype not in STORE_DTYPES:
        raise ConfigError(f"dtype {dtype!r}: use one of {', '.join(STORE_DTYPES)}")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise ConfigError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    _check_context(lm, context)
    module = resolve_hook(lm, hook)
    documents, corpus = _documents(texts, split)
    meta = {"kind": "activations", "model": lm.name, "hook": hook, "module": module, "context": context,
            "corpus": corpus, "corpus_sha256": corpus_digest(documents), "documents": len(documents),
            "exclude_special": bool(exclude_special), "max_tokens": max_tokens, "tokens": None,
            "complete": False}
    out = Path(out)
    if resume and is_store(out):
        writer = ShardWriter(out, resume=True, rows_per_shard=rows_per_shard)
        old = writer.manifest.get("metadata", {})
        for k in _CHECKED:
            if old.get(k) != meta[k]:
                raise ConfigError(f"{out}: cannot resume: the store was harvested with {k}={old.get(k)!r}, "
                                  f"this call has {meta[k]!r}")
        if writer.manifest["dtype"] != dtype:
            raise ConfigError(f"{out}: cannot resume: the store holds {writer.manifest['dtype']}, this call "
                              f"asks for {dtype}")
        if old.get("complete"):
            return ShardStore(out)
    else:
        ids, mask = lm.batch([list(lm.prefix) + lm.tokenizer.encode("a")[:1] + list(lm.suffix)])
        d = activations(lm, hook, ids, mask).shape[-1]
        writer = ShardWriter(out, (d,), dtype, columns={"token": "int32", "doc": "int64", "pos": "int32"},
                             rows_per_shard=rows_per_shard, metadata=meta)
    skip = writer.rows
    state = {}
    by_tokens = max_tokens is not None          # a token budget: count tokens, else documents
    bar = Progress(max_tokens if by_tokens else len(documents), f"harvest {hook}",
                   "tokens" if by_tokens else "documents", initial=skip if by_tokens else 0, enabled=progress)
    t0, n_new, checked = time.perf_counter(), 0, False
    try:
        for a, tok, doc, pos in _row_batches(lm, hook, documents, context=context, batch_size=batch_size,
                                             exclude_special=exclude_special, skip_rows=skip,
                                             max_rows=max_tokens, state=state):
            if skip and not checked:
                _check_continues(out, skip, state.get("last_skipped"))
                checked = True
            x = a.numpy()
            if dtype == "float16" and np.abs(x).max() > 65504:
                raise DataError(f"hook {hook!r}: activations up to {np.abs(x).max():.3g} overflow float16; "
                                "harvest with dtype='bfloat16' or 'float32'")
            writer.append(x, token=tok, doc=doc, pos=pos)
            n_new += len(x)
            bar.update((skip + n_new if by_tokens else int(doc[-1])) - bar.n)
            bar.set_postfix(tokens=str(skip + n_new), tok_s=f"{n_new / max(time.perf_counter() - t0, 1e-9):.0f}")
        if not by_tokens:
            bar.update(len(documents) - bar.n)
    finally:
        bar.close()
    total = skip + n_new
    if total == 0:
        raise DataError(f"the corpus {corpus} gave no tokens to harvest")
    writer.manifest["metadata"].update(tokens=total, complete=True,
                                       tokens_per_s=round(n_new / max(time.perf_counter() - t0, 1e-9), 1))
    if writer._buffered:
        return writer.close()
    write_json_atomic(out / MANIFEST, writer.manifest)       # nothing left to flush: record completion
    return ShardStore(out)


def _check_continues(out: Path, rows: int, expected) -> None:
    store = ShardStore(out)
    got = (int(store.column("doc", [rows - 1])[0]), int(store.column("pos", [rows - 1])[0]))
    store.release()
    if expected is not None and tuple(expected) != got:
        raise DataError(f"{out}: cannot resume: its last row is document {got[0]} position {got[1]}, but this "
                        f"corpus and settings put document {expected[0]} position {expected[1]} there")


def stream_activations(lm: LanguageModel, hook: str, texts, buffer_rows: int, seed: int, *,
                       batch_rows: int = 4096, context: int = 128, batch_size: int = 32,
                       exclude_special: bool = True, max_tokens: int | None = None, split: str = "auto"):
    """Yields shuffled (batch_rows, d) float32 activation batches without storing them.

    A shuffle buffer of ``buffer_rows`` rows: when full it is permuted (numpy generator seeded by
    ``seed``), the first half goes out in batches and the second half stays to mix with new rows;
    at the end of the corpus the rest goes out shuffled (the last batch may be shorter).
    """
    if not isinstance(buffer_rows, int) or buffer_rows < 2 or batch_rows < 1:
        raise ConfigError(f"buffer_rows must be an integer >= 2 and batch_rows >= 1, got {buffer_rows}, {batch_rows}")
    _check_context(lm, context)
    resolve_hook(lm, hook)
    documents, _ = _documents(texts, split)
    rng = np.random.default_rng(seed)
    buf, have, carry = [], 0, None
    for a, *_ in _row_batches(lm, hook, documents, context=context, batch_size=batch_size,
                              exclude_special=exclude_special, max_rows=max_tokens):
        buf.append(a)
        have += len(a)
        if have >= buffer_rows:
            x = torch.cat(buf)
            x = x[torch.from_numpy(rng.permutation(len(x)))]
            keep = buffer_rows // 2
            out_rows = x[:len(x) - keep]
            if carry is not None:
                out_rows = torch.cat([carry, out_rows])
            n_full = len(out_rows) // batch_rows * batch_rows
            for i in range(0, n_full, batch_rows):
                yield out_rows[i:i + batch_rows]
            carry = out_rows[n_full:] if n_full < len(out_rows) else None
            buf, have = [x[len(x) - keep:]], keep
    rest = [t for t in ([carry] if carry is not None else []) + buf if len(t)]
    if not rest:
        raise DataError("the corpus gave no tokens to stream")
    x = torch.cat(rest)
    x = x[torch.from_numpy(rng.permutation(len(x)))]
    for i in range(0, len(x), batch_rows):
        yield x[i:i + batch_rows]
