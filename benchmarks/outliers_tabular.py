"""zspace's outlier detectors against PyOD's on the five ODDS tabular sets, in one run.

Protocol (benchmarks/_odds.py): stratified 60/40 split per seed (0..4); every detector
is fit on the training part with its outliers (labels unused) and scored on the test
part; AUROC mean ± std over the seeds; the average rank over the five sets. Every
detector runs with its defaults. PyOD 3.6.7 runs in its own venv (/tmp/pyod-venv, made
here if missing) through benchmarks/peers/pyod_side.py, before zspace's side, one thread
each. Throughput: training rows per second of the whole fit, test rows per second of
scoring, zspace's AutoEncoder detector against PyOD's AutoEncoder.

    python benchmarks/outliers_tabular.py
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from _common import ROOT, command_line, machine, update_section
from _odds import ODDS_SETS, SEEDS, load_odds, split
from zspace.detect import AutoencoderOutlierDetector, VAEOutlierDetector

PYOD_VENV = Path("/tmp/pyod-venv")
PYOD = ("AutoEncoder", "VAE", "IForest", "ECOD", "KNN")
OURS = {
    "zspace VAE (nll)": lambda seed: VAEOutlierDetector(random_state=seed),
    "zspace VAE (mahalanobis)": lambda seed: VAEOutlierDetector("mahalanobis", random_state=seed),
    "zspace AE (reconstruction)": lambda seed: AutoencoderOutlierDetector(random_state=seed),
}


def ensure_pyod() -> None:
    py = PYOD_VENV / "bin" / "python"
    if py.exists():
        return
    subprocess.run([sys.executable, "-m", "venv", str(PYOD_VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
    constraints = PYOD_VENV / "constraints.txt"
    constraints.write_text("torch==2.13.0\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "-c", str(constraints), "pyod", "tqdm"], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.perf_counter()
    ensure_pyod()
    peer_json = ROOT / "runs" / "bench-odds-pyod.json"
    peer_json.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(PYOD_VENV / "bin" / "python"), str(ROOT / "benchmarks" / "peers" / "pyod_side.py"),
                    "--sets", ",".join(ODDS_SETS), "--seeds", args.seeds, "--detectors", ",".join(PYOD),
                    "--threads", str(args.threads), "--out", str(peer_json)], check=True)
    peer = json.loads(peer_json.read_text())
    auroc: dict[str, dict[str, list[float]]] = {}
    speed: dict[str, dict[str, list[float]]] = {}
    for r in peer["results"]:
        if r.get("auroc") is None:
            continue
        name = f"PyOD {r['detector']}"
        auroc.setdefault(name, {}).setdefault(r["set"], []).append(r["auroc"])
        speed.setdefault(name, {}).setdefault("fit", []).append(r["n_train"] / r["fit_seconds"])
        speed[name].setdefault("score", []).append(r["n_test"] / r["score_seconds"])

    torch.set_num_threads(args.threads)
    for s in ODDS_SETS:
        x, y = load_odds(s)
        for seed in seeds:
            x_tr, x_te, _, y_te = split(x, y, seed)
            for name, make in OURS.items():
                det = make(seed)
                t0 = time.perf_counter()
                det.fit(x_tr)
                t1 = time.perf_counter()
                scores = det.decision_function(x_te)
                t2 = time.perf_counter()
                auroc.setdefault(name, {}).setdefault(s, []).append(roc_auc_score(y_te, scores))
                speed.setdefault(name, {}).setdefault("fit", []).append(len(x_tr) / (t1 - t0))
                speed[name].setdefault("score", []).append(len(x_te) / (t2 - t1))
        print(f"{s} done", flush=True)

    names = list(auroc)
    means = {n: {s: float(np.mean(auroc[n][s])) for s in ODDS_SETS} for n in names}
    ranks = {n: [] for n in names}
    for s in ODDS_SETS:
        order = sorted(names, key=lambda n: -means[n][s])
        for i, n in enumerate(order):
            ranks[n].append(i + 1)
    avg = {n: float(np.mean(list(means[n].values()))) for n in names}
    best_overall = max(names, key=lambda n: avg[n])
    ours_best = max(OURS, key=lambda n: avg[n])
    header = "| detector | " + " | ".join(ODDS_SETS) + " | mean AUROC | mean rank |"
    rows = [header, "|---" * (len(ODDS_SETS) + 3) + "|"]
    for n in sorted(names, key=lambda n: -avg[n]):
        cells = " | ".join(f"{means[n][s]:.3f} ± {np.std(auroc[n][s]):.3f}" for s in ODDS_SETS)
        rows.append(f"| {n} | {cells} | **{avg[n]:.3f}** | {np.mean(ranks[n]):.1f} |")
    ae, pae = speed["zspace AE (reconstruction)"], speed["PyOD AutoEncoder"]
    ok = best_overall in OURS
    minutes = (time.perf_counter() - start) / 60
    md = f"""### Outlier detection on ODDS tables: zspace vs PyOD {peer['pyod_version']}

Command: `{command_line()}` ({minutes:.0f} min)
Machine: {machine()}; {args.threads} thread(s) for each side, PyOD first, then zspace.
Protocol: stratified 60/40 split per seed ({', '.join(map(str, seeds))}); fit on the training part with its outliers,
labels unused; AUROC on the test part, mean ± std over seeds; rank per set by mean AUROC, then averaged.
Every detector at its defaults. zspace: VAE with Yeo-Johnson-scaled features, 20 epochs, latent
min(8, d/2), 64 importance samples (score: NLL of the features as given, the scaling's log-Jacobian
included; or the latent Mahalanobis distance); AE with
standardised features, 20 epochs, reconstruction error. PyOD: AutoEncoder (10 epochs, d-64-32-64-d,
batch norm, dropout 0.2), VAE (30 epochs, latent 2, KL clamped to 0 by its capacity default: see
docs/outliers.md), IForest (100 trees), ECOD, KNN (k = 5, raw features).

{chr(10).join(rows)}

Best default detector: **{best_overall}** ({avg[best_overall]:.3f}); zspace's best: {ours_best} ({avg[ours_best]:.3f}).
Target (our best default detector has the best mean AUROC of all): **{'met' if ok else 'not met'}**.

Throughput, median over sets and seeds (training rows/s for the whole fit; test rows/s scoring):
zspace AE fit {np.median(ae['fit']):.0f} rows/s vs PyOD AutoEncoder {np.median(pae['fit']):.0f}
(**{np.median(ae['fit']) / np.median(pae['fit']):.2f}×**); scoring {np.median(ae['score']):.0f} vs
{np.median(pae['score']):.0f} rows/s (**{np.median(ae['score']) / np.median(pae['score']):.2f}×**). Note the epoch
budgets differ (20 vs 10), as the defaults do.
"""
    update_section("outliers-odds", md)
    print(md)


if __name__ == "__main__":
    main()
