"""The HTML report and the comparison page: what they say, on small digit runs and a CSV run
(the pages in a browser: tests/test_browser.py)."""
import html
import json
import re

import numpy as np
import pytest
import torch

import zspace
from zspace.cli import main
from zspace.errors import ConfigError
from zspace.evaluation.glossary import MEASURES, lookup
from zspace.evaluation.literature import REFERENCES, likelihood_over, references_for
from zspace.report import report, write_comparison, write_report
from zspace.report.html import _evaluations_html, _literature, stale_warning
from zspace.tasks import evaluate_run, reconstruct_run, write_evaluation

from .conftest import tiny_config


def text(page_path):
    return html.unescape(re.sub(r"<[^>]+>", " ", page_path.read_text()))


def test_evaluation_json_records_the_weights_position(report_runs, tmp_path):
    a, _ = report_runs
    run = zspace.load_run(a)
    assert run.position() == {"epoch": 3, "batch": 0, "step": run.history()[-1]["step"], "checkpoint": "epoch-0003"}
    out = write_evaluation(evaluate_run(run, nll_samples=3, limit=20), tmp_path / "e.json", run.path)
    saved = json.loads(out.read_text())
    assert {k: saved[k] for k in ("epoch", "batch", "step", "checkpoint")} == run.position()


def test_stale_and_unplaced_evaluations_are_flagged(report_runs, report_page):
    a, _ = report_runs
    run = zspace.load_run(a)
    stale = json.loads((a / "eval-test-k5.json").read_text())
    assert stale["epoch"] == 2 and stale["step"] < run.position()["step"]
    page = text(report_page)
    assert "eval-test-k5.json was made at checkpoint epoch-0002 (epoch 2, step 46), but this report's weights " \
           "are at checkpoint epoch-0003 (epoch 3, step 69)" in page
    assert "1 evaluation(s) are not of these weights" in page
    # an evaluation of the current weights carries no warning; one without a position does
    pos = run.position()
    assert stale_warning(stale, pos, "x") is not None
    assert stale_warning({**stale, **pos}, pos, "x") is None
    current = _evaluations_html(run, pos, [("now.json", {**stale, **pos})])
    assert "⚠" not in current and "made at checkpoint epoch-0003 (epoch 3, step 69)" in html.unescape(current)
    old = {k: v for k, v in stale.items() if k not in ("epoch", "batch", "step", "checkpoint")}
    assert "old.json records no epoch or step" in html.unescape(_evaluations_html(run, pos, [("old.json", old)]))


