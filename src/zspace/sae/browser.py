"""The feature browser: what each SAE feature reads and writes, on one self-contained HTML page.

``feature_summaries`` makes ONE streaming pass over a harvested activation store (batches of rows)
and keeps, per feature: how often it fires (density = fires / tokens), its mean activation when it
fires and its maximum, a histogram of its non-zero activations over fixed log-spaced bins
(``HIST_EDGES``, the same for every feature and every store) and its ``top`` activating rows, a
running top-k per feature kept with one ``torch.topk`` over the running and the batch's candidates
(vectorised over features). Each top row then gets its context: the rows of the same document at
positions pos - window .. pos + 1 (neighbouring rows of the store), as (token, activation of that
feature) pairs. For a causal language model it also reads the feature's direct effect on the output:
the logits W_U (W_dec[i] / scale) of its decoder direction in the original activation space, top
and bottom 10 tokens. That ignores the final RMSNorm (its per-dimension gain and the division by
the residual's norm) and every layer after the hook point: a first-order reading, as in the
literature's "logit lens" view of a feature.

``write_browser`` renders the summaries as one HTML page (inline CSS, inline SVG histograms, a few
lines of JavaScript for the search box; no external resources), written atomically.
"""
from __future__ import annotations

import html
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.io import write_text_atomic
from ..errors import ConfigError, DataError

HIST_EDGES = np.logspace(-4, 3, 71)      # activation histogram bins (10 per decade, 1e-4 .. 1e3)
LOGIT_TOKENS = 10                        # promoted / suppressed tokens per feature


@dataclass
class Context:
    """One top-activating row of a feature and its neighbourhood in the document."""
    row: int                     # row index in the store
    doc: int
    pos: int
    activation: float            # the feature's activation at the row
    tokens: list[str]            # the document's tokens at pos - window .. pos + 1 (those that exist)
    acts: list[float]            # the feature's activation at each of them
    center: int                  # index of the row's own token in ``tokens``


@dataclass
class FeatureSummary:
    id: int
    fires: int                   # tokens with a non-zero activation
    density: float               # fires / tokens
    mean_activation: float       # mean of the non-zero activations (0 for a dead feature)
    max_activation: float
    histogram: list[int]         # counts of non-zero activations per HIST_EDGES bin (clamped at the ends)
    contexts: list[Context] = field(default_factory=list)          # best first
    promoted: list[tuple[str, float]] = field(default_factory=list)  # (token, logit) highest first
    suppressed: list[tuple[str, float]] = field(default_factory=list)  # lowest first

    @property
    def dead(self) -> bool:
        return self.fires == 0


