"""zspace's outlier detectors against PyOD's on 22 tabular sets, and a default chosen by
leave-sets-out cross-validation.

Protocol (benchmarks/_odds.py): stratified 60/40 split per seed, parts capped at 1,000 training
and 2,000 test rows; every detector is fit on the training part with its outliers (labels
unused) and scored on the test part; AUROC and AUPRC, mean over seeds. PyOD 3.6.7 runs in its
own venv (/tmp/peer-pyod, made here if missing) through benchmarks/peers/pyod_side.py, every
detector at its defaults; its rows are cached in runs/bench-tables-pyod.json, zspace's in
runs/bench-tables-zspace.json, so a rerun only computes what is missing.

zspace's side is a grid of candidate configurations (model, scaling, epochs, score). The
**leave-sets-out** row is the honest one: for each set, the candidate with the best mean AUROC
on the *other* 21 sets is chosen and scored on the held-out set; that row is what the targets
are judged on. The library's default is the candidate chosen on all 22 (what the same rule
picks for a new set).

    python benchmarks/outliers_tabular.py --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_auc_score

from _common import ROOT, command_line, machine, update_section
from _odds import ALL_SETS, MAX_TEST, MAX_TRAIN, SEEDS, load_odds, split
from zspace.detect import AUTO_MAX_EPOCHS, AUTO_STEPS, GenerativeOutlierDetector

PYOD_VENV = Path("/tmp/peer-pyod")
PYOD = ("IForest", "ECOD", "COPOD", "KNN", "LOF", "OCSVM", "AutoEncoder", "VAE", "DeepSVDD")
TIE = 0.005          # |AUROC difference| counted as a tie against IsolationForest

# One training run per entry; every score listed is evaluated on the same fitted model.
NLL_MAHA, NLL_REC, REC_MAHA = ("nll", "mahalanobis"), ("nll", "reconstruction"), ("reconstruction", "mahalanobis")
ALL3 = ("nll", "mahalanobis", "reconstruction")
# "isolation" is an isolation forest on the raw rows (evaluation/outliers.IsolationScores); it only
# enters as a member of a combination: alone it is IsolationForest, the reference
NLL_ISO, REC_ISO, NLL_MAHA_ISO = ("nll", "isolation"), ("reconstruction", "isolation"), ("nll", "mahalanobis", "isolation")
TRAINING = {
    "VAE power 20ep": (dict(model="vae", scaling="power", epochs=20),
                       ("nll", "mahalanobis", "reconstruction", NLL_MAHA, NLL_REC, ALL3, NLL_ISO, NLL_MAHA_ISO)),
    "VAE power auto": (dict(model="vae", scaling="power", epochs="auto"),
                       ("nll", "mahalanobis", "reconstruction", NLL_MAHA, NLL_REC, ALL3, NLL_ISO, NLL_MAHA_ISO)),
    "VAE quantile 20ep": (dict(model="vae", scaling="quantile", epochs=20), ("nll", "mahalanobis", NLL_MAHA, NLL_ISO)),
    "AE standard 20ep": (dict(model="ae", scaling="standard", epochs=20),
                         ("reconstruction", "mahalanobis", REC_MAHA, REC_ISO)),
}
# zspace's named detectors at their defaults before this benchmark chose new ones
OLD_DEFAULTS = {"zspace VAE (nll), old default": ("VAE power 20ep", "nll"),
                "zspace VAE (mahalanobis), old": ("VAE power 20ep", "mahalanobis"),
                "zspace AE (reconstruction), old": ("AE standard 20ep", "reconstruction")}


def score_name(score) -> str:
    return score if isinstance(score, str) else "+".join(score)


def candidates() -> dict[str, tuple[str, object]]:
    return {f"{t} {score_name(s)}": (t, s) for t, (_, scores) in TRAINING.items() for s in scores}


def ensure_pyod() -> None:
    py = PYOD_VENV / "bin" / "python"
    if py.exists():
        return
    subprocess.run([sys.executable, "-m", "venv", str(PYOD_VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
    constraints = PYOD_VENV / "constraints.txt"
    constraints.write_text("torch==2.13.0\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "-c", str(constraints), "pyod==3.6.7", "tqdm"], check=True)


def run_zspace(sets, seeds, cache_path: Path, threads: int) -> dict:
    """{(candidate, set, seed): row}; rows already in the cache (same protocol, same params) are reused."""
    protocol = f"max_train={MAX_TRAIN} max_test={MAX_TEST}"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    if cache.get("protocol") != protocol:
        cache = {"protocol": protocol, "rows": {}}
    torch.set_num_threads(threads)
    for seed in seeds:
        for s in sets:
            x, y = load_odds(s)
            x_tr, x_te, _, y_te = split(x, y, seed)
            for train_name, (params, scores) in TRAINING.items():
                key = f"{train_name}|{json.dumps(params, sort_keys=True)}|{s}|{seed}"
                if key in cache["rows"] and all(score_name(c) in cache["rows"][key]["scores"] for c in scores):
                    continue
                det = GenerativeOutlierDetector(score_type=scores[0], random_state=seed, **params)
                t0 = time.perf_counter()
                det.fit(x_tr)
                fit_s = time.perf_counter() - t0
                row = {"fit_seconds": fit_s, "n_train": len(x_tr), "n_test": len(x_te), "epochs": det.epochs_,
                       "scores": {}}
                for c in scores:
                    if c != scores[0]:
                        det.rescore(c, x_tr)
                    t0 = time.perf_counter()
                    sc = det.decision_function(x_te)
                    row["scores"][score_name(c)] = {"auroc": float(roc_auc_score(y_te, sc)),
                                                    "auprc": float(average_precision_score(y_te, sc)),
                                                    "score_seconds": time.perf_counter() - t0}
                cache["rows"][key] = row
            tmp = cache_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(cache, indent=1))
            os.replace(tmp, cache_path)
            print(f"zspace seed {seed} {s} done", flush=True)
    out = {}
    for key, row in cache["rows"].items():
        train_name, params, s, seed = key.split("|")
        if train_name not in TRAINING or json.loads(params) != TRAINING[train_name][0]:
            continue
        for c, m in row["scores"].items():
            out[(f"{train_name} {c}", s, int(seed))] = {**m, "fit_seconds": row["fit_seconds"],
                                                         "n_train": row["n_train"], "n_test": row["n_test"]}
    return out


def table(per_set: dict, names, sets, metric: str, fmt=".3f") -> str:
    head = "| set | " + " | ".join(names) + " |"
    lines = [head, "|---" * (len(names) + 1) + "|"]
    for s in sets:
        vals = [per_set[n][s][metric] for n in names]
        best = max(vals)
        cells = [f"**{v:{fmt}}**" if v == best else f"{v:{fmt}}" for v in vals]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_ranks(per_set: dict, names, sets) -> dict[str, float]:
    ranks = {n: [] for n in names}
    for s in sets:
        r = rankdata([-per_set[n][s]["auroc"] for n in names])     # 1 = best, ties share
        for n, v in zip(names, r):
            ranks[n].append(v)
    return {n: float(np.mean(v)) for n, v in ranks.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pyod", default=",".join(PYOD), help="PyOD detectors to run (and compare with)")
    ap.add_argument("--training", default=",".join(TRAINING), help="zspace training runs of the grid to include")
    ap.add_argument("--peer-cache", type=Path, default=ROOT / "runs" / "bench-tables-pyod.json")
    ap.add_argument("--zspace-cache", type=Path, default=ROOT / "runs" / "bench-tables-zspace.json")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    pyod = [d for d in args.pyod.split(",") if d]
    if "IForest" not in pyod:
        raise SystemExit("--pyod must include IForest (the reference of the targets)")
    sets = list(ALL_SETS)
    unknown = set(args.training.split(",")) - set(TRAINING)
    if unknown:
        raise SystemExit(f"unknown --training {sorted(unknown)}; choose from {list(TRAINING)}")
    for name in [t for t in TRAINING if t not in args.training.split(",")]:
        del TRAINING[name]
    if any(t not in TRAINING for t, _ in OLD_DEFAULTS.values()):
        raise SystemExit("--training must include the old defaults' runs: VAE power 20ep, AE standard 20ep")
    start = time.perf_counter()
    ensure_pyod()
    args.peer_cache.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(PYOD_VENV / "bin" / "python"), str(ROOT / "benchmarks" / "peers" / "pyod_side.py"),
                    "--sets", ",".join(sets), "--seeds", args.seeds, "--detectors", ",".join(pyod),
                    "--threads", str(args.threads), "--out", str(args.peer_cache)], check=True)
    peer = json.loads(args.peer_cache.read_text())
    rows: dict[tuple[str, str, int], dict] = {}
    for r in peer["results"]:
        if r.get("auroc") is not None and r["seed"] in seeds and r["detector"] in pyod:
            rows[(f"PyOD {r['detector']}", r["set"], r["seed"])] = r
    rows.update(run_zspace(sets, seeds, args.zspace_cache, args.threads))

    def per_set_of(name):
        out = {}
        for s in sets:
            got = [rows[(name, s, seed)] for seed in seeds if (name, s, seed) in rows]
            if len(got) != len(seeds):
                raise SystemExit(f"{name}: {len(got)} of {len(seeds)} seeds on {s}")
            out[s] = {m: float(np.mean([g[m] for g in got])) for m in ("auroc", "auprc")}
        return out
    cands = candidates()
    per_set = {n: per_set_of(n) for n in [f"PyOD {d}" for d in pyod] + list(cands)}
    mean_auroc = {n: float(np.mean([v["auroc"] for v in per_set[n].values()])) for n in per_set}

    # leave-sets-out: for each held-out set, the candidate that the rule prefers on the others.
    # Two rules: the best mean rank among the candidates (the library's rule), and the best mean
    # AUROC. Among near-tied candidates the mean-AUROC rule tends to pick, for each held-out set,
    # the one that is worse on it (leaving a set out moves the means by more than they differ),
    # which ranks are less prone to; both rows are reported.
    def prefer_rank(on):
        r = mean_ranks(per_set, list(cands), on)
        return min(cands, key=lambda c: (r[c], -np.mean([per_set[c][o]["auroc"] for o in on])))

    def prefer_mean(on):
        return max(cands, key=lambda c: np.mean([per_set[c][o]["auroc"] for o in on]))
    loso, loso_mean = "zspace default (leave-sets-out)", "zspace, leave-sets-out by mean AUROC"
    chosen = {s: prefer_rank([o for o in sets if o != s]) for s in sets}
    chosen_mean = {s: prefer_mean([o for o in sets if o != s]) for s in sets}
    per_set[loso] = {s: per_set[chosen[s]][s] for s in sets}
    per_set[loso_mean] = {s: per_set[chosen_mean[s]][s] for s in sets}
    default = prefer_rank(sets)        # the same rule on all 22: the library's default
    for label, cand in OLD_DEFAULTS.items():
        per_set[label] = per_set[f"{cand[0]} {cand[1]}"]
    field = [loso, loso_mean, *OLD_DEFAULTS, *[f"PyOD {d}" for d in pyod]]
    for n in field:
        mean_auroc[n] = float(np.mean([per_set[n][s]["auroc"] for s in sets]))
    ranks = mean_ranks(per_set, field, sets)
    mean_auprc = {n: float(np.mean([per_set[n][s]["auprc"] for s in sets])) for n in field}

    def wtl(n):
        d = np.array([per_set[n][s]["auroc"] - per_set["PyOD IForest"][s]["auroc"] for s in sets])
        return f"{int((d > TIE).sum())}/{int((np.abs(d) <= TIE).sum())}/{int((d < -TIE).sum())}"
    order = sorted(field, key=lambda n: ranks[n])
    summary = ["| detector | mean AUROC | mean AUPRC | mean rank | W/T/L vs IForest |", "|---|---|---|---|---|"]
    summary += [f"| {n} | {mean_auroc[n]:.3f} | {mean_auprc[n]:.3f} | {ranks[n]:.2f} | "
                f"{'—' if n == 'PyOD IForest' else wtl(n)} |" for n in order]
    cand_ranks = mean_ranks(per_set, list(cands), sets)
    grid = ["| candidate (model, scaling, epochs, score) | mean AUROC | mean rank among candidates | "
            "chosen for (held-out sets), rank rule | by mean AUROC |", "|---|---|---|---|---|"]

    def held_out(c, which):
        held = [s for s in sets if which[s] == c]
        return f"{len(held)}{' (' + ', '.join(held) + ')' if 0 < len(held) < len(sets) else ''}"
    for c in sorted(cands, key=lambda c: cand_ranks[c]):
        grid.append(f"| {c} | {mean_auroc[c]:.3f} | {cand_ranks[c]:.1f} | {held_out(c, chosen)} | "
                    f"{held_out(c, chosen_mean)} |")
    short = {n: n.replace("zspace ", "").replace("PyOD ", "") for n in order}
    auroc_t = table(per_set, order, sets, "auroc").replace("| set | " + " | ".join(order),
                                                            "| set | " + " | ".join(short[n] for n in order))
    auprc_t = table(per_set, order, sets, "auprc").replace("| set | " + " | ".join(order),
                                                            "| set | " + " | ".join(short[n] for n in order))
    # throughput: the chosen default against PyOD's AutoEncoder and VAE, same sets and seeds
    def speed(name):
        r = [rows[(name, s, seed)] for s in sets for seed in seeds]
        return (float(np.median([g["n_train"] / g["fit_seconds"] for g in r])),
                float(np.median([g["n_test"] / g["score_seconds"] for g in r])))
    zs = speed(default)
    peers_speed = {d: speed(f"PyOD {d}") for d in ("AutoEncoder", "VAE") if d in pyod}
    throughput = "; ".join(f"PyOD {d}: fit {v[0]:.0f} rows/s (zspace **{zs[0] / v[0]:.2f}×**), scoring {v[1]:.0f} "
                           f"rows/s (zspace **{zs[1] / v[1]:.2f}×**)" for d, v in peers_speed.items())
    missing = [d for d in PYOD if d not in pyod]
    iforest = "PyOD IForest"
    met = mean_auroc[loso] > mean_auroc[iforest] and ranks[loso] < ranks[iforest]
    minutes = (time.perf_counter() - start) / 60
    md = f"""### Outlier detection on 22 tables: zspace vs PyOD {peer['pyod_version']}, default chosen leave-sets-out

