"""The SAE feature browser and steering, on a tiny random Llama (tok512 tokenizer) and a few
thousand harvested tokens: statistics against brute force, contexts, the page (in headless Chromium
when installed), steering's no-op and its effect on the promoted tokens, the CLI handlers."""
import argparse
import html as htmllib
import json
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from zspace.data.shards import ShardStore
from zspace.errors import ConfigError
from zspace.sae import LanguageModel, Llama2cTokenizer, harvest, replace_output
from zspace.sae.browser import HIST_EDGES, feature_summaries, write_browser
from zspace.sae.steer import promoted_tokens, steer, steering, steering_fn

from .browser import SKIP_REASON, chromium_binary, open_in_chromium

torch.set_num_threads(1)
import transformers  # noqa: E402  (a dependency of the package)

SHARED = Path(__file__).resolve().parent / "data"   # real files shipped with the tests (data/README.md)
STORIES = SHARED / "models" / "stories260K"
TEXT = SHARED / "text" / "tinystories-lower.txt"
HOOK = "resid_post.1"


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(50)           # logits with a range (random init leaves them near uniform)
    return LanguageModel(model=model, tokenizer=Llama2cTokenizer(STORIES / "tok512.bin"), name="tiny-llama",
                         kind="causal", bos_id=1, pad_id=0, prefix=(1,), max_length=64,
                         unembed=model.lm_head.weight)


@pytest.fixture(scope="module")
def store(lm, tmp_path_factory):
    return harvest(lm, HOOK, TEXT, tmp_path_factory.mktemp("acts") / "store", context=32, max_tokens=3000,
                   progress=False, rows_per_shard=1000)


@pytest.fixture(scope="module")
def sae(store):
    from zspace.models.sae import SAEConfig, SparseAutoencoder

    torch.manual_seed(1)
    m = SparseAutoencoder(SAEConfig(input_shape=(32,), width=96, kind="topk", k=4)).eval()
    m.init_from_data(torch.from_numpy(store.read(np.arange(len(store)))))
    with torch.no_grad():
        m.b_enc[:8] -= 50.0                     # a few features that never fire: dead
    return m


@pytest.fixture(scope="module")
def dense(sae, store):
    with torch.no_grad():
        return sae.encode_features(torch.from_numpy(store.read(np.arange(len(store))))).numpy()


@pytest.fixture(scope="module")
def summaries(sae, store, lm):
    return feature_summaries(sae, store, lm, top=5, window=4, batch_size=700, progress=False)


def test_densities_means_and_histograms_equal_brute_force(summaries, dense):
    n = len(dense)
    assert summaries.tokens == n
    on = dense > 0
    for s in summaries.features:
        col = dense[:, s.id]
        assert s.fires == int(on[:, s.id].sum())
        assert s.density == pytest.approx(on[:, s.id].mean())
        assert s.max_activation == pytest.approx(col.max(), rel=1e-5)
        assert s.mean_activation == pytest.approx(col[col > 0].mean() if s.fires else 0.0, rel=1e-4)
        assert sum(s.histogram) == s.fires
        want = np.bincount(np.clip(np.searchsorted(HIST_EDGES, col[col > 0], side="right") - 1, 0,
                                   len(HIST_EDGES) - 2), minlength=len(HIST_EDGES) - 1)
        assert np.abs(np.array(s.histogram) - want).sum() <= 2        # float32 vs float64 at bin edges
    assert set(summaries.dead) >= set(range(8))
    assert set(summaries.dead) == {i for i in range(dense.shape[1]) if not on[:, i].any()}


def test_top_contexts_are_the_true_top_activations(summaries, dense, store, lm):
    tok, doc, pos = (store.column(c) for c in ("token", "doc", "pos"))
    for s in summaries.features:
        col = dense[:, s.id]
        want = np.sort(col[col > 0])[::-1][:5]
        got = np.array([c.activation for c in s.contexts])
        np.testing.assert_allclose(got, want, rtol=1e-5)
        for c in s.contexts:
            assert col[c.row] == pytest.approx(c.activation, rel=1e-5)
            assert (doc[c.row], pos[c.row]) == (c.doc, c.pos)
            rows = [r for r in range(c.row - 4, c.row + 2) if 0 <= r < len(doc) and doc[r] == c.doc]
            assert c.tokens == [lm.token_str(int(tok[r])) for r in rows]
            np.testing.assert_allclose(c.acts, col[rows], rtol=1e-5, atol=1e-7)
            assert c.acts[c.center] == pytest.approx(c.activation, rel=1e-5)
    s = next(f for f in summaries.features if not f.dead)
    assert len(s.promoted) == len(s.suppressed) == 10
    assert s.promoted[0][1] >= s.promoted[-1][1] > s.suppressed[-1][1]


