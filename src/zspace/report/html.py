"""`zspace report RUN`: one self-contained HTML page for a run.

A table of contents; every number with its unit, which direction is better and what it
means (``evaluation.glossary``); published values for the data set where the literature has
them (``evaluation.literature``); the checkpoint (epoch, step) every figure and evaluation
comes from, with a warning where an evaluation was made on other weights; sortable tables
and values on hover. Figures are drawn into RUN/figures/ and embedded as PNG data URIs,
charts are inline SVG: the file opens anywhere, offline, with nothing beside it. Sections
that do not apply to the run (images of tabular data, prior samples of an autoencoder) are
left out, and one line at the end says which and why.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from ..core.io import write_text_atomic
from ..core.progress import Progress
from ..errors import ConfigError, ZspaceError
from ..evaluation.literature import likelihood_over, references_for
from ..models.capabilities import ContinuousCode, Reconstructs, SamplesFromPrior
from ..rng import seeded
from ..tasks import has_likelihood, likelihood_meaning_of
from . import latent_figures as lf
from .figures import as_images, save_reconstructions, save_samples
from .page import (esc, fmt, history_charts, img, measure_label, measures_table, note, num_cell, page, table,
                   warning)

EVAL_SKIP = ("run", "model", "split", "likelihood_kind", "likelihood_note", "exact", "epoch", "batch", "step",
             "checkpoint")


def position_text(pos: dict) -> str:
    """'checkpoint epoch-0003 (epoch 3, step 1,200)' for a Run.position()-like dict."""
    where = f"epoch {pos.get('epoch')}" + (f" + {pos['batch']} batches" if pos.get("batch") else "")
    ckpt = f"checkpoint {pos['checkpoint']} " if pos.get("checkpoint") else ""
    return f"{ckpt}({where}, step {pos.get('step')})"


def evaluations(run) -> list[tuple[str, dict]]:
    """(file name, result) of every RUN/eval-*.json that reads as JSON."""
    out = []
    for path in sorted(run.path.glob("eval-*.json")) if run.path else []:
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(result, dict):
            out.append((path.name, result))
    return out


def stale_warning(result: dict, pos: dict, name: str) -> str | None:
    """The warning for an evaluation made on other weights than the run's latest (or that does
    not say on which), else None."""
    if "step" not in result:
        return (f"{name} records no epoch or step: it may come from an earlier checkpoint than the weights "
                f"of this report ({position_text(pos)}). Re-run zspace eval to be sure.")
    if result["step"] != pos["step"]:
        return (f"{name} was made at {position_text(result)}, but this report's weights are at "
                f"{position_text(pos)}: its numbers describe other weights. Re-run zspace eval.")
    return None


def _metrics(run, pos: dict, evaluated: bool) -> str:
    history = run.history()
    if not history:
        return note("no metrics recorded")
    last = history[-1]
    terms = sorted({k.split("_", 1)[1] for k in last if k.startswith(("train_", "test_"))})
    rows = []
    for term in terms:
        name, unit, better, meaning = measure_label(f"train_{term}")
        name = name.replace(" (train)", "")
        rows.append([f'<td title="{esc(term)}">{esc(name)}</td>', num_cell(last.get(f"train_{term}", "—"), unit),
                     num_cell(last.get(f"test_{term}", "—"), unit), f"<td>{esc(unit)}</td>",
                     f'<td class="better">{esc(better)}</td>', f'<td class="meaning">{esc(meaning)}</td>'])
    limit = run.train_config.eval_limit
    parts = [f"<p>The last row of the training log, epoch {fmt(last['epoch'])}, step {last['step']}: training "
             f"terms are running means over that epoch, test terms on {limit or 'all'} test examples "
             "(the per-epoch evaluation" + ('; <a href="#evaluations">Evaluations</a> has the full ones' if evaluated
                                            else "") + ").</p>",
             table(["measure", "train", "test", "unit", "better", "meaning"], rows)]
    if last.get("step") != pos["step"]:
        parts.append(warning(f"the log's last row is at step {last.get('step')}, the weights at "
                             f"{position_text(pos)} (a checkpoint between evaluations)."))
    extra = {k: last[k] for k in ("lr", "wall_seconds") if k in last}
    if extra:
        parts.append(measures_table(extra))
    return "".join(parts)


def _evaluations_html(run, pos: dict, found: list[tuple[str, dict]]) -> str | None:
    """The Evaluations section for (file name, result) pairs, or None when there are none."""
    if not found:
        return None
    parts = []
    for name, result in found:
        parts.append(f"<h3>{esc(name)}</h3>")
        how = ("exact likelihood" if result.get("exact") else
               f"k = {result['num_samples']} importance samples per example" if "num_samples" in result else "")
        made = f"made at {position_text(result)}" if "step" in result else "position not recorded"
        parts.append(f"<p>Split {esc(str(result.get('split', '?')))}, {result.get('num_examples', '?')} examples"
                     f"{', ' + esc(how) if how else ''}; {esc(made)}.</p>")
        stale = stale_warning(result, pos, name)
        if stale:
            parts.append(warning(stale))
        if result.get("likelihood_note"):
            parts.append(note(f"What the likelihood is: {result.get('likelihood_kind')} ({result['likelihood_note']})."))
        parts.append(measures_table({k: v for k, v in result.items()
                                     if k not in EVAL_SKIP and isinstance(v, (int, float, str))}))
    return "".join(parts)


def _literature(run) -> tuple[str | None, str]:
    """(section, why it is missing): published values for this data and likelihood beside the run's."""
    spec = run.data_spec
    over = likelihood_over(spec.preprocessing, likelihood_meaning_of(run).note) if has_likelihood(run.model) else None
    refs = references_for(spec.source, over)
    if not refs:
        return None, (f"no published reference in zspace's table for {spec.source} ({spec.preprocessing})")
    mine = {}
    for name, result in evaluations(run):
        for key in ("nll", "bits_per_dim"):
            if isinstance(result.get(key), (int, float)):
                mine.setdefault(key, (result[key], name))
    rows = []
    for r in refs:
        name, unit, better, _ = measure_label(r.measure)
        have = mine.get(r.measure)
        rows.append(["<td>" + esc(r.model) + "</td>", f"<td>{esc(name)}</td>", num_cell(r.value, unit),
                     f"<td>{esc(unit)}</td>", f"<td>{esc(better)}</td>",
                     num_cell(have[0] - r.value, f"this run ({have[1]}) minus the reference") if have else "<td>—</td>",
                     f'<td class="meaning">{esc(r.source)}</td>'])
    text = ("<p>Test likelihoods published for " + esc(spec.source) + " with the same kind of likelihood ("
            + esc(spec.preprocessing) + "). The difference column is this run's evaluation minus the reference "
            "(for NLL and bits/dim, negative is better).</p>")
    if spec.preprocessing == "static-binarize":
        text += note("zspace's static binarization is one fixed seeded draw, not Larochelle & Murray's file: "
                     "close to the papers' test set, not identical.")
    if not mine:
        text += note("This run has no evaluation yet (zspace eval RUN) to set beside them.")
    return text + table(["model", "measure", "value", "unit", "better", "this run − reference", "source"], rows), ""