Command: `{command_line()}` ({minutes:.0f} min this run; cached rows reused: see the script)
Machine: {machine()}; {args.threads} threads for each side.
Protocol (benchmarks/_odds.py): 22 sets (5 ODDS + 17 in ../shared/data/tabular); stratified 60/40 split per
seed ({', '.join(map(str, seeds))}), training part capped at {MAX_TRAIN} rows and test part at {MAX_TEST} (stratified); fit on the
training part with its outliers, labels unused; AUROC and AUPRC on the test part, mean over seeds; rank per
set by AUROC among the detectors of the first table (ties share), then averaged. PyOD at its defaults.

**Leave-sets-out**: for each set, the zspace candidate with the best mean rank among the candidates
on the other 21 sets (grid below) is scored on it; the row "by mean AUROC" applies the other rule
(the best mean AUROC on the other sets). The rank rule was adopted after a 3-seed pilot in which
the mean-AUROC rule, among near-tied candidates, picked for most held-out sets the candidate that
was worse on that set; both rows are shown. The old defaults are the named detectors as they were before this run
(VAE: Yeo-Johnson, 20 epochs, hidden (64, 32), NLL; AE: standardised, 20 epochs, reconstruction).

{chr(10).join(summary)}

Target (leave-sets-out default beats IsolationForest on mean AUROC and mean rank): **{'met' if met else 'not met'}**
({mean_auroc[loso]:.3f} vs {mean_auroc[iforest]:.3f}; rank {ranks[loso]:.2f} vs {ranks[iforest]:.2f}).
The same rule on all 22 sets picks **{default}** (mean AUROC {mean_auroc[default]:.3f}, in-sample): the
library's default. By mean AUROC the leave-sets-out row reads {mean_auroc[loso_mean]:.3f}, rank {ranks[loso_mean]:.2f}.

Candidates (one training run per model/scaling/epochs, every score on it; "auto" epochs = at least 20
epochs and about {AUTO_STEPS} optimiser steps, at most {AUTO_MAX_EPOCHS} epochs; a "+" score standardises each member by its
training median and IQR and averages them; "isolation" is an isolation forest, 100 trees, on the raw
rows, zspace.evaluation.outliers.IsolationScores):

{chr(10).join(grid)}

AUROC per set (mean over {len(seeds)} seed(s); best in bold):

{auroc_t}

AUPRC per set:

{auprc_t}

Throughput, median over sets and seeds (training rows/s of the whole fit; test rows/s scoring), same run:
zspace default ({default}) fit {zs[0]:.0f} rows/s, scoring {zs[1]:.0f} rows/s; {throughput or 'no PyOD deep model run'}.
Epoch budgets differ, as the defaults do (PyOD AutoEncoder 10 epochs, VAE 30).
{f"Not run in this session (compute): PyOD {', '.join(missing)}." if missing else ""}
"""
    update_section("outliers-tables", md)
    print(md)


if __name__ == "__main__":
    main()