def test_promoted_tokens_are_the_unembedding_of_the_decoder_direction(summaries, sae, lm):
    W = (lm.unembed.detach() @ (sae.W_dec.detach() / sae.scale).t()).t()       # (width, vocab)
    i = next(f.id for f in summaries.features if not f.dead)
    ids, vals = promoted_tokens(lm, sae, i, 10)
    assert ids == W[i].topk(10).indices.tolist()
    assert [t for t, _ in summaries.features[i].promoted] == [lm.token_str(t) for t in ids]
    assert [t for t, _ in summaries.features[i].suppressed] == [lm.token_str(t) for t in W[i].topk(10, largest=False).indices]


def test_limit_reads_only_the_first_rows(sae, store, lm, dense):
    s = feature_summaries(sae, store, lm, top=3, window=2, batch_size=256, limit=1000, progress=False)
    assert s.tokens == 1000
    assert [f.fires for f in s.features] == (dense[:1000] > 0).sum(0).tolist()
    assert all(c.row < 1000 for f in s.features for c in f.contexts)


def test_bad_arguments_raise_config_errors(sae, store, lm):
    for kw in ({"top": 0}, {"window": -1}, {"limit": 0}, {"batch_size": 0}):
        with pytest.raises(ConfigError):
            feature_summaries(sae, store, lm, progress=False, **kw)
    with pytest.raises(ConfigError, match="html"):
        write_browser(feature_summaries(sae, store, lm, limit=200, progress=False), Path(tempfile.gettempdir()) / "x.txt")


def _page(summaries, tmp_path):
    out = write_browser(summaries, tmp_path / "features.html", {"run": "test-run"})
    return out, out.read_text(encoding="utf-8")


def test_page_is_self_contained_with_every_feature(summaries, tmp_path):
    out, page = _page(summaries, tmp_path)
    assert not re.search(r'(src|href)="(https?:|//)', page) and "<link" not in page
    live = [f.id for f in summaries.features if not f.dead]
    assert [int(i) for i in re.findall(r'class="card" data-id="(\d+)"', page)] == live
    dead = re.search(r'<p id="dead">([^<]*)</p>', page).group(1)
    assert [int(i) for i in dead.split()] == summaries.dead
    for word in ("tiny-llama", HOOK, "width=96", "3,000", "test-run", "final RMSNorm ignored"):
        assert word in htmllib.unescape(page), word
    assert page.count("<svg") == len(live)
    f = next(s for s in summaries.features if not s.dead)
    assert htmllib.escape(f.contexts[0].tokens[f.contexts[0].center].replace("\n", "\u21b5")) in page


