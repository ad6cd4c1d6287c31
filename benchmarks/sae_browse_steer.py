"""Feature browser build time and steering through SAE features, on stories260K's residual stream.

A 32x-width TopK SAE (width 2048 for d = 64, k = 32) trained one epoch on ~1M harvested tokens of
stories260K ``resid_post.2`` (TinyStories, lower case). Then:

* **browser**: ``feature_summaries`` over every row of the store (all 2048 features: density,
  histogram, top 20 contexts, promoted/suppressed tokens) and ``write_browser``; wall time of each,
  the page's size, dead features.
* **steering**: features chosen by their promoted tokens (the top promoted token W_U (W_dec[i] / scale)
  a whole word, the feature live), clamped to a multiple of their maximum activation on the store;
  the mean log-probability of the feature's 10 top promoted tokens with and without steering (at the
  generated positions of each condition's own completions, on the unsteered completions' tokens run
  steered, and over the prompt), CE on a slice of wizard-of-oz.txt (unrelated text) with and without,
  and example completions (same seeds).

    python benchmarks/sae_browse_steer.py --threads 1

The store and the SAE run are kept in --work and reused when present (delete them to start over).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, machine, update_section, use_shared_data  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

PROMPT = "once upon a time, there was a little girl named lily. she"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/zspace-bench-sae"))
    ap.add_argument("--features", type=int, default=3, help="features to steer (chosen by promoted tokens)")
    ap.add_argument("--multiple", type=float, nargs="+", default=[1.0, 2.0, 4.0],
                    help="clamp values, in multiples of the feature's max activation on the store")
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=40)
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    use_shared_data()

    import zspace
    from zspace.data.shards import ShardStore
    from zspace.models.sae import SAEConfig, SparseAutoencoder
    from zspace.sae import harvest, load_language_model
    from zspace.sae.browser import feature_summaries, write_browser
    from zspace.sae.steer import steer

    data = Path(os.environ.get("ZSPACE_DATA", "../shared/data"))
    lm = load_language_model("stories260K")
    corpus = data / "text" / "tinystories-lower.txt"
    args.work.mkdir(parents=True, exist_ok=True)
    store_path, run_path = args.work / "acts", args.work / "sae-topk-2048"
    t0 = time.perf_counter()
    harvest(lm, "resid_post.2", corpus, store_path, context=128, max_tokens=args.tokens, resume=True, progress=False)
    t_harvest = time.perf_counter() - t0
    if not (run_path / "config.json").is_file() or not list(run_path.glob("checkpoints/*")):
        splits = zspace.load_dataset(str(store_path), test_fraction=0.05)
        torch.manual_seed(0)
        m = SparseAutoencoder(SAEConfig(input_shape=(64,), width=2048, kind="topk", k=32))
        m.init_from_data(torch.from_numpy(splits.train.read(np.arange(0, len(splits.train), 50))))
        t0 = time.perf_counter()
        zspace.train(m, splits, out=run_path, config=zspace.TrainConfig(epochs=1, batch_size=1024, lr=1e-3,
                     lr_schedule="constant", threads=args.threads), progress=False, figures=False)
        t_train = time.perf_counter() - t0
    else:
        t_train = None
    sae = zspace.load_run(run_path).model
    store = ShardStore(store_path)

    # ---- browser
    t0 = time.perf_counter()
    s = feature_summaries(sae, store, lm, top=20, window=8, progress=False)
    t_pass = time.perf_counter() - t0
    page = args.work / "features.html"
    t0 = time.perf_counter()
    write_browser(s, page, {"run": str(run_path)})
    t_page = time.perf_counter() - t0
    size = page.stat().st_size
    print(f"browser: pass {t_pass:.1f} s, page {t_page:.1f} s, {size / 1e6:.1f} MB, {len(s.dead)} dead "
          f"of {len(s.features)}", flush=True)

    # ---- steering: live features whose top promoted token is a whole word
    def wordy(f):
        t = f.promoted[0][0] if f.promoted else ""
        return t.startswith(" ") and t.strip().isalpha() and len(t.strip()) >= 3
    cands = [f for f in s.features if not f.dead and f.density >= 1e-3 and wordy(f)]
    cands.sort(key=lambda f: f.promoted[0][1] - f.promoted[1][1], reverse=True)    # a clear first token
    chosen, seen = [], set()
    for f in cands:
        if f.promoted[0][0] not in seen:
            chosen.append(f)
            seen.add(f.promoted[0][0])
        if len(chosen) == args.features:
            break
    rows, examples = [], []
    show = min(args.multiple, key=lambda m: abs(m - 2.0))          # examples at the clamp nearest 2x max
    for f in chosen:
        for mult in args.multiple:
            value = mult * f.max_activation
            t0 = time.perf_counter()
            r = steer(lm, sae, "resid_post.2", PROMPT, f.id, value=value, max_new_tokens=args.new_tokens,
                      samples=args.samples, seed=0, temperature=1.0, ce_tokens=2048)
            dt = time.perf_counter() - t0
            rows.append((f, mult, r, dt))
            print(r.summary(), flush=True)
            if mult == show and len(examples) < 2:
                examples.append((f, r))

    # ---- RESULTS.md
    cmd = command_line()
    b = [f"Browser over every feature of a 32x TopK SAE (width 2048, k = 32, d = 64) trained one epoch on "
         f"{len(store):,} harvested tokens of stories260K `resid_post.2` (tinystories-lower.txt, context 128). "
         f"{machine()}; {args.threads} thread(s). Command: `{cmd}`", "",
         "| step | seconds |", "|---|---|",
         f"| harvest ({len(store):,} tokens; 0 when reused) | {t_harvest:.1f} |",
         f"| SAE training (1 epoch, batch 1024) | {'reused' if t_train is None else f'{t_train:.1f}'} |",
         f"| `feature_summaries`: one pass over {s.tokens:,} rows, 2048 features, top 20 contexts (window 8), "
         f"histograms, W_U·W_dec logits | {t_pass:.1f} |",
         f"| `write_browser`: {size / 1e6:.1f} MB self-contained HTML | {t_page:.1f} |", "",
         f"Dead features (no activation in {s.tokens:,} tokens): {len(s.dead)} of {len(s.features)}. "
         f"Pass throughput {s.tokens / t_pass:,.0f} tokens/s (includes encoding the contexts' rows)."]
    st = [f"Steering stories260K at `resid_post.2` through features of the same SAE, chosen by their top promoted "
          f"token (W_U·(W_dec[i]/scale), final RMSNorm ignored; a whole word, density >= 1e-3, the largest gap "
          f"to the second token). Clamp value = multiple x the feature's max activation on the store, every "
          f"position but BOS, SAE error term kept. Prompt {PROMPT!r}, {args.samples} samples x "
          f"{args.new_tokens} tokens at temperature 1, same seeds with and without. 'log p(target)': mean log-"
          f"probability of the feature's 10 top promoted tokens at the generated positions (each condition on "
          f"its own completions); 'teacher-forced': on the unsteered completions' tokens, run steered. CE: "
          f"next-token cross-entropy on the first 2048 tokens of wizard-of-oz.txt (unrelated text), nats/token. "
          f"{machine()}; {args.threads} thread(s). Command: `{cmd}`", "",
          "| feature | top promoted | density | clamp | log p(target) plain → steered (Δ) | teacher-forced Δ | "
          "prompt Δ | CE plain → steered (Δ) | s |", "|---|---|---|---|---|---|---|---|---|"]
    for f, mult, r, dt in rows:
        st.append(f"| {f.id} | {' '.join(repr(t) for t in r.target_tokens[:3])} | {f.density:.4f} | "
                  f"{mult:g}x max = {r.value:.2f} | {r.target_logprob_plain:.2f} → {r.target_logprob_steered:.2f} "
                  f"({r.logprob_change:+.2f}) | {r.target_logprob_teacher - r.target_logprob_plain:+.2f} | "
                  f"{r.prompt_logprob_change:+.2f} | {r.ce_plain:.3f} → {r.ce_steered:.3f} ({r.ce_change:+.3f}) | "
                  f"{dt:.1f} |")
    st += ["", f"Example completions (seeds 0 and 1, clamp {show:g}x max):", ""]
    for f, r in examples:
        st.append(f"- feature {f.id} (promotes {' '.join(repr(t) for t in r.target_tokens[:3])}), "
                  f"value {r.value:.2f}:")
        for k in range(min(2, len(r.plain))):
            st.append(f"  - plain:   `{(PROMPT + r.plain[k]).replace(chr(10), ' ')}`")
            st.append(f"  - steered: `{(PROMPT + r.steered[k]).replace(chr(10), ' ')}`")
    out = {"browser": {"pass_s": t_pass, "page_s": t_page, "bytes": size, "dead": len(s.dead)},
           "steering": [{"feature": f.id, "multiple": mult, "value": r.value, "targets": r.target_tokens,
                         "logprob_change": r.logprob_change, "teacher_change": r.target_logprob_teacher -
                         r.target_logprob_plain, "prompt_change": r.prompt_logprob_change, "ce_plain": r.ce_plain,
                         "ce_steered": r.ce_steered, "plain": r.plain, "steered": r.steered}
                        for f, mult, r, _ in rows]}
    (args.work / "results.json").write_text(json.dumps(out, indent=2))
    print("\n".join(b), "\n", "\n".join(st), sep="\n")
    if not args.no_write:
        update_section("sae-browser", "## SAE feature browser\n\n" + "\n".join(b))
        update_section("sae-steering", "## SAE steering\n\n" + "\n".join(st))


if __name__ == "__main__":
    main()
