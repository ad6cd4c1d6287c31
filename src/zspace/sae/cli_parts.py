"""`zspace sae browse` and `zspace sae steer`: parsers and handlers, wired into the CLI's `sae` group.

``add_browse_steer_parsers(subparsers, parser_class)`` adds both subcommands to the `sae` group's
subparsers (``parser_class`` is the CLI's one-line-error parser); ``run_browse(args)`` and
``run_steer(args)`` run them and return the exit status. Errors a user can cause raise zspace's
exceptions (the CLI prints them on one line, exit 2).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import CheckpointError, ConfigError, DataError


def add_browse_steer_parsers(subparsers, parser_class=None) -> None:
    """``parser_class`` is accepted for symmetry; the subparsers' own parser class (set by
    ``add_subparsers(parser_class=...)``) builds the two parsers."""
    b = subparsers.add_parser("browse", help="one HTML page with every feature of an SAE run: density, "
                              "histogram, top contexts, promoted/suppressed tokens",
                              description="Feature browser of an SAE run over the store it was trained on.")
    b.add_argument("run", type=Path, help="SAE run folder (zspace sae train)")
    b.add_argument("--out", required=True, type=Path, help="HTML page to write")
    b.add_argument("--top", type=int, default=20, help="top-activating contexts per feature (default 20)")
    b.add_argument("--window", type=int, default=8, help="tokens of context before the top token (default 8)")
    b.add_argument("--limit", type=int, help="read only the store's first N rows")
    b.add_argument("--store", type=Path, help="activation store (default: the run's training data)")
    b.add_argument("--model", help="language model: stories260K, minilm or a folder (default: the store's)")
    b.add_argument("--batch-size", type=int, default=4096, help="rows per batch (default 4096)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    s = subparsers.add_parser("steer", help="generate with a feature clamped (--value) or added (--add), "
                              "the SAE's error term kept",
                              description="Completions with and without steering one SAE feature, the change in "
                                          "log-probability of its promoted tokens and CE on unrelated text.")
    s.add_argument("run", type=Path, help="SAE run folder (zspace sae train)")
    s.add_argument("--feature", type=int, required=True, help="feature index")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--value", type=float, help="clamp the feature to this activation")
    g.add_argument("--add", type=float, help="add the feature's decoder direction with this coefficient")
    s.add_argument("--prompt", required=True, help="text to continue")
    s.add_argument("--tokens", type=int, default=40, help="new tokens per completion (default 40)")
    s.add_argument("--samples", type=int, default=3, help="completions with and without (default 3)")
    s.add_argument("--seed", type=int, default=0, help="seed of the generation (default 0)")
    s.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0: greedy)")
    s.add_argument("--model", help="language model: stories260K or a folder (default: the store's)")
    s.add_argument("--hook", help="hook point (default: the store's)")
    s.add_argument("--ce-text", type=Path, help="unrelated text for the CE (default: wizard-of-oz.txt if found)")
    s.add_argument("--json", type=Path, help="also write the result as JSON")


def _open(run_path: Path, store_path=None, model=None, need_store=True, device: str = "cpu"):
    """The SAE run, its store (and metadata) and the language model, both models on ``device``."""
    from ..data.shards import ShardStore, is_store
    from ..training.run import load_run
    from .lm import load_language_model

    run = load_run(run_path, map_location=device)
    if getattr(run.model, "name", None) != "sae":
        raise CheckpointError(f"{run_path}: a {run.model.name!r} run, not a sparse autoencoder")
    source = Path(store_path) if store_path else Path(run.config.get("data", {}).get("source", ""))
    meta = {}
    store = None
    if is_store(source):
        store = ShardStore(source)
        meta = dict(store.metadata)
    elif need_store or not model:
        raise DataError(f"{source}: the run's activation store is not there (moved?); pass --store PATH"
                        + ("" if need_store else " or --model and --hook"))
    name = model or meta.get("model")
    if not name:
        raise ConfigError(f"{source}: the store does not name its language model; pass --model")
    lm = load_language_model(name, device=device)
    return run, store, meta, lm


def run_browse(args) -> int:
    from .browser import feature_summaries, write_browser

    for flag in ("top", "batch_size", "limit"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {v}")
    if args.window < 0:
        raise ConfigError(f"--window must be >= 0, got {args.window}")
    if args.out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"{args.out}: --out must end in .html")
    run, store, meta, lm = _open(args.run, args.store, args.model, device=getattr(args, "device", "cpu"))
    s = feature_summaries(run.model, store, lm, top=args.top, window=args.window, batch_size=args.batch_size,
                          limit=args.limit, progress=not args.no_progress)
    write_browser(s, args.out, {"run": str(args.run)})
    print(f"{args.out}: {len(s.features)} features ({len(s.dead)} dead in {s.tokens:,} tokens), "
          f"{s.seconds:.1f} s")
    return 0


def run_steer(args) -> int:
    from .steer import steer

    if args.value is None and args.add is None:
        raise ConfigError("give --value V (clamp the feature) or --add A (add its decoder direction)")
    run, store, meta, lm = _open(args.run, None, args.model, need_store=False, device=getattr(args, "device", "cpu"))
    hook = args.hook or meta.get("hook")
    if not hook:
        raise ConfigError("the store does not name its hook point; pass --hook")
    width = int(run.model.config.width)
    if not 0 <= args.feature < width:
        raise ConfigError(f"--feature {args.feature} is out of range: the SAE has features 0..{width - 1}")
    if args.ce_text is not None and not args.ce_text.is_file():
        raise DataError(f"{args.ce_text}: no such file (--ce-text)")
    r = steer(lm, run.model, hook, args.prompt, args.feature, value=args.value, add=args.add,
              max_new_tokens=args.tokens, seed=args.seed, samples=args.samples, temperature=args.temperature,
              ce_text=args.ce_text if args.ce_text is not None else "auto")
    print(r.summary())
    if args.json:
        from dataclasses import asdict

        from ..core.io import write_text_atomic
        d = asdict(r)
        d.update(logprob_change=r.logprob_change, prompt_logprob_change=r.prompt_logprob_change,
                 ce_change=r.ce_change)
        write_text_atomic(args.json, json.dumps(d, indent=2) + "\n")
    sys.stdout.flush()
    return 0


__all__ = ["add_browse_steer_parsers", "run_browse", "run_steer"]