def test_every_number_on_the_page_has_a_glossary_entry(report_runs, report_page):
    a, _ = report_runs
    run = zspace.load_run(a)
    logged = {k for row in run.history() for k in row}
    evaluated = {k for k, v in json.loads((a / "eval-test-k5.json").read_text()).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
    unknown = [k for k in logged | evaluated if lookup(k)[1] is None]
    assert not unknown, f"no glossary entry for {unknown}"
    assert lookup("test_elbo") == ("test", MEASURES["elbo"]) and lookup("bits_per_dim")[0] is None
    page = report_page.read_text()
    for m in (MEASURES["elbo"], MEASURES["nll"], MEASURES["bits_per_dim"]):
        assert html.escape(m.meaning) in page
    assert "nats/example" in page and "↑ higher" in page and "↓ lower" in page
    nav = re.search(r'<nav class="toc".*?</nav>', page).group(0)
    toc = re.findall(r'<a href="#([a-z0-9-]+)">', nav)
    ids = re.findall(r'<h2 id="([a-z0-9-]+)">', page)
    assert toc == ids and "metrics" in ids and "evaluations" in ids and "training-curves" in ids


def test_reconstructions_show_grey_levels_of_binarized_inputs(report_runs):
    run = zspace.load_run(report_runs[0])          # trained on dynamically binarized digits
    rec = reconstruct_run(run, 8)
    assert set(torch.unique(rec.inputs).tolist()) <= {0.0, 1.0}
    grey = rec.grey
    assert ((grey > 0) & (grey < 1)).any()         # true grey levels, not a draw
    stored = np.asarray(run.data().test.read(np.arange(8)), dtype=np.float64)
    expected = stored / 255.0 if run.data().test.is_8bit else stored
    assert np.allclose(grey.numpy(), expected.reshape(grey.shape), atol=1e-6)


def test_literature_values_apply_only_to_their_data_and_likelihood(report_runs):
    assert {r.value for r in references_for("mnist", "dynamic-binary")} == {86.76, 85.54, 84.78}
    assert [r.value for r in references_for("mnist", "static-binary")] == [81.30, 79.20]
    assert references_for("mnist", None) == [] and references_for("digits", "dynamic-binary") == []
    assert likelihood_over("uint8", "NLL of 8-bit data; bits per 8-bit subpixel") == "8-bit"
    assert likelihood_over("none", "continuous density on none data") is None
    assert all(r.source and r.model for r in REFERENCES)
    run = zspace.load_run(report_runs[0])
    section, why = _literature(run)
    assert section is None and "digits" in why
    run.config["data"]["source"] = "mnist"            # read as an MNIST run: its evaluation sits beside Burda's
    section, _ = _literature(run)
    nll = json.loads((report_runs[0] / "eval-test-k5.json").read_text())["nll"]
    assert "Burda, Grosse &amp; Salakhutdinov 2016, Table 1" in section and "86.76" in section
    assert f'data-v="{nll - 86.76!r}"' in section


def test_a_csv_run_shows_what_applies(tmp_path):
    rng = np.random.default_rng(0)
    rows = "\n".join(",".join(f"{v:.4f}" for v in r) + f",{int(l)}"
                     for r, l in zip(rng.normal(size=(120, 5)), rng.random(120) < 0.2))
    (tmp_path / "t.csv").write_text("a,b,c,d,e,label\n" + rows + "\n")
    run = zspace.train("vae", str(tmp_path / "t.csv"), label_column="label", out=tmp_path / "tab",
                       config=tiny_config(epochs=1), progress=False, figures=False, latent_dim=2, hidden=(8,),
                       likelihood="gaussian-learned")
    page = write_report(run).read_text()
    assert "not available" not in page and "not drawn" not in page
    for shown in ("Metrics", "Training curves", "Reconstructions", "Samples from the prior",
                  "Active units and KL per dimension", "Latent scatter", "Configuration"):
        assert f">{shown}</h2>" in page
    assert "0 reconstruction" in page and "sample 0" in page            # tables, not images
    assert page.count("<img") == 1                                      # the scatter plot alone
    assert "Traversals, Manifold, Interpolations (the data are not images)" in page
    assert ">Compared with the literature</h2>" not in page and ">Evaluations</h2>" not in page


def test_comparison_page(report_runs, tmp_path, capsys):
    a, b = report_runs
    out = tmp_path / "cmp.html"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    assert f"comparison: {out}" in capsys.readouterr().out
    page = out.read_text()
    for section in ("Runs", "Final metrics", "Evaluations", "Training curves", "Reconstructions",
                    "Samples from the prior", "Configuration differences"):
        assert f">{section}</h2>" in page
    assert "<th>a</th><th>b</th>" in page and page.count("<img") == 4
    diffs = page[page.index('id="configuration-differences"'):]
    assert "model.config.latent_dim" in diffs and "train.epochs" in diffs and "data.source" not in diffs
    # the best test ELBO is bold, and only one of the two
    row = re.search(r"ELBO \(test\).*?</tr>", page).group(0)
    values = [float(v) for v in re.findall(r'data-v="([^"]+)"', row)]
    best = re.search(r'class="n best" data-v="([^"]+)"', row)
    assert best and float(best.group(1)) == max(values) and row.count("best") == 1
    assert "a/eval-test-k5.json was made at checkpoint epoch-0002" in page


def test_report_arguments_are_checked(report_runs, tmp_path, capsys):
    a, b = report_runs
    for argv, message in (([a, b], "give the page's file with --out"), ([a, a, "--out", tmp_path / "x.html"],
                          "named twice"), ([a, "--out", a / "checkpoints" / "x.html"], "own files"),
                          ([a, b, "--out", tmp_path / "x.txt"], "must end in .html")):
        assert main(["report", *map(str, argv)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    with pytest.raises(ConfigError, match="at least two"):
        write_comparison([zspace.load_run(a)], tmp_path / "c.html")
    assert report([a, b], tmp_path / "two.html") == tmp_path / "two.html"