def _dump_dom(page: Path, script: str) -> str:
    """The page's DOM after ``script`` ran at load (headless Chromium --dump-dom)."""
    with tempfile.TemporaryDirectory(prefix="zspace-chromium-") as tmp:
        p = Path(tmp) / "page.html"
        p.write_text(page.read_text(encoding="utf-8").replace(
            "</body>", f"<script>window.addEventListener('load',function(){{{script}}});</script></body>"),
            encoding="utf-8")
        proc = subprocess.run([chromium_binary(), "--headless=new", "--no-sandbox", "--disable-gpu",
                               "--disable-dev-shm-usage", "--no-first-run", f"--user-data-dir={Path(tmp) / 'prof'}",
                               "--virtual-time-budget=10000", "--dump-dom", p.as_uri()],
                              capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    return proc.stdout


def test_page_opens_in_chromium_and_its_search_filters(summaries, tmp_path):
    if chromium_binary() is None:
        pytest.skip(SKIP_REASON)
    out, page = _page(summaries, tmp_path)
    assert open_in_chromium(out)["errors"] == []
    live = [f for f in summaries.features if not f.dead]
    word = max(live[0].contexts[0].tokens, key=len).strip().lower()
    want_word = [f.id for f in live if word in _card_text(page, f.id)]
    script = ("var r={all:zspaceFilter(''),id:zspaceFilter('#%d'),word:zspaceFilter(%s),none:zspaceFilter('zzqqxx')};"
              "var p=document.createElement('pre');p.id='__filter__';p.textContent=JSON.stringify(r);"
              "document.body.appendChild(p);" % (live[1].id, json.dumps(word)))
    m = re.search(r'<pre id="__filter__">(.*?)</pre>', _dump_dom(out, script), re.S)
    assert m, "the page's filter result is missing"
    r = json.loads(htmllib.unescape(m.group(1)))
    assert r["all"] == [f.id for f in live]
    assert r["id"] == [live[1].id]
    assert r["none"] == []
    assert live[0].id in r["word"] and r["word"] == want_word


def _card_text(page: str, i: int) -> str:
    m = re.search(r'<div class="card" data-id="%d">(.*?)</div></div>(?=<div class="card"|</main>)' % i, page, re.S)
    block = m.group(1) if m else ""
    return htmllib.unescape(re.sub(r"<[^>]+>", "", block.replace("<svg", "\0<svg"))).lower()


# ----------------------------------------------------------------------------------- steering

def _logits(lm, ids):
    with torch.no_grad():
        return lm.forward(torch.tensor([ids]))[0]


def test_steering_with_the_features_own_value_changes_nothing(lm, sae):
    from zspace.sae import activations

    # one token after BOS: the only steered position; clamp each of a few live features to its value
    ids = [1, lm.tokenize("once", special=False)[0][0]]
    with torch.no_grad():
        f = sae.encode_features(activations(lm, HOOK, torch.tensor([ids]))[0])[1]
    plain = _logits(lm, ids)
    for i in [int(j) for j in torch.nonzero(f).flatten()[:3]] + [9]:          # firing ones, and a silent one
        with steering(lm, sae, HOOK, i, value=float(f[i])):
            torch.testing.assert_close(_logits(lm, ids), plain, atol=1e-5, rtol=0)
    long = lm.tokenize("once upon a time there was a little dog")[0]
    before = _logits(lm, long)
    with steering(lm, sae, HOOK, 3, add=0.0):
        torch.testing.assert_close(_logits(lm, long), before, atol=1e-5, rtol=0)
    # and a non-trivial clamp does change them, but not at the BOS position
    with steering(lm, sae, HOOK, int(torch.nonzero(f).flatten()[0]), value=float(f.max()) * 20):
        steered = _logits(lm, ids)
    assert (steered[1] - plain[1]).abs().max() > 1e-3
    torch.testing.assert_close(steered[0], plain[0], atol=1e-6, rtol=0)


def test_steering_fn_keeps_the_error_term(sae):
    torch.manual_seed(0)
    a = torch.randn(2, 5, 32) / sae.scale
    fn = steering_fn(sae, 12, value=3.0, skip_first=True)
    out = fn(a)
    x = out.reshape(-1, 32)
    err_before = a.reshape(-1, 32) - sae.reconstruct(a.reshape(-1, 32))
    f_new = sae.encode_features(x)
    # position 0 untouched; elsewhere the change is (3 - f_12) W_dec[12] / scale exactly
    torch.testing.assert_close(out[:, 0], a[:, 0], atol=0, rtol=0)
    f_old = sae.encode_features(a.reshape(-1, 32))[:, 12].view(2, 5)
    want = a + ((3.0 - f_old)[..., None] * sae.W_dec[12] / sae.scale) * (torch.arange(5) > 0)[None, :, None]
    torch.testing.assert_close(out, want.detach(), atol=1e-6, rtol=1e-6)
    assert err_before.shape == x.shape and f_new.shape == (10, 96)


def test_steering_a_feature_high_raises_its_promoted_tokens(lm, sae, summaries):
    i = max((f for f in summaries.features if not f.dead), key=lambda f: f.fires).id
    prompt = "once upon a time, there was a little"
    r = steer(lm, sae, HOOK, prompt, i, value=float(summaries.features[i].max_activation) * 10, max_new_tokens=6,
              samples=2, seed=3, ce_text="the wizard of oz lived in the emerald city with a lion.")
    assert r.prompt_logprob_steered > r.prompt_logprob_plain + 0.5, r.summary()
    assert r.target_logprob_teacher > r.target_logprob_plain + 0.5
    assert r.target_ids == promoted_tokens(lm, sae, i)[0]
    assert len(r.plain) == len(r.steered) == 2 and r.seeds == [3, 4]
    assert r.ce_plain is not None and r.ce_steered is not None and r.ce_tokens > 5
    # the same seeds without steering give the same text; temperature 0 is greedy and repeatable
    r0 = steer(lm, sae, HOOK, prompt, i, add=0.0, max_new_tokens=6, samples=2, seed=3, ce_text=None)
    assert r0.plain == r0.steered == r.plain
    g = steer(lm, sae, HOOK, prompt, i, add=0.0, max_new_tokens=4, samples=2, temperature=0, ce_text=None)
    assert g.plain[0] == g.plain[1]
    assert "feature" in r.summary() and "CE on" in r.summary()


def test_steering_bad_input(lm, sae):
    with pytest.raises(ConfigError, match="out of range"):
        steer(lm, sae, HOOK, "once", 96, value=1.0)
    with pytest.raises(ConfigError, match="exactly one"):
        steer(lm, sae, HOOK, "once", 1)
    with pytest.raises(ConfigError, match="exactly one"):
        steer(lm, sae, HOOK, "once", 1, value=1.0, add=1.0)
    with pytest.raises(ConfigError):
        steer(lm, sae, HOOK, "", 1, value=1.0)
    with pytest.raises(ConfigError):
        steer(lm, sae, "resid_post.9", "once", 1, value=1.0)


# ----------------------------------------------------------------------------------- the CLI parts

@pytest.fixture(scope="module")
def stories_run(tmp_path_factory):
    """A real SAE run over 3000 harvested stories260K tokens (a few training steps)."""
    import zspace
    from zspace.models.sae import SAEConfig, SparseAutoencoder
    from zspace.sae import load_language_model

    root = tmp_path_factory.mktemp("stories")
    lm = load_language_model(STORIES)
    harvest(lm, "resid_post.2", TEXT, root / "acts", context=64, max_tokens=3000, progress=False)
    splits = zspace.load_dataset(str(root / "acts"), test_fraction=0.1)
    torch.manual_seed(0)
    m = SparseAutoencoder(SAEConfig(input_shape=(64,), width=128, kind="topk", k=8))
    m.init_from_data(torch.from_numpy(splits.train.read(np.arange(0, len(splits.train), 5))))
    zspace.train(m, splits, out=root / "sae", config=zspace.TrainConfig(epochs=1, batch_size=256, lr=1e-3,
                 lr_schedule="constant", threads=1), progress=False, figures=False)
    return root


def _parse(argv):
    from zspace.sae.cli_parts import add_browse_steer_parsers

    p = argparse.ArgumentParser()
    add_browse_steer_parsers(p.add_subparsers(dest="cmd", required=True), argparse.ArgumentParser)
    return p.parse_args(argv)


def test_cli_browse_and_steer(stories_run, capsys, monkeypatch):
    from zspace.sae.cli_parts import run_browse, run_steer

    monkeypatch.setenv("ZSPACE_DATA", str(SHARED))
    out = stories_run / "page.html"
    assert run_browse(_parse(["browse", str(stories_run / "sae"), "--out", str(out), "--top", "3",
                              "--no-progress"])) == 0
    page = out.read_text(encoding="utf-8")
    assert "stories260K" in page and "resid_post.2" in page and 'class="card"' in page
    assert run_steer(_parse(["steer", str(stories_run / "sae"), "--feature", "5", "--value", "8", "--prompt",
                             "once upon a time", "--tokens", "5", "--samples", "1",
                             "--json", str(stories_run / "s.json")])) == 0
    text = capsys.readouterr().out
    assert "plain:" in text and "steered:" in text and "CE on wizard-of-oz.txt" in text
    assert json.loads((stories_run / "s.json").read_text())["feature"] == 5
    for argv, msg in ((["--feature", "128", "--value", "1"], "out of range"), (["--feature", "1"], "--value"),
                      (["--feature", "1", "--add", "1", "--model", "nonesuch"], "unknown language model")):
        with pytest.raises(ConfigError, match=msg):
            run_steer(_parse(["steer", str(stories_run / "sae"), "--prompt", "once", *argv]))
    with pytest.raises(ConfigError, match="html"):
        run_browse(_parse(["browse", str(stories_run / "sae"), "--out", str(stories_run / "p.txt")]))


def test_sae_verbs_on_cpu_give_the_default_numbers(stories_run, capsys, monkeypatch):
    from zspace.cli import main

    monkeypatch.setenv("ZSPACE_DATA", str(SHARED))
    run = stories_run / "sae"
    results = []
    for extra, name in (([], "a"), (["--device", "cpu"], "b")):
        assert main(["sae", "eval", str(run), "--corpus", str(TEXT), "--fidelity-tokens", "300", "--limit", "200",
                     "--json", str(stories_run / f"eval-{name}.json"), *extra]) == 0
        results.append(json.loads((stories_run / f"eval-{name}.json").read_text()))
        assert main(["sae", "harvest", "--model", str(STORIES), "--hook", "resid_post.1", "--corpus", str(TEXT),
                     "--context", "32", "--max-tokens", "200", "--no-progress", "--out",
                     str(stories_run / f"acts-{name}"), *extra]) == 0
    assert results[0] == results[1] and "ce_loss_recovered" in json.dumps(results[0])
    a, b = (ShardStore(stories_run / f"acts-{n}") for n in "ab")
    assert len(a) == len(b) == 200 and np.array_equal(a.read(np.arange(200)), b.read(np.arange(200)))
    capsys.readouterr()
