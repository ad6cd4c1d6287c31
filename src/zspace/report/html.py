"""`zspace report RUN`: one self-contained HTML page for a run.

Every figure is drawn into RUN/figures/ and embedded in the page as a PNG data URI, so
the file opens anywhere, offline, with nothing beside it. Sections a model cannot have
(prior samples of an autoencoder, per-class samples of an unconditional model) are
left out with a line saying why.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Callable

from ..errors import ConfigError, ZspaceError
from ..models.capabilities import ContinuousCode, SamplesFromPrior
from ..core.io import write_text_atomic
from ..core.progress import Progress
from . import latent_figures as lf
from .figures import save_loss_curves, save_reconstructions, save_samples

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
img{max-width:100%;border:1px solid #eee}table{border-collapse:collapse;font-size:.9em}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}pre{background:#f6f6f6;padding:1em;
overflow:auto;font-size:.8em}.note{color:#666;font-style:italic}"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(rows: list[tuple[str, object]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _metrics(run) -> str:
    history = run.history()
    parts = []
    if history:
        last = history[-1]
        parts.append("<p>Last epoch (training terms are running means over the epoch; test terms on "
                     f"{run.train_config.eval_limit or 'all'} test examples):</p>"
                     + _table([(k, v) for k, v in last.items()]))
    for path in sorted(run.path.glob("eval-*.json")) if run.path else []:
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        keep = [(k, v) for k, v in result.items() if isinstance(v, (int, float, str)) and k != "run"]
        parts.append(f"<p>Evaluation <code>{html.escape(path.name)}</code>:</p>" + _table(keep))
    return "".join(parts) or '<p class="note">no metrics recorded</p>'


def _activity_table(act) -> str:
    order = act.ranked()
    rows = [(f"z{d}", f"KL {act.kl[d]:.3f} nats, A = {act.variance[d]:.3g}"
             + (" (active)" if act.active[d] else "")) for d in order]
    return (f"<p>{act.num_active} of {len(order)} dimensions active (A = Var<sub>x</sub> E<sub>q</sub>[z<sub>d</sub>] "
            f"&gt; {act.threshold:g}, Burda et al. 2016), measured on {act.num_examples} test examples; ranked by KL:</p>"
            + _table(rows))


def write_report(run, path: str | Path | None = None, seed: int = 0) -> Path:
    """Writes the run's report (default RUN/report.html) and returns its path."""
    if run.path is None:
        raise ConfigError("a report needs a run folder (train with out=...)")
    out = Path(path) if path is not None else run.path / "report.html"
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"{out}: the report must end in .html")
    figs = run.path / "figures"
    model = run.model
    has_code = isinstance(model, ContinuousCode)
    latent_dim = model.code_dim if has_code else None
    act = lf.activity(run) if has_code else None                 # measured once, used three times
    plane = tuple(int(d) for d in act.ranked()[:2]) if has_code and latent_dim > 2 else None

    sections: list[tuple[str, Callable[[], Path | str | None], str]] = [
        ("Loss curves", lambda: save_loss_curves(run.history(), figs / "loss_curves.png",
                                                 f"{run.describe()}: loss per epoch"), ""),
        ("Reconstructions", lambda: save_reconstructions(run, figs / "reconstructions.png"), ""),
        ("Samples from the prior", lambda: save_samples(run, figs / "samples.png", seed=seed), ""),
    ]
    if model.num_classes:
        sections.append(("Samples per class", lambda: lf.save_class_samples(run, figs / "class_samples.png",
                                                                            seed=seed), ""))
    if has_code:
        sections += [
            ("Active units and KL per dimension", lambda: _activity_table(act), ""),
            ("Traversals", lambda: lf.save_traversal(run, figs / "traversal.png", measured=act), ""),
            ("Manifold", lambda: lf.save_manifold(run, figs / "manifold.png", plane=plane)
             if isinstance(model, SamplesFromPrior) else None,
             "The grid Φ⁻¹(u) is read in prior units: models without a prior have no manifold figure."),
            ("Interpolations", lambda: lf.save_interpolations(run, figs / "interpolations.png", seed=seed), ""),
            ("Latent scatter", lambda: lf.save_scatter(run, figs / "scatter.png"), ""),
        ]
    body = [f"<h1>{html.escape(run.describe())}</h1>",
            f"<p>Run folder <code>{html.escape(str(run.path))}</code>; data {html.escape(run.data_spec.source)} "
            f"({html.escape(run.data_spec.preprocessing)}); zspace {html.escape(str(run.config.get('zspace_version')))}, "
            f"created {html.escape(str(run.config.get('created', '?')))}.</p>",
            "<h2>Metrics</h2>", _metrics(run)]
    bar = Progress(len(sections), "report", "sections")   # shown by the CLI (core.progress)
    for title, make, why_missing in sections:
        body.append(f"<h2>{html.escape(title)}</h2>")
        bar.set_description(f"report: {title.lower()}")
        bar.update(1)
        try:
            made = make()
        except ZspaceError as e:
            body.append(f'<p class="note">not drawn: {html.escape(str(e))}</p>')
            continue
        if made is None:
            body.append(f'<p class="note">{html.escape(why_missing or "not available for this model or data")}</p>')
        elif isinstance(made, Path):
            body.append(_img(made, title))
        else:
            body.append(made)
    bar.close()
    body += ["<h2>Configuration</h2>", f"<pre>{html.escape(json.dumps(run.config, indent=2))}</pre>"]
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>zspace report: '
            f"{html.escape(run.describe())}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    write_text_atomic(out, page)
    return out