def _history(run) -> str:
    history = run.history()
    charts = history_charts([("", history)])
    keys = list(dict.fromkeys(k for row in history for k in row))
    rows = [[num_cell(row.get(k, "—")) for k in keys] for row in history]
    full = table([measure_label(k)[0] if k not in ("epoch", "step") else k for k in keys], rows)
    return (charts + note("Hover a point for its value. Every row of the training log (click a header to sort):")
            + f"<details><summary>{len(history)} rows</summary>{full}</details>")


def _vector_table(rows: list[tuple[str, torch.Tensor]], max_cols: int = 12) -> str:
    """Rows of (label, (D,) vector) as a table, for data that are not images."""
    d = rows[0][1].numel()
    cols = min(d, max_cols)
    headers = ["row"] + [f"x{i}" for i in range(cols)] + (["…"] if d > cols else [])
    body = [[f"<td>{esc(label)}</td>"] + [num_cell(float(v)) for v in vec.flatten()[:cols]]
            + (["<td>…</td>"] if d > cols else []) for label, vec in rows]
    return table(headers, body, sortable=False)


def _reconstructions_table(run) -> str:
    from ..tasks import reconstruct_run

    rec = reconstruct_run(run, 5)
    rows = []
    for i in range(len(rec.inputs)):
        rows += [(f"{i} input", rec.inputs[i].float()), (f"{i} reconstruction", rec.outputs[i].float())]
    mse = float(((rec.outputs.float() - rec.inputs.float()) ** 2).mean())
    return (note(f"The first {len(rec.inputs)} test rows (model inputs, preprocessing "
                 f"{run.data_spec.preprocessing}) and their reconstructions (decoder mean); mean squared error "
                 f"over them {mse:.4g} per value.")
            + _vector_table(rows))


def _samples_table(run, seed: int) -> str:
    with seeded(seed):
        x = run.sample(6).cpu()
    return (note(f"6 rows drawn from the prior and decoded (decoder mean), seed {seed}, in model-input units.")
            + _vector_table([(f"sample {i}", x[i]) for i in range(len(x))]))


def _activity_table(act) -> str:
    rows = [[f"<td>z{d}</td>", num_cell(float(act.kl[d]), "nats"), num_cell(float(act.variance[d])),
             f"<td>{'yes' if act.active[d] else 'no'}</td>"] for d in act.ranked()]
    return (f"<p>{act.num_active} of {len(rows)} dimensions active (A = Var<sub>x</sub> E<sub>q</sub>[z<sub>d</sub>] "
            f"&gt; {act.threshold:g}, Burda et al. 2016), measured on {act.num_examples} test examples; ranked by "
            "KL (click a header to sort). KL is the mean KL(q(z<sub>d</sub>|x) ‖ N(0, 1)) in nats: near 0, the "
            "dimension carries no information.</p>"
            + table(["dimension", "KL (nats)", "A (activity)", "active"], rows))