@dataclass
class Summaries:
    features: list[FeatureSummary]
    tokens: int                  # rows read
    store: str
    meta: dict                   # model, hook, sae config, ... (shown in the page's header)
    bin_edges: list[float]
    seconds: float               # time of the pass and the contexts

    @property
    def dead(self) -> list[int]:
        return [s.id for s in self.features if s.dead]

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def feature_summaries(sae, store, lm=None, *, top: int = 20, window: int = 8, batch_size: int = 4096,
                      limit: int | None = None, progress: bool = True) -> Summaries:
    """Per-feature statistics, top contexts and (causal LMs) promoted/suppressed tokens; see the module."""
    for name, v, lo in (("top", top, 1), ("window", window, 0), ("batch_size", batch_size, 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")
    n = len(store) if limit is None else min(limit, len(store))
    if n == 0:
        raise DataError(f"{getattr(store, 'path', store)}: the store holds no rows")
    d = int(sae.config.d)
    if tuple(store.example_shape) != tuple(sae.config.input_shape) and int(np.prod(store.example_shape)) != d:
        raise DataError(f"the store's rows have shape {tuple(store.example_shape)}, the SAE reads {d} values")
    t0 = time.perf_counter()
    was = sae.training
    sae.eval()
    W = int(sae.config.width)
    nb = len(HIST_EDGES) - 1
    log_edges = torch.from_numpy(np.log10(HIST_EDGES[1:-1])).float()
    fires = torch.zeros(W, dtype=torch.long)
    total = torch.zeros(W, dtype=torch.float64)
    vmax = torch.zeros(W)
    hist = torch.zeros(W * nb, dtype=torch.long)
    best_v = torch.full((0, W), -1.0)
    best_r = torch.zeros((0, W), dtype=torch.long)

    from ..core.progress import Progress

    bar = Progress(n, "features", "tokens", enabled=progress)
    dev = sae.W_dec.device          # rows encoded on the SAE's device, counted on the CPU
    try:
        for s in range(0, n, batch_size):
            e = min(n, s + batch_size)
            x = torch.from_numpy(np.asarray(store.read(np.arange(s, e)), dtype=np.float32)).reshape(e - s, d)
            f = sae.encode_features(x.to(dev)).float().cpu()
            on = f > 0
            fires += on.sum(0)
            total += f.sum(0, dtype=torch.float64)
            vmax = torch.maximum(vmax, f.max(0).values)
            r, c = on.nonzero(as_tuple=True)
            if len(r):
                b = torch.bucketize(f[r, c].log10(), log_edges)        # 0 .. nb - 1, ends clamped
                hist += torch.bincount(c * nb + b, minlength=W * nb)
            kv, ki = f.topk(min(top, e - s), dim=0)                     # (t, W)
            cand_v = torch.cat([best_v, kv])
            cand_r = torch.cat([best_r, ki + s])
            best_v, sel = cand_v.topk(min(top, len(cand_v)), dim=0)
            best_r = cand_r.gather(0, sel)
            bar.update(e - s)
    finally:
        bar.close()
        sae.train(was)

    # ---- contexts: rows pos - window .. pos + 1 of the same document around each top row
    offsets = torch.arange(-window, 2)                                   # (L,)
    valid_top = best_v > 0                                               # (t, W)
    ft, ff = valid_top.nonzero(as_tuple=True)                            # (M,) rank, feature
    rows = best_r[ft, ff]                                                # (M,)
    ctx_rows = (rows[:, None] + offsets[None, :]).clamp(0, n - 1)        # (M, L)
    need = np.unique(np.concatenate([ctx_rows.numpy().ravel(), rows.numpy()]))
    doc_col = store.column("doc", need)
    pos_col = store.column("pos", need)
    tok_col = store.column("token", need)
    idx = torch.from_numpy(np.searchsorted(need, ctx_rows.numpy()))
    centre = torch.from_numpy(np.searchsorted(need, rows.numpy()))
    doc_t, pos_t = torch.from_numpy(doc_col.astype(np.int64)), torch.from_numpy(pos_col.astype(np.int64))
    ok = ((rows[:, None] + offsets[None, :] >= 0) & (rows[:, None] + offsets[None, :] < n)
          & (doc_t[idx] == doc_t[centre][:, None]) & (pos_t[idx] - pos_t[centre][:, None] == offsets[None, :]))
    # the feature's activation at every context row: encode the rows needed, once each
    ctx_act = torch.zeros(ctx_rows.shape)
    flat_u = idx.reshape(-1)                                             # index into ``need``
    flat_f = ff[:, None].expand_as(idx).reshape(-1)
    order = torch.argsort(flat_u, stable=True)
    su = flat_u[order]
    was = sae.training
    sae.eval()
    try:
        for a in range(0, len(need), batch_size):
            b = min(len(need), a + batch_size)
            x = torch.from_numpy(np.asarray(store.read(need[a:b]), dtype=np.float32)).reshape(b - a, d)
            f = sae.encode_features(x.to(dev)).float().cpu()
            lo, hi = torch.searchsorted(su, torch.tensor([a, b]))
            sl = order[lo:hi]
            ctx_act.view(-1)[sl] = f[flat_u[sl] - a, flat_f[sl]]
    finally:
        sae.train(was)
    names = {int(t): (lm.token_str(int(t)) if lm is not None else f"<{int(t)}>") for t in np.unique(tok_col)}

    # ---- the output side (causal LMs): W_U (W_dec[i] / scale), the final norm ignored
    promoted = suppressed = None
    if lm is not None and getattr(lm, "kind", None) == "causal" and getattr(lm, "unembed", None) is not None:
        WU = lm.unembed.detach().float().cpu()
        if WU.shape[1] != d:
            raise DataError(f"{lm.name}'s unembedding reads {WU.shape[1]} values, the SAE's features have {d}")
        logits = (sae.W_dec.detach().float().cpu() / sae.scale.float().cpu()) @ WU.t()     # (W, vocab)
        kk = min(LOGIT_TOKENS, logits.shape[1])
        promoted = logits.topk(kk, dim=1)
        suppressed = logits.topk(kk, dim=1, largest=False)
        pnames = {int(t): lm.token_str(int(t)) for t in torch.cat([promoted.indices.flatten(),
                                                                    suppressed.indices.flatten()]).unique()}

    feats = []
    hist = hist.view(W, nb)
    fires_l, total_l, vmax_l = fires.tolist(), total.tolist(), vmax.tolist()
    ctx_by_feature: list[list[Context]] = [[] for _ in range(W)]
    ok_n, idx_n, act_n = ok.numpy(), idx.numpy(), ctx_act.numpy()
    rows_n, ff_n, ft_n = rows.numpy(), ff.numpy(), ft.numpy()
    bv = best_v.numpy()
    for m in np.argsort(ff_n * (top + 1) + ft_n, kind="stable"):          # by feature, best first
        keep = ok_n[m]
        u = idx_n[m][keep]
        toks = [names[int(t)] for t in tok_col[u]]
        ctx_by_feature[int(ff_n[m])].append(Context(
            row=int(rows_n[m]), doc=int(doc_t[centre[m]]), pos=int(pos_t[centre[m]]),
            activation=float(bv[ft_n[m], ff_n[m]]), tokens=toks, acts=[float(v) for v in act_n[m][keep]],
            center=int(keep[:window].sum())))
    for i in range(W):
        fs = FeatureSummary(id=i, fires=int(fires_l[i]), density=fires_l[i] / n,
                            mean_activation=(total_l[i] / fires_l[i]) if fires_l[i] else 0.0,
                            max_activation=float(vmax_l[i]), histogram=hist[i].tolist(),
                            contexts=ctx_by_feature[i])
        if promoted is not None:
            fs.promoted = [(pnames[int(t)], float(v)) for t, v in zip(promoted.indices[i], promoted.values[i])]
            fs.suppressed = [(pnames[int(t)], float(v)) for t, v in zip(suppressed.indices[i], suppressed.values[i])]
        feats.append(fs)
    meta = dict(getattr(store, "metadata", {}) or {})
    info = {"model": meta.get("model", getattr(lm, "name", None)), "hook": meta.get("hook"),
            "sae": _config_dict(sae.config), "store": str(getattr(store, "path", "")), "tokens": n,
            "window": window, "top": top}
    return Summaries(features=feats, tokens=n, store=info["store"], meta=info, bin_edges=HIST_EDGES.tolist(),
                     seconds=time.perf_counter() - t0)


def _config_dict(config) -> dict:
    try:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}
    except TypeError:
        return {"config": str(config)}


# --------------------------------------------------------------------------- the page

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 1.5em 2em;color:#222;background:#fafafa}
header{position:sticky;top:0;background:#fafafa;padding:.6em 0;border-bottom:1px solid #ccc;z-index:1}
h1{font-size:1.3em;margin:.2em 0}
.meta{font-size:.85em;color:#555}
#q{font-size:1em;padding:.3em .5em;width:22em;margin-top:.4em}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;margin:.8em 0;padding:.5em .8em}
.card h2{font-size:1.05em;margin:.1em 0 .3em}
.stats{color:#555;font-size:.85em}
.row{display:flex;gap:1.5em;flex-wrap:wrap;align-items:flex-start}
.ctx{font-family:ui-monospace,monospace;font-size:.85em;white-space:pre;margin:1px 0;overflow:hidden}
.ctx i{font-style:normal;border-radius:2px}
.ctx i.c{outline:1px solid #c60}
.logits{font-size:.85em}
.logits b{color:#070;font-weight:normal;font-family:ui-monospace,monospace;background:#e6f4e6;margin:0 2px;padding:0 2px}
.logits s{color:#900;text-decoration:none;font-family:ui-monospace,monospace;background:#f8e6e6;margin:0 2px;padding:0 2px}
svg{background:#f4f4f4}
#dead{font-size:.85em;word-break:break-all}
.hidden{display:none}
"""

_JS = """
(function(){
  var q=document.getElementById('q'), cards=[].slice.call(document.querySelectorAll('.card')),
      text=cards.map(function(c){return c.textContent.toLowerCase();}), count=document.getElementById('count');
  function filter(){
    var v=q.value.trim().toLowerCase(), shown=0, m=v.match(/^#?(\\d+)$/);
    cards.forEach(function(c,i){
      var ok = !v || (m ? c.getAttribute('data-id')===m[1] : text[i].indexOf(v)>=0);
      c.classList.toggle('hidden', !ok); if(ok) shown++;
    });
    count.textContent = shown + ' of ' + cards.length + ' live features shown';
  }
  q.addEventListener('input', filter); window.zspaceFilter=function(v){q.value=v; filter(); return cards.filter(
    function(c){return !c.classList.contains('hidden');}).map(function(c){return +c.getAttribute('data-id');});};
  filter();
})();
"""


def _esc(s: str) -> str:
    return html.escape(s.replace("\n", "\u21b5").replace("\t", "\u2192"), quote=True)


def _histogram_svg(counts: list[int], edges: list[float], w: int = 220, h: int = 60) -> str:
    nz = [i for i, c in enumerate(counts) if c]
    if not nz:
        return ""
    lo, hi = nz[0], nz[-1] + 1
    part = counts[lo:hi]
    top = max(part)
    bw = w / len(part)
    path = "".join(f"M{j * bw:.1f} {h}v{-max(1.0, c / top * (h - 12)):.1f}h{bw * 0.9:.1f}V{h}z"
                   for j, c in enumerate(part) if c)
    return (f'<svg width="{w}" height="{h + 12}" role="img" aria-label="activation histogram">'
            f'<path d="{path}" fill="#d80"/>'
            f'<text x="0" y="{h + 10}" font-size="9">{edges[lo]:.2g}</text>'
            f'<text x="{w}" y="{h + 10}" font-size="9" text-anchor="end">{edges[hi]:.2g}</text>'
            f'<text x="{w / 2}" y="{h + 10}" font-size="9" text-anchor="middle">activation (log)</text></svg>')


def _context_html(c: Context, vmax: float) -> str:
    out = []
    for j, (t, a) in enumerate(zip(c.tokens, c.acts)):
        alpha = min(1.0, max(0.0, a / vmax)) if vmax > 0 else 0.0
        style = f' style="background:rgba(255,140,0,{alpha:.2f})"' if alpha >= 0.005 else ""
        cls = ' class="c"' if j == c.center else ""
        out.append(f'<i{cls}{style} title="{a:.3g}">{_esc(t)}</i>')
    return f'<div class="ctx" title="doc {c.doc} pos {c.pos}: {c.activation:.3g}">{"".join(out)}</div>'


def _card(s: FeatureSummary, edges: list[float]) -> str:
    ctx = "".join(_context_html(c, s.max_activation) for c in s.contexts)
    logit = ""
    if s.promoted or s.suppressed:
        logit = ('<div class="logits">promotes ' + "".join(f'<b title="{v:+.3g}">{_esc(t)}</b>' for t, v in s.promoted)
                 + '<br>suppresses ' + "".join(f'<s title="{v:+.3g}">{_esc(t)}</s>' for t, v in s.suppressed)
                 + "</div>")
    return (f'<div class="card" data-id="{s.id}"><h2>#{s.id}</h2>'
            f'<div class="stats">density {s.density:.3g} ({s.fires} tokens) · mean {s.mean_activation:.3g}'
            f' · max {s.max_activation:.3g}</div>'
            f'<div class="row"><div>{_histogram_svg(s.histogram, edges)}</div><div>{logit}</div></div>'
            f'{ctx}</div>')


def write_browser(summaries: Summaries, out_html, meta: dict | None = None) -> Path:
    """Writes the summaries as one self-contained HTML page (atomically); returns its path.

    ``meta`` (optional) adds to or overrides the header's facts (model, hook, sae, store, tokens).
    """
    out_html = Path(out_html)
    if out_html.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"{out_html}: the browser is an HTML page; name it .html")
    info = {**summaries.meta, **(meta or {})}
    sae = info.get("sae") or {}
    sae_txt = ", ".join(f"{k}={v}" for k, v in sae.items() if k in ("kind", "width", "k", "input_shape",
                                                                    "sparsity_weight")) if isinstance(sae, dict) else str(sae)
    live = [s for s in summaries.features if not s.dead]
    dead = summaries.dead
    facts = [("model", info.get("model")), ("hook", info.get("hook")), ("SAE", sae_txt),
             ("store", info.get("store")), ("tokens", f"{summaries.tokens:,}")]
    facts += [(k, v) for k, v in info.items() if k not in ("model", "hook", "sae", "store", "tokens", "window", "top")]
    head = " · ".join(f"<b>{_esc(str(k))}</b> {_esc(str(v))}" for k, v in facts if v is not None)
    title = f"SAE features: {info.get('model') or ''} {info.get('hook') or ''}".strip()
    body = "".join(_card(s, summaries.bin_edges) for s in live)
    dead_html = (f'<h2>Dead features ({len(dead)}, no activation in {summaries.tokens:,} tokens)</h2>'
                 f'<p id="dead">{" ".join(str(i) for i in dead)}</p>') if dead else \
        f'<p id="dead">No dead features (every feature fired in {summaries.tokens:,} tokens).</p>'
    note = ("Promoted/suppressed tokens: W_U · (W_dec[i] / scale), the feature's direct effect on the logits "
            "with the final RMSNorm ignored." if any(s.promoted for s in live) else "")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head><body>'
            f'<header><h1>{_esc(title)}</h1><div class="meta">{head}</div>'
            f'<input id="q" type="search" placeholder="search a token or a feature id (#12)" autocomplete="off">'
            f' <span id="count" class="meta"></span><div class="meta">{_esc(note)} Token background ∝ '
            f'activation / the feature\'s max; the outlined token is the top row.</div></header>'
            f'<main>{body}</main>{dead_html}<script>{_JS}</script></body></html>\n')
    write_text_atomic(out_html, page)
    return out_html


def summaries_json(summaries: Summaries) -> str:
    """The summaries as JSON (for tools; the page does not need it)."""
    return json.dumps(summaries.to_dict(), allow_nan=False, default=float)


__all__ = ["Context", "FeatureSummary", "Summaries", "feature_summaries", "write_browser", "summaries_json",
           "HIST_EDGES"]
