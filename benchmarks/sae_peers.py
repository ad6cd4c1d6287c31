"""zspace's sparse autoencoders against SAELens and EleutherAI's sparsify, side by side (issue 16).

Same stored activations for every library: stories260K's residual stream after block 2
(``resid_post.2``, the middle of its 5 layers, d = 64) and MiniLM's after layer 3
(``resid_post.3``, d = 384), harvested from tinystories-lower.txt with context 256 into a
zspace shard store, split into a data pack: the first 99% of rows for training (shuffled
once, seed 0), the last 1% held out for evaluation. Every library reads the same training
rows in the same batch order (the order zspace's trainer draws, written to ``order.npy``),
4096 rows a batch, for the same number of steps, with one torch thread, one library at a
time. TopK at widths 8x and 32x d, k in {8, 16, 32}, each library at its own default
learning rate (sparsify's scales with width; the value is printed).

Peers run in their own venvs (``/tmp/peer-eai-sparsify``, ``/tmp/peer-sae-lens``) through
benchmarks/peers/{sparsify,saelens}_side.py, which drive the peer's own SAE module and own
training step, and save the weights; those are loaded into a zspace ``SparseAutoencoder``
(kind topk, scale 1), checked against the peer's own reconstruction of 64 held-out rows
(1e-4), and measured with the same zspace code as zspace's own SAEs: FVU (variance about
the mean), L0 and dead fraction on the held-out rows, dead fraction over 1M training tokens
at 32x, and fidelity by splicing (CE loss recovered and KL for stories260K; sentence-
embedding cosine and nearest-neighbour agreement for MiniLM).

The Pareto part trains zspace's relu (several sparsity weights), topk and batchtopk (several
k) and jumprelu (several sparsity weights) at 8x on the stories260K store and draws FVU
against L0 (docs/figures/sae-pareto-stories260k.png).

    python benchmarks/sae_peers.py --threads 1                      # everything
    python benchmarks/sae_peers.py --threads 1 --part peers --models stories260k
    python benchmarks/sae_peers.py --threads 1 --part pareto
    python benchmarks/sae_peers.py --threads 1 --part init-scale
    python benchmarks/sae_peers.py --threads 2 --part aux
    python benchmarks/sae_peers.py --threads 2 --part data-init --reuse --minilm-expansions 8 32

The init-scale part is how the default initial encoder scale (``SAEConfig.encoder_scale``: W_enc
= s W_dec^T) was chosen: zspace's TopK at s in {0.25, 0.4, 0.577, 1} on every width/k cell of
both models at the peers' budget; for each model left out, s is the one with the best mean rank
over the other model's cells, and the table reports the left-out model's FVU at that s beside
sparsify's (from the peers part's cached results). It ran with the plain aux-k form.

The aux part is how the aux-k form (``SAEConfig.aux_rescale``) was chosen: at 32x, Gao et al.'s
plain loss, the rescaled one and none, per model and k; the form whose worst cell on the other
model has the fewest dead features (then the best mean FVU rank) is scored on the left-out model.

The data-init part is how the initial dictionary (``SAEConfig.data_init``) was chosen: decoder rows
from random directions (q = 0), from centred training examples (q = 1) or an even mix, on every
width/k cell of both models; the q meeting the most of the issue's targets on the other model
(FVU <= sparsify, < 1% dead at 32x) is scored on the left-out model.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SHARED_DATA, command_line, machine, update_section  # noqa: E402

import zspace.sae.train as sae_train  # noqa: E402
from zspace.data.loader import BatchLoader  # noqa: E402
from zspace.data.shards import ShardStore, ShardWriter  # noqa: E402
from zspace.data.transforms import Preprocessing  # noqa: E402
from zspace.models.sae import SAEConfig, SparseAutoencoder  # noqa: E402
from zspace.sae.corpus import read_corpus  # noqa: E402
from zspace.sae.hooks import harvest  # noqa: E402
from zspace.sae.lm import load_language_model  # noqa: E402

CORPUS = SHARED_DATA / "text" / "tinystories-lower.txt"
MODELS = {   # name: (model, hook, tokens harvested, default training budget in tokens)
    "stories260k": (str(SHARED_DATA / "models" / "stories260K"), "resid_post.2", 2_000_000, 1_048_576),
    "minilm": ("minilm", "resid_post.3", 2_000_000, 917_504),   # the corpus gives 990,329 tokens
}
PEERS = {"sparsify": ("/tmp/peer-eai-sparsify/bin/python", "sparsify_side.py", ()),
         # sparsify's forward under bf16 autocast, as it runs on a bf16 GPU (on a CPU it stays fp32)
         "sparsify-bf16": ("/tmp/peer-eai-sparsify/bin/python", "sparsify_side.py", ("--precision", "bf16")),
         "sae_lens": ("/tmp/peer-sae-lens/bin/python", "saelens_side.py", ())}
LIBRARIES = ("zspace", "sparsify", "sparsify-bf16", "sae_lens")
BATCH = 4096
CONTEXT = 256
DEAD_TOKENS = 1_000_000          # the issue's dead-fraction window at 32x
REUSED = (" (re-assembled from the per-SAE results that `python benchmarks/sae_peers.py --threads 1` "
          "measured and cached in --work; nothing retrained; load averages below are of the re-assembly)")
FIGURE = ROOT / "docs" / "figures" / "sae-pareto-stories260k.png"


# ---------------------------------------------------------------------------------- data
def prepare(name: str, work: Path) -> Path:
    """Harvests (or reuses) the model's activations and splits them into work/NAME/{train,test}
    (+ order.npy, the training rows in zspace's batch order); returns that folder."""
    model, hook, tokens, _ = MODELS[name]
    raw, pack = work / f"{name}-raw", work / name
    if not (pack / "order.npy").is_file():
        lm = load_language_model(model)
        t = time.perf_counter()
        store = harvest(lm, hook, str(CORPUS), raw, context=CONTEXT, max_tokens=tokens, resume=True, progress=False)
        print(f"{name}: {len(store)} rows of {store.example_shape} at {hook} ({time.perf_counter() - t:.0f} s)",
              flush=True)
        n = len(store)
        n_test = int(round(0.01 * n))
        train_rows = np.random.default_rng(0).permutation(n - n_test)   # one global shuffle
        for part, rows in (("train", train_rows), ("test", np.arange(n - n_test, n))):
            if (pack / part / "manifest.json").is_file():
                continue
            w = ShardWriter(pack / part, store.example_shape, store.manifest["dtype"],
                            metadata={**store.metadata, "rows_of": str(raw), "part": part})
            for s in range(0, len(rows), 65536):
                w.append(store.read(rows[s:s + 65536]))
            w.close()
        docs = store.column("doc", [n - n_test])
        train = ShardStore(pack / "train")
        loader = BatchLoader(train, BATCH, Preprocessing("none"), shuffle=True, seed=0)
        order = loader._order(0)
        first = next(loader.epoch(0))
        assert np.array_equal(first.index, order[:BATCH]), "zspace's batch order differs from order.npy"
        np.save(pack / "order.npy", order)
        (pack / "held_out.json").write_text(json.dumps({"first_doc": int(docs[0]), "rows": n_test}))
    return pack


def held_out_texts(pack: Path) -> list[str]:
    """The corpus documents the held-out rows come from (the end of the corpus)."""
    first = json.loads((pack / "held_out.json").read_text())["first_doc"]
    return read_corpus(CORPUS)[first:]


# ------------------------------------------------------------------------------- zspace side
class _StepTimes:
    def __init__(self):
        self.t: list[float] = []

    def on_step_end(self, trainer):
        self.t.append(time.perf_counter())

    def on_eval(self, trainer, metrics):
        pass

    def on_checkpoint(self, trainer, path):
        pass

    def tokens_per_s(self) -> float:
        return (len(self.t) - 1) * BATCH / (self.t[-1] - self.t[0]) if len(self.t) > 1 else float("nan")


def train_zspace(pack: Path, out: Path, *, kind: str, width: int, k: int, steps: int, threads: int,
                 **options) -> tuple[SparseAutoencoder, dict]:
    """zspace.sae.train_sae with its defaults (schedule-free signum at 5e-3 / sqrt(width / 2^14),
    constant; TopK ranks its features in bf16 where the CPU has it natively), timed per step."""
    config = sae_train.default_config(width, kind, epochs=None, steps=steps, batch_size=BATCH, threads=threads, seed=0)
    lr, precision = config.lr, config.precision
    timer = _StepTimes()
    with mock.patch.object(sae_train, "train", partial(sae_train.train, callbacks=[timer])):
        run = sae_train.train_sae(pack, out, kind=kind, width=width, k=k, config=config, progress=False,
                                  overwrite=True, **options)
    c = run.model.config
    return run.model, {"library": "zspace", "lr": lr, "precision": precision, "steps": steps, "tokens": steps * BATCH,
                       "tokens_per_s": timer.tokens_per_s(), "threads": threads, "data_init": c.data_init_share,
                       "aux_rescale": c.aux_rescale, "aux_k": c.aux_k}


# --------------------------------------------------------------------------------- peer side
def run_peer(lib: str, pack: Path, out: Path, *, width: int, k: int, steps: int, threads: int) -> dict:
    python, script, extra = PEERS[lib]
    cmd = [python, str(ROOT / "benchmarks" / "peers" / script), *extra, "--train", str(pack / "train"),
           "--test", str(pack / "test"), "--order", str(pack / "order.npy"), "--steps", str(steps),
           "--batch-size", str(BATCH), "--width", str(width), "--k", str(k), "--seed", "0",
           "--threads", str(threads), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "WANDB_MODE": "disabled", "TQDM_DISABLE": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode or not lines:
        raise RuntimeError(f"{lib} failed (exit {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def sae_from_peer(npz: Path, k: int) -> tuple[SparseAutoencoder, float]:
    """The peer's weights in a zspace topk SAE (scale 1), and the largest difference between its
    reconstruction of the 64 check rows and the peer's own (ValueError above 1e-4)."""
    z = np.load(npz)
    W_enc, b_enc, W_dec, b_dec = (torch.from_numpy(z[n].astype(np.float32)) for n in ("W_enc", "b_enc", "W_dec", "b_dec"))
    if "rescale_acts_by_decoder_norm" in z and bool(z["rescale_acts_by_decoder_norm"]):
        norms = W_dec.norm(dim=1)               # SAELens ranks pre * ||W_dec,i|| and decodes f / ||W_dec,i||:
        W_enc, b_enc, W_dec = W_enc * norms, b_enc * norms, W_dec / norms[:, None]   # its own fold
    if "apply_b_dec_to_input" in z and not bool(z["apply_b_dec_to_input"]):
        b_enc = b_enc + b_dec @ W_enc            # zspace always subtracts b_dec before encoding
    width, d = W_dec.shape
    sae = SparseAutoencoder(SAEConfig(input_shape=(d,), width=width, kind="topk", k=k))
    scale = float(z["input_scale"]) if "input_scale" in z else 1.0
    with torch.no_grad():
        sae.scale.fill_(scale)
        for name, v in (("W_enc", W_enc), ("b_enc", b_enc), ("W_dec", W_dec), ("b_dec", b_dec * scale)):
            getattr(sae, name).copy_(v)
        sae.eval()
        x = torch.from_numpy(z["check_x"])
        diff = float((sae.reconstruct(x) - torch.from_numpy(z["check_xhat"])).abs().max())
    if not diff <= 1e-4:
        raise ValueError(f"{npz}: zspace's copy reconstructs the check rows {diff:.3g} away from the peer's own")
    return sae, diff


# ---------------------------------------------------------------------------------- measures
@torch.no_grad()
def dead_over_training_tokens(sae: SparseAutoencoder, pack: Path, tokens: int) -> tuple[float, int]:
    """Fraction of features with no activation over the first ``tokens`` training rows (batch order)."""
    train = ShardStore(pack / "train")
    order = np.load(pack / "order.npy")[:tokens]
    sae.eval()
    fired = torch.zeros(sae.config.width, dtype=torch.bool)
    for s in range(0, len(order), BATCH):
        rows = np.sort(order[s:s + BATCH])
        fired |= (sae.encode_features(torch.from_numpy(train.read(rows))) > 0).any(0)
    return float((~fired).double().mean()), len(order)


def measure(sae: SparseAutoencoder, pack: Path, lm, hook: str, texts, *, dead_tokens: int | None,
            fidelity_tokens: int) -> dict:
    test = ShardStore(pack / "test")
    fvu, l0, fires, n = sae_train.feature_statistics(sae, test)
    m = {"fvu": float(fvu), "l0": l0, "dead_held_out": float((fires == 0).double().mean()), "held_out_tokens": n}
    if dead_tokens:
        m["dead_train"], m["dead_train_tokens"] = dead_over_training_tokens(sae, pack, dead_tokens)
    if lm is not None:
        if lm.kind == "causal":
            m["fidelity"] = sae_train.causal_fidelity(lm, sae, hook, texts, context=CONTEXT, max_tokens=fidelity_tokens)
        else:
            m["fidelity"] = sae_train.encoder_fidelity(lm, sae, hook, [t[:400] for t in texts], max_texts=64)
    return m


# ---------------------------------------------------------------------------------- the grid
def peers_grid(name: str, pack: Path, work: Path, args) -> list[dict]:
    model, hook, _, default_budget = MODELS[name]
    budget = args.budget.get(name, default_budget)
    steps = budget // BATCH
    d = ShardStore(pack / "test").example_shape[0]
    lm = load_language_model(model)
    texts = held_out_texts(pack)
    results = []
    cache = work / "results" / name
    cache.mkdir(parents=True, exist_ok=True)
    for lib in args.libraries:            # one library after another, never two at once
        for expansion in args.minilm_expansions if name == "minilm" else args.expansions:
            if f"{lib}:{name}:{expansion}" in args.skip:
                continue
            for k in args.k:
                width = expansion * d
                tag = f"{lib}-w{width}-k{k}-s{steps}"
                done = cache / f"{tag}.json"
                if args.reuse and lib not in args.retrain and done.is_file():
                    results.append(json.loads(done.read_text()))
                    continue
                t0 = time.perf_counter()
                if lib == "zspace":
                    sae, info = train_zspace(pack, work / "runs" / name / tag, kind="topk", width=width, k=k,
                                             steps=steps, threads=args.threads)
                    info["check_max_abs_diff"] = None
                else:
                    info = run_peer(lib, pack, work / "results" / name / f"{tag}.npz", width=width, k=k,
                                    steps=steps, threads=args.threads)
                    sae, info["check_max_abs_diff"] = sae_from_peer(work / "results" / name / f"{tag}.npz", k)
                    info["own"] = {key: info.pop(key) for key in ("fvu", "l0", "dead_fraction", "eval_tokens")}
                train_s = time.perf_counter() - t0
                torch.set_num_threads(args.threads)
                m = measure(sae, pack, lm, hook, texts, fidelity_tokens=args.fidelity_tokens,
                            dead_tokens=min(DEAD_TOKENS, steps * BATCH) if expansion == 32 else None)
                r = {"model": name, "expansion": expansion, "width": width, "k": k,
                     "train_wall_s": train_s, **info, **m, "library": lib}
                done.write_text(json.dumps(r, indent=1))
                results.append(r)
                fid = m.get("fidelity", {})
                print(f"{name} {lib:8s} w={width:5d} k={k:2d}: {info['tokens_per_s']:8.0f} tok/s  "
                      f"FVU {m['fvu']:.4f}  L0 {m['l0']:.1f}  dead {m['dead_held_out']:.3f}"
                      f"{'  dead@train ' + format(m['dead_train'], '.3f') if 'dead_train' in m else ''}"
                      f"  {_fidelity_str(fid)}  lr {info['lr']:.3g}  ({train_s:.0f} s)", flush=True)
    return results


def _fidelity_str(f: dict) -> str:
    if "ce_loss_recovered" in f:
        return f"CE rec {f['ce_loss_recovered']:.3f}"
    if "embedding_cosine_mean" in f:
        return f"cos {f['embedding_cosine_mean']:.4f} NN {f['nearest_neighbour_agreement']:.2f}"
    return ""


def _left_out(args) -> str:
    if 32 not in args.minilm_expansions:
        return ("MiniLM at 32x (12,288 features) was left out: SAELens alone would take about 45 CPU minutes for "
                "the three k (4,000 tokens/s at 8x). ")
    if "sae_lens:minilm:32" in args.skip:
        return ("SAELens is left out of MiniLM at 32x (12,288 features; `--skip sae_lens:minilm:32`): at about "
                "1,000 tokens/s it would take 45 CPU minutes for the three k, and it is the worse peer in every "
                "other cell. ")
    return ""


def peers_markdown(results: list[dict], args, loads: list[str]) -> str:
    by = {(r["model"], r["library"], r["width"], r["k"]): r for r in results}
    models = sorted({r["model"] for r in results}, key=list(MODELS).index)
    reused = REUSED if args.reuse and not args.retrain else (
        f" ({', '.join(args.retrain)} trained and measured in this run; "
        f"{', '.join(lib for lib in LIBRARIES if lib not in args.retrain)} re-assembled from the per-SAE results "
        "an earlier run of the same command cached in --work)" if args.reuse else "")
    out = [f"Command: `{command_line()}`{reused}", f"Machine: {machine()}; load average during the run: {', '.join(loads)} "
           "(2 cores shared with other developers' jobs: throughput is indicative, compare within a row group).",
           "", "TopK SAEs, batch 4096, seed 0, one torch thread, libraries one after another on the same stored "
           "activations and the same batch order; each library at its own default learning rate (column lr). "
           "FVU, L0 and dead fraction measured by the same zspace code on the held-out rows (last 1% of the "
           "harvested tokens) after loading every peer's weights into a zspace topk SAE (reconstruction checked "
           "against the peer's own to 1e-4: largest difference in column check). Tokens/s: training rows per "
           "second over steps 2..S (the first step excluded). The budgets are short (what the shared CPU allowed "
           f"for {len(results)} SAEs): they favour fast-converging optimizers (schedule-free signum, the default of both sparsify and zspace, "
           "at Gao et al.'s width-scaled lr); they are not converged results. MiniLM trains on 917,504 tokens, nearly all "
           "the corpus gives it (990,329; until 2026-12-07 it was 163,840, 40 steps, a transient in which a third of the "
           f"features were dead in every library). {_left_out(args)}Column precision: zspace's TopK "
           "default ranks features with a bf16 product where the CPU has AVX512-BF16 or AMX (values, reconstruction "
           "and gradients stay fp32); sparsify wraps its forward in bf16 autocast only on a bf16 GPU, so on a CPU its "
           "default is fp32, and the row sparsify-bf16 runs the same forward under CPU bf16 autocast for comparison. "
           "The throughput target is judged against sparsify's own default (fp32 here); the ratio to sparsify-bf16 "
           "is given beside it."]
    verdict = []
    for name in models:
        rs = [r for r in results if r["model"] == name]
        r0 = rs[0]
        fid = "CE loss recovered (KL nats/token)" if name == "stories260k" else "embedding cosine (NN agreement)"
        out += ["", f"### {name} `{MODELS[name][1]}`, {r0['tokens']:,} training tokens ({r0['steps']} steps), "
                f"N = {r0['held_out_tokens']:,} held-out tokens"
                + (f"; dead at 32x also over the first {max(r.get('dead_train_tokens') or 0 for r in rs):,} training tokens"
                   if any("dead_train" in r for r in rs) else ""), "",
                f"| width | k | library | precision | lr | tokens/s | FVU | L0 | dead (held-out N) | dead (train tokens) | {fid} | check |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for width in sorted({r["width"] for r in rs}):
            for k in sorted({r["k"] for r in rs}):
                for lib in LIBRARIES:
                    r = by.get((name, lib, width, k))
                    if r is None:
                        continue
                    f = r.get("fidelity", {})
                    fs = (f"{f['ce_loss_recovered']:.4f} ({f['kl_clean_to_spliced']:.4f})" if "ce_loss_recovered" in f
                          else f"{f['embedding_cosine_mean']:.4f} ({f['nearest_neighbour_agreement']:.2f})" if f else "")
                    chk = "" if r.get("check_max_abs_diff") is None else f"{r['check_max_abs_diff']:.1e}"
                    out.append(f"| {width} ({r['expansion']}x) | {k} | {lib} | {r.get('precision', 'fp32')} | {r['lr']:.3g} | "
                               f"{r['tokens_per_s']:,.0f} | {r['fvu']:.4f} | {r['l0']:.1f} | {r['dead_held_out']:.3f} | "
                               f"{format(r['dead_train'], '.4f') if 'dead_train' in r else ''} | "
                               f"{fs} | {chk} |")
                z = by.get((name, "zspace", width, k))
                peers = [by[(name, p, width, k)] for p in LIBRARIES[1:] if (name, p, width, k) in by]
                if z and peers:
                    best = min(p["fvu"] for p in peers)
                    verdict.append((name, width, k, z["fvu"], best, z["fvu"] <= best))
        zs = {(r["width"], r["k"]): r for r in rs if r["library"] == "zspace"}

        def ratios_to(lib):
            return [zs[(r["width"], r["k"])]["tokens_per_s"] / r["tokens_per_s"] for r in rs
                    if r["library"] == lib and (r["width"], r["k"]) in zs]

        ratios, ratios_bf16 = ratios_to("sparsify"), ratios_to("sparsify-bf16")
        dead32 = [r for r in rs if r["library"] == "zspace" and r["expansion"] == 32]
        out += ["", f"Targets ({name}):"]
        v = [x for x in verdict if x[0] == name]
        if v:
            met = sum(x[5] for x in v)
            out.append(f"- FVU <= the better peer's at equal k and width: met in {met} of {len(v)} cells ("
                       + "; ".join(f"{w}/k{k}: {zf:.4f} vs {b:.4f}" for _, w, k, zf, b, _ in v) + ")")
        if ratios:
            out.append(f"- training throughput >= 2x sparsify's: zspace/sparsify = "
                       + ", ".join(f"{x:.2f}" for x in ratios) + f" -> {'met' if min(ratios) >= 2 else 'not met'}"
                       f" (min {min(ratios):.2f}, max {max(ratios):.2f})")
        if ratios_bf16:
            out.append("- beside it, zspace/sparsify-bf16 (sparsify's forward under CPU bf16 autocast) = "
                       + ", ".join(f"{x:.2f}" for x in ratios_bf16))
        if dead32:
            worst = max(r.get("dead_train", r["dead_held_out"]) for r in dead32)
            out.append(f"- dead fraction < 1% at 32x: zspace's worst {worst:.4f} over "
                       f"{dead32[0].get('dead_train_tokens', dead32[0]['held_out_tokens']):,} tokens -> "
                       f"{'met' if worst < 0.01 else 'not met'}")
    return "\n".join(out)


# ------------------------------------------------------------------- the encoder's initial scale
INIT_SCALES = (0.25, 0.4, 0.577, 1.0)


def option_sweep(work: Path, args, part: str, option: str, values, key: str, tag: str, pinned: dict | None = None,
                 earlier=None) -> list[dict]:
    """zspace's TopK at each of ``values`` of one SAEConfig ``option`` (the rest its defaults, or ``pinned``)
    on every width/k cell of the models: held-out FVU, and at 32x the share of features silent over the first
    min(1M, budget) training tokens. Rows carry the value under ``key`` and are cached per cell and value
    (file names end in ``tag`` and the value);
    ``earlier(name, width, k, steps, value)`` may offer a row already measured elsewhere (with --reuse)."""
    rows = []
    for name in args.models:
        pack = prepare(name, work)
        steps = args.budget.get(name, MODELS[name][3]) // BATCH
        d = ShardStore(pack / "test").example_shape[0]
        cache = work / "results" / part / name
        cache.mkdir(parents=True, exist_ok=True)
        for expansion in args.minilm_expansions if name == "minilm" else args.expansions:
            for k in args.k:
                width = expansion * d
                peer = work / "results" / name / f"sparsify-w{width}-k{k}-s{steps}.json"
                sparsify = json.loads(peer.read_text()) if peer.is_file() else None
                for value in values:
                    done = cache / f"w{width}-k{k}-s{steps}-{tag}{value}.json"
                    if args.reuse and done.is_file():
                        rows.append(json.loads(done.read_text()))
                        continue
                    base = {"model": name, "width": width, "expansion": expansion, "k": k, key: value, "steps": steps,
                            "tokens": steps * BATCH, "sparsify_fvu": sparsify and sparsify["fvu"],
                            "sparsify_dead": sparsify and sparsify.get("dead_train")}
                    found = earlier(name, width, k, steps, value) if args.reuse and earlier else None
                    if found:
                        rows.append({**base, **found})
                        continue
                    sae, info = train_zspace(pack, work / "runs" / part / name, kind="topk", width=width, k=k,
                                             steps=steps, threads=args.threads, **{**(pinned or {}), option: value})
                    fvu, l0, fires, n = sae_train.feature_statistics(sae, ShardStore(pack / "test"))
                    dead = (dead_over_training_tokens(sae, pack, min(DEAD_TOKENS, steps * BATCH))[0]
                            if expansion == 32 else None)
                    r = {**base, "fvu": float(fvu), "held_out_tokens": n, "dead_train": dead,
                         "dead_held_out": float((fires == 0).double().mean())}
                    done.write_text(json.dumps(r, indent=1))
                    rows.append(r)
                    print(f"{part} {name} w={width} k={k} {key}={value}: FVU {fvu:.4f}"
                          + (f", dead {dead:.4f}" if dead is not None else "")
                          + (f" (sparsify {sparsify['fvu']:.4f})" if sparsify else ""), flush=True)
    return rows


def init_scale_study(work: Path, args) -> list[dict]:
    """The encoder's initial scale; the study ran with the plain aux-k and the random dictionary, pinned here."""
    return option_sweep(work, args, "init-scale", "encoder_scale", INIT_SCALES, "scale", "e",
                        pinned={"aux_rescale": False, "data_init": 0.0})


def init_scale_markdown(rows: list[dict], loads: list[str]) -> str:
    models = sorted({r["model"] for r in rows}, key=list(MODELS).index)
    cells = {m: sorted({(r["width"], r["k"]) for r in rows if r["model"] == m}) for m in models}
    fvu = {(r["model"], r["width"], r["k"], r["scale"]): r for r in rows}

    def mean_rank(model: str, scale: float) -> float:
        ranks = []
        for w, k in cells[model]:
            order = sorted(INIT_SCALES, key=lambda s: fvu[(model, w, k, s)]["fvu"])
            ranks.append(order.index(scale) + 1)
        return float(np.mean(ranks))

    out = [f"Command: `{command_line()}`", f"Machine: {machine()}; load average: {', '.join(loads)}", "",
           "zspace TopK, its defaults except the initial encoder scale s (W_enc = s W_dec^T; W_dec unit rows), "
           "seed 0, the peers part's data, budgets and batch order; FVU on the held-out rows. sparsify: its FVU "
           "from the peers part (same rows, budget, order).", "",
           "| model | width | k | tokens | " + " | ".join(f"s = {s}" for s in INIT_SCALES) + " | sparsify |",
           "|---|---|---|---|" + "---|" * (len(INIT_SCALES) + 1)]
    for m in models:
        for w, k in cells[m]:
            r0 = fvu[(m, w, k, INIT_SCALES[0])]
            sp = r0["sparsify_fvu"]
            out.append(f"| {m} | {w} | {k} | {r0['tokens']:,} | "
                       + " | ".join(f"{fvu[(m, w, k, s)]['fvu']:.4f}" for s in INIT_SCALES)
                       + f" | {'' if sp is None else format(sp, '.4f')} |")
    out += ["", "Leave one model out: s chosen by the best mean rank over the other model's cells, scored on the "
            "left-out one.", "", "| left out | mean rank by s on the others | chosen s | left-out cells won against sparsify |",
            "|---|---|---|---|"]
    for m in models:
        others = [o for o in models if o != m]
        if not others:
            continue
        ranks = {s: float(np.mean([mean_rank(o, s) for o in others])) for s in INIT_SCALES}
        chosen = min(INIT_SCALES, key=lambda s: (ranks[s], s))
        won = [(w, k) for w, k in cells[m] if fvu[(m, w, k, chosen)]["sparsify_fvu"] is not None
               and fvu[(m, w, k, chosen)]["fvu"] <= fvu[(m, w, k, chosen)]["sparsify_fvu"]]
        have = [c for c in cells[m] if fvu[(m, *c, chosen)]["sparsify_fvu"] is not None]
        out.append(f"| {m} | " + ", ".join(f"{s}: {ranks[s]:.2f}" for s in INIT_SCALES) + f" | {chosen} | "
                   f"{len(won)} of {len(have)} |")
    return "\n".join(out)


# ------------------------------------------------------------------------------- the aux-k form
AUX_VARIANTS = {"plain": {"aux_rescale": False},    # Gao et al.'s ||e_hat - e||^2 (zspace's default until 2026-12-07)
                "rescaled": {"aux_rescale": True},   # e_hat scaled down to its least-squares fit where it overshoots
                "off": {"aux_k": 0}}
AUX_PINNED = {"data_init": 0.0}     # the aux-form study ran on the random dictionary, the default then
# the number of aux latents, on the data-initialised dictionary (the default since): Gao et al.'s runs use 512 for
# d_model 768 and up, sparsify d / 2; zspace's 256 was never chosen
AUX_SIZES = {"aux_k 256": {"aux_k": 256}, "aux_k 64": {"aux_k": 64}}
AUX_INTRO = {
    "aux": "zspace TopK at 32x d, its defaults (schedule-free signum, bf16 ranking, aux_k 256, aux_weight 1/32, "
           "dead after a 32nd of the training tokens) except the aux-k form, with the random dictionary of the time "
           "(data_init 0), seed 0, the peers part's data, budgets and batch order. plain: Gao et al.'s ||e_hat - e||^2 "
           "over the residual's variance; rescaled: e_hat times min(1, <e_hat, e>/||e_hat||^2) per row (constant in "
           "the gradient), `aux_rescale`; off: aux_k 0.",
    "aux-size": "zspace TopK at 32x d, its defaults (schedule-free signum, bf16 ranking, rescaled aux-k, aux_weight "
                "1/32, dead after a 32nd of the training tokens, the dictionary half from data) except the number of "
                "aux latents per row, seed 0, the peers part's data, budgets and batch order.",
}


def aux_study(work: Path, args, variants: dict = AUX_VARIANTS, part: str = "aux", pinned: dict = AUX_PINNED,
              earlier=None) -> list[dict]:
    """zspace's TopK at 32x with each aux-k variant: held-out FVU and the dead fraction over the
    first min(1M, budget) training tokens (the issue's window), per model and k. As in ``option_sweep``,
    ``earlier(name, width, k, steps, variant)`` may offer a row already measured elsewhere (with --reuse)."""
    rows = []
    for name in args.models:
        pack = prepare(name, work)
        steps = args.budget.get(name, MODELS[name][3]) // BATCH
        d = ShardStore(pack / "test").example_shape[0]
        cache = work / "results" / part / name
        cache.mkdir(parents=True, exist_ok=True)
        for k in args.k:
            width = 32 * d
            peer = work / "results" / name / f"sparsify-w{width}-k{k}-s{steps}.json"
            sparsify = json.loads(peer.read_text()) if peer.is_file() else None
            for variant, options in variants.items():
                done = cache / f"w{width}-k{k}-s{steps}-{variant}.json"
                if args.reuse and done.is_file():
                    rows.append(json.loads(done.read_text()))
                    continue
                found = earlier(name, width, k, steps, variant) if args.reuse and earlier else None
                if found:
                    rows.append({**found, "variant": variant, "dead_window": min(DEAD_TOKENS, steps * BATCH)})
                    continue
                sae, info = train_zspace(pack, work / "runs" / part / name, kind="topk", width=width, k=k,
                                         steps=steps, threads=args.threads, **{**pinned, **options})
                fvu, l0, fires, n = sae_train.feature_statistics(sae, ShardStore(pack / "test"))
                dead, window = dead_over_training_tokens(sae, pack, min(DEAD_TOKENS, steps * BATCH))
                r = {"model": name, "width": width, "k": k, "variant": variant, "steps": steps,
                     "tokens": steps * BATCH, "fvu": float(fvu), "held_out_tokens": n, "dead_train": dead,
                     "dead_window": window, "tokens_per_s": info["tokens_per_s"],
                     "sparsify_fvu": sparsify and sparsify["fvu"], "sparsify_dead": sparsify and sparsify.get("dead_train")}
                done.write_text(json.dumps(r, indent=1))
                rows.append(r)
                print(f"aux {name} w={width} k={k} {variant}: FVU {fvu:.4f}, dead {dead:.4f} over {window:,} tokens",
                      flush=True)
    return rows


def data_init_row(work: Path, name: str, width: int, k: int, steps: int, variant: str) -> dict | None:
    """The data-init part's run at the default q, for the aux-size variant that is the default (the same SAE)."""
    q = SAEConfig(kind="topk").data_init_share
    same = work / "results" / "data-init" / name / f"w{width}-k{k}-s{steps}-q{q}.json"
    if AUX_SIZES[variant] != {"aux_k": SAEConfig.aux_k} or not same.is_file():
        return None
    return {**json.loads(same.read_text()), "from": f"{variant}: the data-init part's q = {q} runs"}


def aux_markdown(rows: list[dict], loads: list[str], variants: dict = AUX_VARIANTS, part: str = "aux") -> str:
    models = sorted({r["model"] for r in rows}, key=list(MODELS).index)
    by = {(r["model"], r["k"], r["variant"]): r for r in rows}
    ks = {m: sorted({r["k"] for r in rows if r["model"] == m}) for m in models}
    names = list(variants)

    def score(model: str, v: str) -> tuple[float, float]:
        """(the worst cell's dead fraction, mean FVU rank among the variants)"""
        worst = max(by[(model, k, v)]["dead_train"] for k in ks[model])
        ranks = [sorted(names, key=lambda u: by[(model, k, u)]["fvu"]).index(v) + 1 for k in ks[model]]
        return worst, float(np.mean(ranks))

    out = [f"Command: `{command_line()}`", f"Machine: {machine()}; load average: {', '.join(loads)}", "",
           AUX_INTRO[part] + " FVU on the held-out rows; dead: no activation over the first min(1M, budget) training tokens. "
           "sparsify: its cached peers-part result (its aux-k waits 10M tokens, so it never acts here).", "",
           "| model | width | k | tokens | " + " | ".join(f"{v}: FVU / dead" for v in names) + " | sparsify: FVU / dead |",
           "|---|---|---|---|" + "---|" * (len(names) + 1)]
    for m in models:
        for k in ks[m]:
            a = by[(m, k, names[0])]
            sp = (f"{a['sparsify_fvu']:.4f} / {a['sparsify_dead']:.2%}" if a["sparsify_fvu"] is not None
                  and a["sparsify_dead"] is not None else "")
            out.append(f"| {m} | {a['width']} | {k} | {a['tokens']:,} | "
                       + " | ".join(f"{by[(m, k, v)]['fvu']:.4f} / {by[(m, k, v)]['dead_train']:.2%}" for v in names)
                       + f" | {sp} |")
    reused = sorted({r["from"] for r in rows if r.get("from")})
    if reused:
        out += ["", "Rows not trained by this command: " + "; ".join(reused) + (
            " (same data, budget, order, seed and code but for the aux-k form)." if part == "aux" else
            " (the same settings, data, order and seed).")]
    first = (" (A first rule, the fewest cells at 1% dead or more, tied on MiniLM, where plain and rescaled both have "
             "two such cells, one of them plain's 56%, and its FVU tie-break then chose plain for stories260K; the "
             "worst cell is what a user meets.)") if part == "aux" else ""
    out += ["", "Leave one model out: the variant whose worst cell on the other model has the fewest dead features "
            "(ties broken by its mean FVU rank there), scored on the left-out model." + first, "",
            "| left out | on the other: worst dead, mean FVU rank | chosen | left-out: worst dead | "
            "left-out: FVU <= sparsify |", "|---|---|---|---|---|"]
    for m in models:
        others = [o for o in models if o != m]
        if not others:
            continue
        sc = {}
        for v in names:
            worst_other, ranks = zip(*(score(o, v) for o in others))
            sc[v] = (max(worst_other), float(np.mean(ranks)))
        chosen = min(names, key=lambda v: sc[v])
        worst = max(by[(m, k, chosen)]["dead_train"] for k in ks[m])
        have = [k for k in ks[m] if by[(m, k, chosen)]["sparsify_fvu"] is not None]
        won = [k for k in have if by[(m, k, chosen)]["fvu"] <= by[(m, k, chosen)]["sparsify_fvu"]]
        out.append(f"| {m} | " + ", ".join(f"{v}: {sc[v][0]:.2%}, {sc[v][1]:.2f}" for v in names)
                   + f" | {chosen} | {worst:.2%} | {len(won)} of {len(have)} |")
    return "\n".join(out)


# ----------------------------------------------------------------- the dictionary from data
DATA_INIT = (0.0, 0.5, 1.0)


def data_init_study(work: Path, args) -> list[dict]:
    """The initial dictionary q (``SAEConfig.data_init``). q = 0, the random dictionary and the default
    until 2026-12-07, is read from the peers part's zspace results of that time when they exist."""
    def earlier(name, width, k, steps, q):
        e = work / "results" / name / f"zspace-w{width}-k{k}-s{steps}.json"
        if q != 0 or not e.is_file():
            return None
        e = json.loads(e.read_text())
        if e.get("data_init", 0.0) != 0.0:           # results from before the field were random
            return None
        return {"fvu": e["fvu"], "dead_train": e.get("dead_train"),
                "from": "q = 0: the peers part's zspace results (random dictionary)"}
    return option_sweep(work, args, "data-init", "data_init", DATA_INIT, "q", "q", earlier=earlier)


def data_init_markdown(rows: list[dict], loads: list[str]) -> str:
    models = sorted({r["model"] for r in rows}, key=list(MODELS).index)
    cells = {m: sorted({(r["width"], r["k"]) for r in rows if r["model"] == m}) for m in models}
    by = {(r["model"], r["width"], r["k"], r["q"]): r for r in rows}

    def targets(model: str, q: float) -> tuple[int, int]:
        """(issue targets met, targets with a peer to meet): FVU <= sparsify per cell; dead < 1% per 32x cell."""
        met = have = 0
        for w, k in cells[model]:
            r = by[(model, w, k, q)]
            if r["sparsify_fvu"] is not None:
                have, met = have + 1, met + (r["fvu"] <= r["sparsify_fvu"])
            if r.get("dead_train") is not None:
                have, met = have + 1, met + (r["dead_train"] < 0.01)
        return met, have

    def mean_rank(model: str, q: float) -> float:
        return float(np.mean([sorted(DATA_INIT, key=lambda u: by[(model, w, k, u)]["fvu"]).index(q) + 1
                              for w, k in cells[model]]))

    def cell(r: dict) -> str:
        return f"{r['fvu']:.4f}" + (f" / {r['dead_train']:.2%}" if r.get("dead_train") is not None else "")

    out = [f"Command: `{command_line()}`", f"Machine: {machine()}; load average: {', '.join(loads)}", "",
           "zspace TopK, its defaults (aux-k rescaled, encoder 0.4 x the decoder's transpose) except the initial "
           "dictionary: each decoder row the unit mix (1 - q) r + q u of a random direction r and the direction u of "
           "a training example less b_dec (`SAEConfig.data_init`), seed 0, the peers part's data, budgets and batch "
           "order. FVU on the held-out rows; at 32x also the share of features silent over the first min(1M, budget) "
           "training tokens. sparsify: its cached peers-part result.", "",
           "| model | width | k | tokens | " + " | ".join(f"q = {q}: FVU / dead" for q in DATA_INIT)
           + " | sparsify: FVU / dead |", "|---|---|---|---|" + "---|" * (len(DATA_INIT) + 1)]
    for m in models:
        for w, k in cells[m]:
            a = by[(m, w, k, DATA_INIT[0])]
            sp = "" if a["sparsify_fvu"] is None else (f"{a['sparsify_fvu']:.4f}" + (
                f" / {a['sparsify_dead']:.2%}" if a.get("sparsify_dead") is not None else ""))
            out.append(f"| {m} | {w} | {k} | {a['tokens']:,} | "
                       + " | ".join(cell(by[(m, w, k, q)]) for q in DATA_INIT) + f" | {sp} |")
    reused = sorted({r["from"] for r in rows if r.get("from")})
    if reused:
        out += ["", "Rows not trained by this command: " + "; ".join(reused) + " (same data, budget, order, seed "
                "and code but for the dictionary's start)."]
    out += ["", "Leave one model out: the q that meets the most of the issue's targets on the other model (FVU <= "
            "sparsify's in each cell, fewer than 1% dead in each 32x cell; ties broken by the mean FVU rank there), "
            "scored on the left-out model.", "",
            "| left out | on the other: targets met, mean FVU rank | chosen q | left-out: targets met |",
            "|---|---|---|---|"]
    for m in models:
        others = [o for o in models if o != m]
        if not others:
            continue
        sc = {q: (-sum(targets(o, q)[0] for o in others), float(np.mean([mean_rank(o, q) for o in others])))
              for q in DATA_INIT}
        chosen = min(DATA_INIT, key=lambda q: sc[q])
        met, have = targets(m, chosen)
        out.append(f"| {m} | " + ", ".join(f"{q}: {-sc[q][0]}, {sc[q][1]:.2f}" for q in DATA_INIT)
                   + f" | {chosen} | {met} of {have} |")
    return "\n".join(out)


# -------------------------------------------------------------------------------- the Pareto
PARETO = {"relu": [("sparsity_weight", v) for v in (0.5, 2.0, 5.0, 20.0)],
          "topk": [("k", v) for v in (8, 16, 32, 64)],
          "batchtopk": [("k", v) for v in (8, 16, 32, 64)],
          "jumprelu": [("sparsity_weight", v) for v in (0.1, 1.0, 5.0, 20.0)]}


def pareto(pack: Path, work: Path, args) -> tuple[list[dict], int, int]:
    d = ShardStore(pack / "test").example_shape[0]
    steps = args.pareto_budget // BATCH
    points = []
    for kind, settings in PARETO.items():
        for key, value in settings:
            opts = {"k": int(value)} if key == "k" else {"k": 32, "sparsity_weight": float(value)}
            tag = f"{kind}-{key}{value}-s{steps}"
            done = work / "results" / "pareto" / f"{tag}.json"
            done.parent.mkdir(parents=True, exist_ok=True)
            if args.reuse and done.is_file():
                points.append({**json.loads(done.read_text()), "reused": True})
                continue
            sae, info = train_zspace(pack, work / "runs" / "pareto" / tag, kind=kind, width=8 * d, steps=steps,
                                     threads=args.threads, **opts)
            fvu, l0, fires, n = sae_train.feature_statistics(sae, ShardStore(pack / "test"))
            p = {"kind": kind, key: value, "fvu": float(fvu), "l0": l0, "dead_held_out": float((fires == 0).double().mean()),
                 "held_out_tokens": n, "tokens": steps * BATCH, "lr": info["lr"], "tokens_per_s": info["tokens_per_s"]}
            done.write_text(json.dumps(p))
            points.append(p)
            print(f"pareto {kind:9s} {key}={value}: FVU {p['fvu']:.4f} L0 {l0:.1f} dead {p['dead_held_out']:.3f}",
                  flush=True)
    return points, steps * BATCH, points[0]["held_out_tokens"]


def draw_pareto(points: list[dict], tokens: int, n: int, d: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.8))
    style = {"relu": ("o", "ReLU + norm-weighted L1 (sparsity weight)"), "topk": ("s", "TopK (k)"),
             "batchtopk": ("^", "BatchTopK (k, learned threshold at eval)"),
             "jumprelu": ("D", "JumpReLU (L0 weight)")}
    for kind, (marker, label) in style.items():
        ps = sorted([p for p in points if p["kind"] == kind], key=lambda p: p["l0"])
        if not ps:
            continue
        ax.plot([p["l0"] for p in ps], [p["fvu"] for p in ps], marker=marker, label=label)
        groups: list[list[dict]] = []        # settings that landed on the same point share one label
        for p in ps:
            if groups and abs(p["l0"] / groups[-1][0]["l0"] - 1) < 0.03 and abs(p["fvu"] / groups[-1][0]["fvu"] - 1) < 0.03:
                groups[-1].append(p)
            else:
                groups.append([p])
        for g in groups:
            label = ", ".join(f"{p.get('k', p.get('sparsity_weight')):g}" for p in g)
            ax.annotate(label, (g[0]["l0"], g[0]["fvu"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("L0 (mean active features per token, held-out)")
    ax.set_ylabel("FVU (fraction of variance unexplained, held-out)")
    ax.set_title(f"zspace SAEs, width {8 * d} (8x d={d}), stories260K resid_post.2, tinystories-lower\n"
                 f"{tokens:,} training tokens each, N = {n:,} held-out tokens", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=130)
    plt.close(fig)


def pareto_markdown(points: list[dict], tokens: int, n: int, loads: list[str], reuse: bool = False) -> str:
    out = [f"Command: `{command_line()}`{REUSED if reuse else ''}", f"Machine: {machine()}; load average: {', '.join(loads)}", "",
           f"zspace SAEs at 8x (width 512) on stories260K `resid_post.2`, {tokens:,} training tokens each "
           f"(batch 4096, seed 0, zspace's defaults: lr 5e-3/sqrt(width/2^14) = 0.0283, constant; schedule-free signum for topk and batchtopk, Adam for relu and jumprelu; topk ranks its features in bf16 where the CPU has it, as here), FVU and L0 on "
           f"N = {n:,} held-out tokens. Figure: docs/figures/sae-pareto-stories260k.png", "",
           "| kind | setting | L0 | FVU | dead (held-out) |", "|---|---|---|---|---|"]
    for p in points:
        s = f"k = {p['k']}" if "k" in p else f"sparsity_weight = {p['sparsity_weight']:g}"
        out.append(f"| {p['kind']} | {s} | {p['l0']:.1f} | {p['fvu']:.4f} | {p['dead_held_out']:.3f} |")
    for kind in PARETO:
        l0s = [p["l0"] for p in points if p["kind"] == kind]
        if len(l0s) > 1 and max(l0s) < 1.05 * min(l0s) and kind in ("relu", "jumprelu"):
            out.append(f"\nNot a curve: {kind}'s L0 stays at {min(l0s):.0f}-{max(l0s):.0f} across a "
                       f"{max(v for _, v in PARETO[kind]) / min(v for _, v in PARETO[kind]):g}x range of sparsity "
                       f"weights: at this budget and its default lr the penalty has not yet moved the model"
                       f"{' (its FVU also stays near 1)' if kind == 'relu' else ''}. A longer budget or other weights are needed before "
                       f"this kind's trade-off can be read off.")
    return "\n".join(out)


def publish(args, loads: list[str], section: str, title: str, markdown) -> bool:
    """Notes the load average, prints the part's markdown and, unless --no-write, writes it into
    RESULTS.md under ``title``; True when it wrote."""
    loads.append(f"{os.getloadavg()[0]:.1f}")
    md = markdown()
    print(md)
    if not args.no_write:
        update_section(section, f"## {title}\n\n{md}")
    return not args.no_write


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--part", choices=("all", "peers", "pareto", "init-scale", "aux", "data-init", "aux-size"), default="all")
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--libraries", nargs="+", choices=LIBRARIES, default=list(LIBRARIES))
    p.add_argument("--expansions", nargs="+", type=int, default=[8, 32])
    p.add_argument("--minilm-expansions", nargs="+", type=int, default=[8],
                   help="MiniLM widths (32x = 12288 features is out of reach of this CPU budget for all three)")
    p.add_argument("--k", nargs="+", type=int, default=[8, 16, 32])
    p.add_argument("--skip", nargs="*", default=[], metavar="LIB:MODEL:EXPANSION",
                   help="leave these cells out, e.g. sae_lens:minilm:32 (about 45 CPU minutes for the three k)")
    p.add_argument("--budget", nargs="*", default=[], metavar="MODEL=TOKENS",
                   help="training tokens per SAE (rounded down to whole batches); defaults: "
                        + ", ".join(f"{m}={v[3]}" for m, v in MODELS.items()))
    p.add_argument("--pareto-budget", type=int, default=524_288)
    p.add_argument("--fidelity-tokens", type=int, default=20_000)
    p.add_argument("--work", default="/tmp/sae-peers", help="activations, runs and per-SAE results")
    p.add_argument("--reuse", action="store_true", help="keep per-SAE results already in --work")
    p.add_argument("--retrain", nargs="*", choices=LIBRARIES, default=[],
                   help="with --reuse: these libraries are trained and measured again all the same")
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md and the figure alone")
    args = p.parse_args()
    args.budget = {m: int(v) for m, v in (b.split("=") for b in args.budget)}
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    loads = [f"{os.getloadavg()[0]:.1f}"]
    if args.part in ("all", "peers"):
        results = []
        for name in args.models:
            results += peers_grid(name, prepare(name, work), work, args)
        publish(args, loads, "sae-peers", "SAEs against SAELens and sparsify (issue 16)",
                lambda: peers_markdown(results, args, loads))
    if args.part in ("all", "init-scale"):
        rows = init_scale_study(work, args)
        publish(args, loads, "sae-init-scale", "SAE encoder initial scale, chosen leaving one model out (issue 16)",
                lambda: init_scale_markdown(rows, loads))
    if args.part in ("all", "aux"):
        rows = aux_study(work, args)
        publish(args, loads, "sae-aux", "SAE aux-k under sign descent, chosen leaving one model out (issue 16)",
                lambda: aux_markdown(rows, loads))
    if args.part in ("all", "aux-size"):
        rows = aux_study(work, args, AUX_SIZES, "aux-size", {}, earlier=partial(data_init_row, work))
        publish(args, loads, "sae-aux-size", "SAE aux-k size, chosen leaving one model out (issue 16)",
                lambda: aux_markdown(rows, loads, AUX_SIZES, "aux-size"))
    if args.part in ("all", "data-init"):
        rows = data_init_study(work, args)
        publish(args, loads, "sae-data-init", "SAE dictionary initialised from data, chosen leaving one model out (issue 16)",
                lambda: data_init_markdown(rows, loads))
    if args.part in ("all", "pareto"):
        pack = prepare("stories260k", work)
        points, tokens, n = pareto(pack, work, args)
        if publish(args, loads, "sae-pareto", "SAE FVU-L0 Pareto curves, zspace (issue 16)",
                   lambda: pareto_markdown(points, tokens, n, loads, any(p.get("reused") for p in points))):
            draw_pareto(points, tokens, n, ShardStore(pack / "test").example_shape[0])

if __name__ == "__main__":
    main()
