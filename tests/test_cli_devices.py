"""--device on every verb that computes: `cpu` is accepted and gives the numbers the default
gives; a GPU this machine lacks is refused in one line (exit 2) before anything is written."""
import csv
import io
import json
import re

import numpy as np
import pytest
import torch

from zspace import ConfigError
from zspace.cli import build_parser, main

from .test_cli_ux import _walk, run_cli

# a device this machine lacks: "cuda" without a GPU, one past the last with GPUs
MISSING = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny digits VAE (one epoch) that the verbs below read."""
    path = tmp_path_factory.mktemp("devices") / "run"
    assert main([str(a) for a in ("train", "vae", "--data", "digits", "--latent-dim", 3, "--hidden", 16,
                                  "--epochs", 1, "--batch-size", 64, "--eval-limit", 50, "--threads", 1,
                                  "--no-progress", "--out", path)]) == 0
    return path


def test_every_verb_with_threads_has_device():
    lacking = [" ".join(path) for path, p in _walk(build_parser())
               if any("--threads" in a.option_strings for a in p._actions)
               and not any("--device" in a.option_strings for a in p._actions)]
    assert not lacking, lacking


# every verb that computes, as a user would type it ({run}: a real run, {tmp}: where outputs would go)
VERBS = [
    "eval {run}", "classify {run}", "compare --data digits --variants pca,linear --out {tmp}/cmp",
    "scorecard {run} --out {tmp}/card", "report {run} --out {tmp}/r.html",
    "explore traverse {run} --out {tmp}/t.png", "explore manifold {run} --plane 0,1 --out {tmp}/m.png",
    "explore interpolate {run} --out {tmp}/i.png", "explore scatter {run} --out {tmp}/s.png",
    "explore attribute {run} --positive 1 --out {tmp}/a.png", "explore classes {run} --out {tmp}/c.png",
    "explore activity {run}", "detect fit --data digits --out {tmp}/det", "detect fit --run {run} --out {tmp}/det",
    "detect score {tmp}/det --data digits --out {tmp}/s.csv", "demo --data digits --out {tmp}/demo",
    "sae harvest --model stories260K --hook resid_post.0 --corpus {tmp}/c.txt --out {tmp}/acts",
    "sae eval {run}", "sae browse {run} --out {tmp}/b.html", "sae steer {run} --feature 0 --value 1 --prompt hi",
]


@pytest.mark.parametrize("verb", VERBS, ids=[" ".join(v.split()[:2]) for v in VERBS])
def test_a_gpu_this_machine_lacks_is_refused_in_one_line(verb, run, tmp_path, capsys):
    argv = verb.format(run=run, tmp=tmp_path).split()
    code, out, err = run_cli(capsys, *argv, "--device", MISSING)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert MISSING in err and ("no CUDA GPU" in err or "GPU(s) present" in err), err
    assert not list(tmp_path.iterdir())            # refused before anything was written


def _without_times(csv_text: str) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "train_seconds"} for row in csv.DictReader(io.StringIO(csv_text))]


def test_compare_on_cpu_gives_the_default_numbers(tmp_path, capsys):
    base = ["compare", "--data", "digits", "--variants", "pca,linear", "--code-size", 4, "--epochs", 1,
            "--train-limit", 400, "--threads", 1, "--no-progress"]
    tables = []
    for extra, out in (([], tmp_path / "a"), (["--device", "cpu"], tmp_path / "b")):
        code, _, err = run_cli(capsys, *base, *extra, "--out", out)
        assert code == 0, err
        tables.append(_without_times((out / "comparison.csv").read_text()))
    assert tables[0] == tables[1] and [r["variant"] for r in tables[0]] == ["pca", "linear"]


def test_explore_and_report_on_cpu_give_the_default_output(run, tmp_path, capsys):
    outs = [run_cli(capsys, "explore", "activity", run, *extra)[1] for extra in ([], ["--device", "cpu"])]
    assert outs[0] == outs[1] and "dimensions active" in outs[0]
    pages = []
    for extra, name in (([], "a.html"), (["--device", "cpu"], "b.html")):
        code, _, err = run_cli(capsys, "report", run, "--out", tmp_path / name, "--no-progress", *extra)
        assert code == 0, err
        pages.append(re.sub(r"data:image/[^\"']+", "", (tmp_path / name).read_text()))
    assert pages[0] == pages[1] and "Active units" in pages[0]   # the same tables and numbers


def test_tabular_detector_on_cpu_scores_as_the_default_and_saves_its_device(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    x[:10] += 5
    csv = tmp_path / "rows.csv"
    csv.write_text("a,b,c,d\n" + "\n".join(",".join(f"{v:.5f}" for v in r) for r in x) + "\n")
    scores = []
    for extra, name in (([], "a"), (["--device", "cpu"], "b")):
        code, _, err = run_cli(capsys, "detect", "fit", "--data", csv, "--epochs", 2, "--latent-dim", 2, "--hidden",
                               "8", "--num-samples", 4, "--out", tmp_path / f"det-{name}", *extra)
        assert code == 0, err
        code, _, err = run_cli(capsys, "detect", "score", tmp_path / f"det-{name}", "--data", csv,
                               "--out", tmp_path / f"{name}.csv", *extra)
        assert code == 0, err
        scores.append((tmp_path / f"{name}.csv").read_text())
    assert scores[0] == scores[1] and len(scores[0].splitlines()) == 201
    assert json.loads((tmp_path / "det-b" / "detector.json").read_text())["params"]["device"] == "cpu"


def test_tabular_detector_refuses_a_missing_gpu_at_fit_and_load(tmp_path):
    from zspace.detect import VAEOutlierDetector, load_detector, save_detector

    x = np.random.default_rng(1).normal(size=(60, 3))
    with pytest.raises(ConfigError, match="CUDA|GPU"):
        VAEOutlierDetector(epochs=1, device=MISSING).fit(x)
    with pytest.raises(ConfigError, match="unknown device"):
        VAEOutlierDetector(epochs=1, device="gpu0").fit(x)
    det = VAEOutlierDetector(epochs=1, hidden=(8,), num_samples=4, random_state=0).fit(x)
    save_detector(det, tmp_path / "det")
    with pytest.raises(ConfigError, match="CUDA|GPU"):
        load_detector(tmp_path / "det", device=MISSING)
    again = load_detector(tmp_path / "det", device="cpu")
    assert np.array_equal(again.decision_function(x), det.decision_function(x))


def test_image_detector_on_cpu_fits_as_the_default(run, tmp_path, capsys):
    lines = []
    for extra, name in (([], "a"), (["--device", "cpu"], "b")):
        code, out, err = run_cli(capsys, "detect", "fit", "--run", run, "--limit", 200, "--num-samples", 4,
                                 "--out", tmp_path / name, *extra)
        assert code == 0, err
        lines.append(out.splitlines()[0])
    assert lines[0] == lines[1] and "threshold" in lines[0]


def test_scorecard_on_cpu_gives_the_default_cells(run):
    from torch import nn

    from zspace.evaluation.features import load_extractor
    from zspace.scorecard import scorecard

    cards = []
    for device in (None, "cpu"):
        torch.manual_seed(0)
        ext = load_extractor(nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh()), name="random-8")
        kw = {} if device is None else {"device": device}
        cards.append(list(scorecard([run], n=60, extractor=ext, **kw).columns.values())[1])
    timed = ("efficient sampling", "efficient likelihood")           # wall times differ; the NLL must not
    assert {k: v for k, v in cards[0].items() if k not in timed} == {k: v for k, v in cards[1].items()
                                                                      if k not in timed}
    nll = [c["efficient likelihood"].split(" nats")[0] for c in cards]
    assert nll[0] == nll[1] and nll[0].startswith("NLL")
    with pytest.raises(ConfigError, match="CUDA|GPU"):
        scorecard([run], n=60, extractor=ext, device=MISSING)


def test_demo_on_cpu_runs_on_the_embedded_digits(tmp_path, capsys):
    code, out, err = run_cli(capsys, "demo", "--data", "digits", "--epochs", 1, "--nll-samples", 2, "--device", "cpu",
                             "--threads", 1, "--no-progress", "--out", tmp_path / "demo")
    assert code == 0, err
    assert (tmp_path / "demo" / "summary.md").is_file() and (tmp_path / "demo" / "report.html").is_file()


def test_library_entry_points_refuse_a_missing_gpu_before_work(run, tmp_path):
    from zspace.compare import compare
    from zspace.demo import run_demo
    from zspace.image_detect import fit_run_detector
    from zspace.report import report

    for call in (lambda: compare("digits", ("pca",), device=MISSING, out=tmp_path / "c"),
                 lambda: run_demo(tmp_path / "d", data="digits", device=MISSING),
                 lambda: fit_run_detector(run, device=MISSING),
                 lambda: report([run], tmp_path / "r.html", device=MISSING)):
        with pytest.raises(ConfigError, match="CUDA|GPU"):
            call()
    assert not list(tmp_path.iterdir())