Section = tuple[str, Callable[[], "Path | str | None"]]


def _sections(run, seed: int, figs: Path) -> tuple[list[Section], list[str]]:
    """The figure sections that apply to the run, and a line for each left out."""
    model = run.model
    shape = tuple(model.config.input_shape)
    images = as_images(torch.zeros(1, *shape), shape) is not None
    has_code = isinstance(model, ContinuousCode)
    out: list[Section] = []
    missing: list[str] = []
    if isinstance(model, Reconstructs):
        out.append(("Reconstructions", (lambda: save_reconstructions(run, figs / "reconstructions.png"))
                    if images else (lambda: _reconstructions_table(run))))
    else:
        missing.append("Reconstructions (the model has no encoder)")
    if isinstance(model, SamplesFromPrior):
        out.append(("Samples from the prior", (lambda: save_samples(run, figs / "samples.png", seed=seed))
                    if images else (lambda: _samples_table(run, seed))))
        if model.num_classes and images:
            out.append(("Samples per class", lambda: lf.save_class_samples(run, figs / "class_samples.png", seed=seed)))
    else:
        missing.append("Samples from the prior (the model has no prior to sample)")
    if has_code:
        act = lf.activity(run)                       # measured once, used three times
        plane = tuple(int(d) for d in act.ranked()[:2]) if model.code_dim > 2 else None
        out.append(("Active units and KL per dimension", lambda: _activity_table(act)))
        if images:
            out.append(("Traversals", lambda: lf.save_traversal(run, figs / "traversal.png", measured=act)))
            if isinstance(model, SamplesFromPrior):
                out.append(("Manifold", lambda: lf.save_manifold(run, figs / "manifold.png", plane=plane)))
            else:
                missing.append("Manifold (the grid Φ⁻¹(u) is read in prior units; this model has no prior)")
            out.append(("Interpolations", lambda: lf.save_interpolations(run, figs / "interpolations.png", seed=seed)))
        else:
            missing.append("Traversals, Manifold, Interpolations (the data are not images)")
        out.append(("Latent scatter", lambda: lf.save_scatter(run, figs / "scatter.png")))
    else:
        missing.append("Latent-space figures (the model has no continuous code)")
    return out, missing


def write_report(run, path: str | Path | None = None, seed: int = 0) -> Path:
    """Writes the run's report (default RUN/report.html) and returns its path."""
    if run.path is None:
        raise ConfigError("a report needs a run folder (train with out=...)")
    out = Path(path) if path is not None else run.path / "report.html"
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"{out}: the report must end in .html")
    pos = run.position()
    spec = run.data_spec
    header = (f"<p>Run folder <code>{esc(str(run.path))}</code>; data <b>{esc(spec.source)}</b> "
              f"({esc(spec.preprocessing)}); zspace {esc(str(run.config.get('zspace_version')))}, created "
              f"{esc(str(run.config.get('created', '?')))}.<br>Weights: <b>{esc(position_text(pos))}</b>. Every "
              "figure and table below is drawn from these weights unless it says otherwise.</p>")
    evals = _evaluations_html(run, pos, evaluations(run))
    sections: list[tuple[str, str]] = [("Metrics", _metrics(run, pos, evals is not None))]
    stale = [w for name, r in evaluations(run) if (w := stale_warning(r, pos, name))]
    if stale:
        header += warning(f"{len(stale)} evaluation(s) are not of these weights: see Evaluations.")
    missing = []
    if evals is not None:
        sections.append(("Evaluations", evals))
    else:
        missing.append("Evaluations (none yet: zspace eval RUN writes one)")
    literature, why = _literature(run)
    if literature is not None:
        sections.append(("Compared with the literature", literature))
    elif spec.source in ("mnist", "fashion-mnist", "cifar10"):
        missing.append(f"Compared with the literature ({why})")
    sections.append(("Training curves", _history(run)))
    figs = run.path / "figures"
    made_by, left_out = _sections(run, seed, figs)
    bar = Progress(len(made_by), "report", "sections")   # shown by the CLI (core.progress)
    for title, make in made_by:
        bar.set_description(f"report: {title.lower()}")
        bar.update(1)
        try:
            made = make()
        except ZspaceError as e:
            sections.append((title, note(f"not drawn: {e}")))
            continue
        if made is None:
            left_out.append(f"{title} (not available for this model or data)")
        elif isinstance(made, Path):
            sections.append((title, img(made, title) + note(f"From {position_text(pos)}.")))
        else:
            sections.append((title, made))
    bar.close()
    sections.append(("Configuration", f"<pre>{esc(json.dumps(run.config, indent=2))}</pre>"))
    missing += left_out
    if missing:
        sections.append(("Not shown for this run", "<ul>" + "".join(f"<li>{esc(m)}</li>" for m in missing)
                         + "</ul>"))
    write_text_atomic(out, page(f"zspace report: {run.describe()}", sections, header))
    return out
