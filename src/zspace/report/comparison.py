"""`zspace report RUN1 RUN2 ...`: several runs side by side on one self-contained page.

What each run is (model, data, weights), their last logged metrics and their evaluations in
one table per kind with units and directions (the best value in bold where a direction is
known and the runs share data and preprocessing), the training curves overlaid (values on
hover), reconstructions and samples next to each other, and the config keys that differ.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..core.config import flatten
from ..core.io import write_text_atomic
from ..errors import ConfigError, ZspaceError
from ..models.capabilities import Reconstructs, SamplesFromPrior
from .figures import as_images, save_reconstructions, save_samples
from .html import evaluations, position_text, stale_warning, write_report
from .page import esc, history_charts, img, measure_label, note, num_cell, page, table, warning

EVAL_KEYS = ("nll", "bits_per_dim", "elbo", "rec", "kl", "reconstruction_mse", "num_samples", "num_examples")


def _labels(runs) -> list[str]:
    names = [r.path.name for r in runs]
    return names if len(set(names)) == len(names) else [str(r.path) for r in runs]


def _row(key: str, values: list, comparable: bool) -> list[str]:
    """measure, unit, better, then one cell per run, the best in bold when it is meaningful."""
    name, unit, better, meaning = measure_label(key)
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    best = None
    if comparable and better and len(numbers) > 1:
        best = max(numbers) if better.startswith("↑") else min(numbers)
    cells = []
    for v in values:
        cell = num_cell(v if v is not None else "—", unit)
        if best is not None and v == best:
            cell = cell.replace('<td class="n"', '<td class="n best"', 1)
        cells.append(cell)
    return [f'<td title="{esc(meaning)}">{esc(name)}</td>', f"<td>{esc(unit)}</td>",
            f'<td class="better">{esc(better)}</td>', *cells]


def _runs_table(runs, labels) -> str:
    fields = [("model", lambda r: r.model.describe()), ("data", lambda r: r.data_spec.source),
              ("preprocessing", lambda r: r.data_spec.preprocessing), ("weights", lambda r: position_text(r.position())),
              ("parameters", lambda r: sum(p.numel() for p in r.model.parameters())),
              ("created", lambda r: r.config.get("created", "?")), ("folder", lambda r: str(r.path))]
    rows = [[f"<th>{esc(name)}</th>", *[num_cell(get(r)) for r in runs]] for name, get in fields]
    return table(["", *labels], rows, sortable=False)


def _metrics_table(runs, labels, comparable: bool) -> str:
    lasts = [(r.history() or [{}])[-1] for r in runs]
    keys = sorted({k for last in lasts for k in last if k.startswith(("test_", "train_"))},
                  key=lambda k: (not k.startswith("test_"), k))
    rows = [_row(k, [last.get(k) for last in lasts], comparable) for k in keys]
    steps = ", ".join(f"{lab}: epoch {last.get('epoch')}, step {last.get('step')}" for lab, last in zip(labels, lasts))
    return (note(f"The last row of each run's training log ({steps}); test terms on each run's per-epoch "
                 "evaluation examples. Bold: the best where a direction is known. Hover a value for its full "
                 "precision, a measure for its meaning.")
            + table(["measure", "unit", "better", *labels], rows))


def _evaluations_table(runs, labels, comparable: bool) -> str | None:
    found = [dict(evaluations(r)) for r in runs]
    names = sorted({n for f in found for n in f})
    if not names:
        return None
    parts = []
    for name in names:
        results = [f.get(name) for f in found]
        keys = [k for k in EVAL_KEYS if any(isinstance(r, dict) and k in r for r in results)]
        rows = [_row(k, [r.get(k) if r else None for r in results], comparable) for k in keys]
        parts.append(f"<h3>{esc(name)}</h3>" + table(["measure", "unit", "better", *labels], rows))
        for lab, r, run in zip(labels, results, runs):
            stale = stale_warning(r, run.position(), f"{lab}/{name}") if r else None
            if stale:
                parts.append(warning(stale))
    return "".join(parts)


def _side_by_side(runs, labels, draw) -> str | None:
    cells = []
    for lab, run in zip(labels, runs):
        try:
            made = draw(run)
        except ZspaceError as e:
            made = str(e)
        if isinstance(made, Path):
            cells.append(f"<div><b>{esc(lab)}</b>{img(made, lab)}</div>")
        else:
            cells.append(f"<div><b>{esc(lab)}</b>" + note(made or "not available for this model or data") + "</div>")
    return '<div class="cols">' + "".join(cells) + "</div>"


def _config_differences(runs, labels) -> str:
    flats = [flatten({k: v for k, v in r.config.items() if k not in ("created",)}) for r in runs]
    keys = sorted({k for f in flats for k in f})
    rows = [[f"<td>{esc(k)}</td>", *[num_cell(json.dumps(f.get(k)) if k in f else "—") for f in flats]]
            for k in keys if len({json.dumps(f.get(k)) for f in flats}) > 1]
    if not rows:
        return note("The runs' configurations are identical (apart from when they were created).")
    return table(["config key", *labels], rows)


def write_comparison(runs: list, path: str | Path, seed: int = 0) -> Path:
    """Writes one page comparing ``runs`` (opened runs with folders) and returns its path."""
    if len(runs) < 2:
        raise ConfigError("a comparison needs at least two runs")
    out = Path(path)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"{out}: the comparison page must end in .html")
    labels = _labels(runs)
    data = {(r.data_spec.source, r.data_spec.preprocessing) for r in runs}
    comparable = len(data) == 1
    header = (f"<p>{len(runs)} runs: " + ", ".join(f"<b>{esc(lab)}</b>" for lab in labels) + ". Every figure is "
              "drawn from each run's latest weights.</p>")
    if not comparable:
        header += warning("the runs differ in data or preprocessing (" + "; ".join(f"{s} ({p})" for s, p in sorted(data))
                          + "): their numbers are not directly comparable, and no best value is marked.")
    sections = [("Runs", _runs_table(runs, labels)), ("Final metrics", _metrics_table(runs, labels, comparable))]
    missing = []
    evals = _evaluations_table(runs, labels, comparable)
    if evals is not None:
        sections.append(("Evaluations", evals))
    else:
        missing.append("Evaluations (none of the runs has one: zspace eval RUN)")
    sections.append(("Training curves", history_charts([(lab, r.history()) for lab, r in zip(labels, runs)], ("test",))
                     + note("Test terms of the per-epoch evaluation; hover a point for its value.")))

    def images(run) -> bool:
        shape = tuple(run.model.config.input_shape)
        return as_images(torch.zeros(1, *shape), shape) is not None
    if any(isinstance(r.model, Reconstructs) and images(r) for r in runs):
        sections.append(("Reconstructions", _side_by_side(runs, labels, lambda r: save_reconstructions(
            r, r.path / "figures" / "reconstructions.png") if images(r) else None)))
    else:
        missing.append("Reconstructions (no run reconstructs images)")
    if any(isinstance(r.model, SamplesFromPrior) and images(r) for r in runs):
        sections.append(("Samples from the prior", _side_by_side(runs, labels, lambda r: save_samples(
            r, r.path / "figures" / "samples.png", seed=seed) if images(r) else None)))
    else:
        missing.append("Samples from the prior (no run samples images)")
    sections.append(("Configuration differences", _config_differences(runs, labels)))
    if missing:
        sections.append(("Not shown", "<ul>" + "".join(f"<li>{esc(m)}</li>" for m in missing) + "</ul>"))
    write_text_atomic(out, page("zspace comparison: " + " vs ".join(labels), sections, header))
    return out


def report(run_dirs: list, out: str | Path | None = None, seed: int = 0, device: str = "cpu") -> Path:
    """One run: its report (default RUN/report.html); several: their comparison page (``out``
    required). The runs are loaded onto ``device`` (cpu, cuda, cuda:N), where their figures are
    computed. Returns the page's path."""
    from ..training import load_run
    from ..training.run import check_output_path

    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise ConfigError("give at least one run folder")
    if len({p.resolve() for p in paths}) < len(paths):
        raise ConfigError("a run is named twice; give each run folder once")
    if len(paths) > 1 and out is None:
        raise ConfigError(f"comparing {len(paths)} runs: give the page's file with --out (e.g. --out compare.html)")
    if out is not None:
        check_output_path(out)     # never over a run's own config, metrics or checkpoints
    runs = [load_run(p, map_location=device) for p in paths]
    if len(runs) == 1:
        return write_report(runs[0], out, seed=seed)
    return write_comparison(runs, out, seed=seed)

