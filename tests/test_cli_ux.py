"""The command line as a user meets it: progress on long jobs, `zspace runs`, config files,
help texts, devices and threads, detect/compare/scorecard output."""
import argparse
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from zspace.cli import build_parser, main
from zspace.core.compute import MAX_DEFAULT_THREADS, default_threads, usable_cores
from zspace.core.progress import Progress, showing

TRAIN = ["train", "vae", "--data", "digits", "--latent-dim", "3", "--hidden", "32", "--epochs", "2",
         "--batch-size", "64", "--eval-limit", "100"]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    """One tiny finished run (seed 3), trained once for the tests that only read or copy it."""
    run = tmp_path_factory.mktemp("shared") / "run"
    assert main([str(a) for a in (*TRAIN, "--no-progress", "--seed", 3, "--out", run)]) == 0
    return run


@pytest.fixture
def run_copy(trained_once, tmp_path):
    """A copy of the shared run that a test may write into."""
    return Path(shutil.copytree(trained_once, tmp_path / "run"))


# ---- progress -----------------------------------------------------------------------------------
def test_progress_off_a_terminal_prints_plain_lines_at_each_tenth():
    stream = io.StringIO()            # not a TTY: plain lines, never carriage returns
    with Progress(200, "eval", "examples", enabled=True, stream=stream, every=3600) as bar:
        for _ in range(200):
            bar.update(1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in stream.getvalue()
    assert lines[0].startswith("eval: 10% (20/200 examples)") and "ETA" in lines[0]
    assert lines[-1].startswith("eval: 100% (200/200 examples)") and "ETA" not in lines[-1]


def test_progress_follows_the_process_setting_unless_asked_explicitly():
    stream = io.StringIO()
    Progress(10, "quiet", stream=stream, every=0).update(10)      # a library call: silent
    with showing(True):
        Progress(10, "shown", stream=stream, every=0).update(10)
    with showing(False):
        Progress(10, "off", enabled=True, stream=stream, every=0).update(10)   # --no-progress wins
    assert stream.getvalue().splitlines() == ["shown: 100% (10/10 it), 0 s"]


def test_training_and_eval_report_progress_with_a_whole_run_eta(tmp_path, capsys):
    code, out, err = run_cli(capsys, *TRAIN, "--out", tmp_path / "run")
    assert code == 0 and "\r" not in err
    steps = [line for line in err.splitlines() if line.startswith("epoch ") and "/46 steps" in line]
    assert any(line.startswith("epoch 1/2:") and "ETA" in line for line in steps)   # the ETA spans both epochs
    assert any(line.startswith("epoch 2/2: 100% (46/46 steps)") for line in steps)
    code, out, err = run_cli(capsys, "eval", tmp_path / "run", "--nll-samples", 5)
    assert code == 0 and "eval test (IS NLL, k=5): 100% (359/359 examples)" in err
    assert "± one standard error" in out and "--nll-samples 1000" in out
    code, out, err = run_cli(capsys, "eval", tmp_path / "run", "--nll-samples", 5, "--no-progress")
    assert code == 0 and err == ""


# ---- zspace runs ---------------------------------------------------------------------------------
def test_runs_lists_finished_interrupted_not_started_and_damaged_runs(trained_once, tmp_path, capsys):
    import zspace

    root = tmp_path / "runs"
    shutil.copytree(trained_once, root / "done")

    def stop(trainer, row):           # Ctrl-C right after epoch 1's checkpoint
        if row["epoch"] == 1:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        zspace.train("ae", "digits", out=root / "group" / "stopped", latent_dim=2, hidden=(16,),
                     config=zspace.TrainConfig(epochs=3, batch_size=64), progress=False, figures=False,
                     on_epoch_end=stop)
    shutil.copytree(root / "done", root / "broken-state")
    latest = (root / "broken-state" / "checkpoints" / "latest").read_text().strip()
    (root / "broken-state" / "checkpoints" / latest / "state.json").write_text("{not json")
    (root / "broken-config").mkdir()
    (root / "broken-config" / "config.json").write_text("[1, 2]")
    shutil.copytree(root / "done", root / "fresh")
    shutil.rmtree(root / "fresh" / "checkpoints")

    code, out, err = run_cli(capsys, "runs", root)
    assert code == 0 and err == "" and "Traceback" not in out
    rows = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert set(rows) == {"done", "group/stopped", "broken-state", "broken-config", "fresh"}
    assert rows["done"].rstrip().endswith("finished") and "epoch 2/2" in rows["done"] and "test_elbo" in rows["done"]
    assert "interrupted: resumable with --resume" in rows["group/stopped"] and "epoch 1/3" in rows["group/stopped"]
    assert "damaged" in rows["broken-state"] and "state.json" in rows["broken-state"]
    assert "damaged" in rows["broken-config"] and "config.json" in rows["broken-config"]
    assert "not started" in rows["fresh"]
    head, counts = out.splitlines()[-1].split(": ")
    assert head == "5 run(s)" and sorted(counts.split(", ")) == ["1 finished", "1 interrupted", "1 not started",
                                                                 "2 damaged"]
    # the interrupted one resumes (with another thread count: allowed, with a note)
    code, out, err = run_cli(capsys, "train", "ae", "--resume", root / "group" / "stopped", "--threads", 1,
                             "--no-progress")
    assert code == 0 and "epoch 3" in out
    assert "finished" in run_cli(capsys, "runs", root / "group")[1]

    code, _, err = run_cli(capsys, "runs", tmp_path / "nowhere")
    assert code == 2 and "no such folder" in err and len(err.strip().splitlines()) == 1


# ---- config files --------------------------------------------------------------------------------
def _weights(run):
    from safetensors.torch import load_file

    latest = (run / "checkpoints" / "latest").read_text().strip()
    return load_file(str(run / "checkpoints" / latest / "model.safetensors"))


def test_a_finished_runs_config_reproduces_it_and_flags_override_the_file(trained_once, tmp_path, capsys):
    first = trained_once
    again = tmp_path / "again"
    code, out, _ = run_cli(capsys, "train", "vae", "--config", first / "config.json", "--out", again, "--no-progress")
    assert code == 0
    a, b = _weights(first), _weights(again)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    cfg1, cfg2 = (json.loads((r / "config.json").read_text()) for r in (first, again))
    assert cfg1["model"] == cfg2["model"] and cfg1["train"] == cfg2["train"] and cfg1["data"] == cfg2["data"]

    code, _, _ = run_cli(capsys, "train", "vae", "--config", first / "config.json", "--epochs", 1,
                         "--latent-dim", 2, "--out", tmp_path / "changed", "--no-progress")
    changed = json.loads((tmp_path / "changed" / "config.json").read_text())
    assert code == 0 and changed["train"]["epochs"] == 1 and changed["model"]["config"]["latent_dim"] == 2
    assert changed["train"]["seed"] == 3 and changed["data"]["source"] == "digits"   # the rest from the file

    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"data": {"source": "digits"}, "train": {"epochs": 1, "batch_size": 64},
                                   "model": {"config": {"latent_dim": 2, "hidden": [16]}}}))
    assert run_cli(capsys, "train", "vae", "--config", partial, "--out", tmp_path / "p", "--no-progress")[0] == 0


def test_yaml_config_where_pyyaml_is_installed(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  source: digits\ntrain:\n  epochs: 1\n  batch_size: 64\n"
                    "model:\n  config:\n    latent_dim: 2\n    hidden: [16]\n")
    code, _, err = run_cli(capsys, "train", "vae", "--config", path, "--out", tmp_path / "y", "--no-progress")
    try:
        import yaml  # noqa: F401
    except ImportError:
        assert code == 2 and "PyYAML" in err
    else:
        assert code == 0
        assert json.loads((tmp_path / "y" / "config.json").read_text())["model"]["config"]["latent_dim"] == 2


@pytest.mark.parametrize("text, message", [
    ("[1]", "an object"),
    ('{"train": {"epochz": 3}}', "unknown key(s) in train: epochz"),
    ('{"train": {"lr": -1}}', "lr must be"),
    ('{"model": {"name": "ae"}}', "describes a 'ae' model"),
    ('{"data": {"colour": 1}}', "unknown key(s) in data: colour"),
    ('{"extra": {}}', "unknown section(s) extra"),
    ("{not json", "not valid JSON"),
])
def test_bad_config_files_are_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "c.json"
    path.write_text(text)
    code, _, err = run_cli(capsys, "train", "vae", "--config", path, "--out", tmp_path / "r")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


# ---- help ----------------------------------------------------------------------------------------
def _walk(parser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, path + (name,))


def test_every_verb_and_flag_has_a_description():
    missing = []
    for path, parser in _walk(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                missing += [" ".join(path + (n,)) for n in action.choices if not (helps.get(n) or "").strip()]
            elif not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing


def test_help_lists_allowed_values_and_only_the_flags_that_apply(capsys):
    def help_of(*argv):
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        return " ".join(capsys.readouterr().out.split())
    vae = help_of("train", "vae")
    for shown in ("{mlp,conv,resnet}", "gaussian-learned", "{constant,cosine,exponential}", "leaky-relu",
                  "--kl-warmup-epochs", "size of the latent code z"):
        assert shown in vae
    ae = help_of("train", "ae")
    assert "sparse-kl" in ae and "denoising-masking" in ae and "--kl-warmup-epochs" in ae   # its sparsity term
    for model in ("pixelcnn", "gated-pixelcnn", "vqvae", "prior"):      # nothing to warm up
        assert "--kl-warmup-epochs" not in help_of("train", model)
    verbs = help_of()
    assert "Variational autoencoder (Kingma & Welling 2014)" in help_of("train")
    assert "runs" in verbs
    parser = build_parser()
    for path, p in _walk(parser):   # one rule for --out: verbs that read one run default it into the run
        outs = [a for a in p._actions if "--out" in a.option_strings]
        if outs and path and path[0] in ("sample", "reconstruct", "encode", "denoise", "report", "explore"):
            assert not outs[0].required and "default RUN/" in outs[0].help, path


def test_outputs_default_into_the_run_folder(run_copy, capsys):
    run = run_copy
    for argv, made in ((["sample", run, "-n", 4], "samples.png"), (["reconstruct", run], "reconstructions.png"),
                       (["encode", run], "codes-test.npy"), (["explore", "manifold", run, "-n", 3, "--plane", "0,1"],
                                                           "explore-manifold.png")):
        code, out, err = run_cli(capsys, *argv)
        assert code == 0 and (run / made).is_file(), err
    assert np.load(run / "codes-test.npy").shape == (359, 3)


# ---- devices and threads -------------------------------------------------------------------------
def test_thread_default_does_not_oversubscribe():
    assert default_threads() == min(usable_cores(), MAX_DEFAULT_THREADS)


def test_a_gpu_this_machine_lacks_is_one_line(trained_once, capsys):
    from zspace import ConfigError, load_run

    run = trained_once
    # no GPU: "cuda" is refused; with GPUs, one past the last
    missing = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    with pytest.raises(ConfigError, match=r"no CUDA GPU|GPU\(s\) present"):
        load_run(run, map_location=missing)
    code, _, err = run_cli(capsys, "eval", run, "--device", missing)
    assert code == 2 and len(err.strip().splitlines()) == 1 and missing in err
    code, _, err = run_cli(capsys, "eval", run, "--threads", 0)
    assert code == 2 and "threads" in err and len(err.strip().splitlines()) == 1


# ---- detect, compare, scorecard -------------------------------------------------------------------
def test_detect_score_takes_the_csv_it_was_fitted_on(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    y = np.zeros(300, dtype=int)
    x[:15] += 6
    y[:15] = 1
    csv = tmp_path / "rows.csv"
    csv.write_text("a,b,c,d,is_outlier\n" + "\n".join(",".join(f"{v:.5f}" for v in r) + f",{t}"
                                                     for r, t in zip(x, y)) + "\n")
    det = tmp_path / "det"
    code, out, err = run_cli(capsys, "detect", "fit", "--data", csv, "--label-column", "is_outlier", "--epochs", 3,
                             "--latent-dim", 2, "--hidden", "16", "--num-samples", 8, "--out", det)
    assert code == 0 and "4 features" in out, err
    code, out, err = run_cli(capsys, "detect", "score", det, "--data", csv, "--out", tmp_path / "s.csv")
    assert code == 0 and "300 rows scored" in out and "AUROC" in out, err   # the label column remembered
    unlabelled = tmp_path / "new.csv"
    unlabelled.write_text("a,b,c,d\n" + "\n".join(",".join(f"{v:.5f}" for v in r) for r in x[:20]) + "\n")
    code, out, err = run_cli(capsys, "detect", "score", det, "--data", unlabelled, "--out", tmp_path / "n.csv")
    assert code == 0 and "20 rows scored" in out and "AUROC" not in out, err


def test_compare_prints_a_table_not_reprs(tmp_path, capsys):
    code, out, err = run_cli(capsys, "compare", "--data", "digits", "--variants", "pca,linear", "--code-size", 4,
                             "--epochs", 1, "--out", tmp_path / "cmp")
    assert code == 0 and "VariantResult(" not in out + err
    assert "| variant | test MSE/pixel |" in out and "| linear (" in out
    assert "linear: test MSE/pixel" in err     # one readable progress line per variant
    assert out.startswith("compare: 2 variant(s), 1 epochs each, on at most the first 10000 training examples")
    assert "--epochs 10 --train-limit 0 for the full setting" in out.splitlines()[0]   # one flag away


def test_compare_train_limit_zero_is_the_whole_split_and_a_negative_one_is_refused(tmp_path, capsys):
    for limit, images in ((0, 1438), (300, 300)):
        code, out, err = run_cli(capsys, "compare", "--data", "digits", "--variants", "pca", "--code-size", 4,
                                 "--train-limit", limit, "--out", tmp_path / str(limit))
        assert code == 0, err
        assert f"Training split: {images} images" in (tmp_path / str(limit) / "comparison.md").read_text()
    assert "the whole training split" in run_cli(capsys, "compare", "--data", "digits", "--variants", "pca",
                                                 "--code-size", 4, "--train-limit", 0, "--out", tmp_path / "z")[1]
    code, _, err = run_cli(capsys, "compare", "--train-limit", -1, "--out", tmp_path / "n")
    assert code == 2 and "--train-limit must be >= 0" in err and not (tmp_path / "n").exists()


def test_kid_error_bars_below_a_thousand_samples():
    from zspace.evaluation.sample_quality import kernel_distance
    from zspace.scorecard import kid_subset_size

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 8)), rng.normal(0.3, 1, size=(400, 8))
    _, sd_whole = kernel_distance(a, b, num_subsets=20, subset_size=400)   # every "subset" the whole set
    assert sd_whole < 1e-9                                                  # the old ±5e-13
    assert kid_subset_size(400) == 200 and kid_subset_size(5000) == 1000
    kid, sd = kernel_distance(a, b, num_subsets=20, subset_size=kid_subset_size(400))
    assert kid > 0 and 0.02 < sd / kid < 1                                 # a real spread, not rounding


def test_scorecard_states_what_kid_is_and_over_what():
    from zspace.scorecard import Scorecard

    md = Scorecard("digits", 500, "LeNet-digits").markdown()
    assert "MMD²" in md and "lower is better" in md and "50 random subsets of 250 rows" in md


def test_a_fit_leaves_torchs_thread_count_as_it_found_it():
    import zspace
    from zspace.core.compute import using_threads

    before = torch.get_num_threads()
    with using_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    zspace.train("ae", "digits", latent_dim=2, hidden=(8,), config=zspace.TrainConfig(epochs=1, threads=1),
                 progress=False, figures=False)
    assert torch.get_num_threads() == before
