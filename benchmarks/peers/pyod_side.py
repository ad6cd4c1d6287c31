#!/usr/bin/env python
"""PyOD side of the zspace-vs-PyOD outlier-detection benchmark on the 22 tabular sets.

For every set, seed and detector: split with benchmarks/_odds.py (stratified, 40 % test,
random_state=seed, parts capped), construct the PyOD detector with its own defaults (only its seed set,
where the class takes one, and verbose off), fit on the training part (outliers included,
labels unused), score the test part with decision_function (higher = more abnormal) and
report AUROC and AUPRC (sklearn roc_auc_score, average_precision_score).

Results are a cache: rows already in --out under the same protocol are kept and not rerun,
so a rerun (or one with more sets, seeds or detectors) only computes what is missing.

Timings: fit_seconds is the wall time of detector.fit(x_tr), which in PyOD also scores the
training rows (decision_scores_) and sets threshold_; score_seconds is decision_function(x_te).
A small untimed warm-up fit/score per detector runs first, so numba's JIT compilation of
PyOD's distance helpers is not charged to the first set.

Run with /tmp/peer-pyod/bin/python (pyod 3.6.7 + torch==2.13.0 CPU), e.g.
    /tmp/peer-pyod/bin/python benchmarks/peers/pyod_side.py --threads 2 --out runs/bench-tables-pyod.json
"""
import argparse
import json
import os
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--sets", default=None, help="default: all 22")
p.add_argument("--seeds", default="0")
p.add_argument("--detectors", default="IForest,ECOD,COPOD,KNN,LOF,OCSVM,AutoEncoder,VAE,DeepSVDD")
p.add_argument("--threads", type=int, default=1)
p.add_argument("--out", default="results.json")
p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up fit per detector")
args = p.parse_args()

# Thread caps must be in the environment before numpy / torch / numba load their pools.
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import inspect  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402

torch.set_num_threads(args.threads)

import pyod  # noqa: E402
from pyod.models.auto_encoder import AutoEncoder  # noqa: E402
from pyod.models.copod import COPOD  # noqa: E402
from pyod.models.deep_svdd import DeepSVDD  # noqa: E402
from pyod.models.ecod import ECOD  # noqa: E402
from pyod.models.iforest import IForest  # noqa: E402
from pyod.models.knn import KNN  # noqa: E402
from pyod.models.lof import LOF  # noqa: E402
from pyod.models.ocsvm import OCSVM  # noqa: E402
from pyod.models.vae import VAE  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from _odds import ALL_SETS, MAX_TEST, MAX_TRAIN, load_odds, split  # noqa: E402

DETECTORS = {"AutoEncoder": AutoEncoder, "VAE": VAE, "IForest": IForest, "ECOD": ECOD, "KNN": KNN,
             "COPOD": COPOD, "LOF": LOF, "OCSVM": OCSVM, "DeepSVDD": DeepSVDD}

# What PyOD's defaults are (read from the installed source; see the report for file:line).
DEFAULTS = {
    "AutoEncoder": "contamination=0.1; preprocessing=True (per-feature z-score with train mean/std); "
                   "d-64-32-64-d MLP (hidden_neuron_list=[64,32], decoder mirrors all but the last), "
                   "ReLU, BatchNorm, dropout 0.2, linear output; MSE loss; Adam lr=1e-3, "
                   "weight_decay=1e-5; epoch_num=10; batch_size=32 (drop_last=True); "
                   "score = Euclidean reconstruction error in standardized space",
    "VAE": "contamination=0.1; preprocessing=True (z-score); encoder d-128-64-32 -> latent_dim=2 "
           "(mu, logvar heads), decoder 2-32-64-128-d, ReLU, no BatchNorm, dropout 0.2, identity output; "
           "loss = MSE(mean) + beta*clamp(KL, 0, capacity) with beta=1.0, capacity=0.0, so the KL term "
           "is identically 0 (no gradient): a reparameterized-noise autoencoder; logvar clipped to "
           "[-30, 20]; Adam lr=1e-3, weight_decay=1e-5; epoch_num=30; batch_size=32; score = Euclidean "
           "reconstruction error from one sampled z (stochastic at test time)",
    "IForest": "sklearn IsolationForest: n_estimators=100, max_samples='auto' (min(256, n)), "
               "max_features=1.0, bootstrap=False, contamination=0.1; no preprocessing; "
               "score = -IsolationForest.decision_function",
    "ECOD": "parameter-free empirical-CDF tail probabilities, contamination=0.1; no preprocessing; "
            "test scores recompute the ECDFs over train+test rows together (transductive)",
    "KNN": "n_neighbors=5, method='largest' (distance to the 5th neighbour), Minkowski p=2, "
           "algorithm='auto', contamination=0.1; no preprocessing (raw feature scale)",
    "COPOD": "parameter-free copula tail probabilities (empirical CDFs); no preprocessing",
    "LOF": "n_neighbors=20, Minkowski p=2, novelty=True; no preprocessing (raw feature scale)",
    "OCSVM": "sklearn OneClassSVM: rbf kernel, gamma='auto' (1/d), nu=0.5; no preprocessing",
    "DeepSVDD": "n_features=d (required), one-class objective, d-64-32 MLP, ReLU, sigmoid output, "
                "dropout 0.2, Adam lr=1e-4, epochs=100, batch_size=32, preprocessing=True (z-score)",
}


def make(name, seed, n_features=4):
    """Detector `name` with PyOD defaults; only its seed (if it takes one) and verbosity are set."""
    cls = DETECTORS[name]
    params = inspect.signature(cls.__init__).parameters
    kw = {}
    if "random_state" in params:
        kw["random_state"] = seed
    if "n_features" in params:            # DeepSVDD's one required argument
        kw["n_features"] = n_features
    if "verbose" in params:
        kw["verbose"] = 0
    # BaseDeepLearningDetector seeds python/numpy/torch's global RNGs in __init__, so the
    # detector is built immediately before it is fit.
    return cls(**kw), kw


def warmup(names):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 4))
    for name in names:
        try:
            det, _ = make(name, 0)
            if hasattr(det, "epoch_num"):
                det.epoch_num = 1
            det.fit(x)
            det.decision_function(x[:16])
        except Exception as e:  # the timed run records the real error
            print(f"[pyod_side] warm-up of {name} failed: {e!r}", flush=True)


def write(res):
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f, indent=2)
    os.replace(tmp, args.out)


def main():
    sets = [s for s in args.sets.split(",") if s] if args.sets else list(ALL_SETS)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    names = [d for d in args.detectors.split(",") if d]
    unknown = [d for d in names if d not in DETECTORS]
    if unknown:
        p.error(f"unknown detector(s) {unknown}; choose from {list(DETECTORS)}")

    res = {
        "pyod_version": pyod.__version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "threads": args.threads,
        "protocol": "benchmarks/_odds.py: stratified train_test_split(test_size=0.4, random_state=seed), "
                    f"train capped at {MAX_TRAIN}, test at {MAX_TEST} rows (stratified); "
                    "fit on train (outliers kept, labels unused); AUROC/AUPRC of decision_function on test",
        "results": [],
        "defaults": {d: DEFAULTS[d] for d in names},
        "default_params": {},
    }
    protocol = res["protocol"]
    done = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            old = json.load(f)
        if old.get("protocol") == protocol and old.get("pyod_version") == res["pyod_version"]:
            done = {(r["set"], r["seed"], r["detector"]): r for r in old["results"] if r.get("auroc") is not None}
            print(f"[pyod_side] {len(done)} cached rows reused from {args.out}", flush=True)
    for d in names:
        det, kw = make(d, 0)
        res["default_params"][d] = {k: (v if isinstance(v, (int, float, str, bool, type(None), list, tuple, dict))
                                        else repr(v))
                                    for k, v in det.get_params().items() if k not in kw}

    todo = [(s, seed, d) for s in sets for seed in seeds for d in names if (s, seed, d) not in done]
    res["results"] = [r for k, r in done.items()]
    if not todo:
        write(res)
        print(f"[pyod_side] nothing to run: all {len(done)} rows cached in {args.out}", flush=True)
        return
    if not args.no_warmup:
        t0 = time.perf_counter()
        warmup(names)
        print(f"[pyod_side] warm-up {time.perf_counter() - t0:.1f}s", flush=True)

    t_all = time.perf_counter()
    for seed in seeds:            # seed-major: a cut-short run still covers every set
        for s in sets:
            x, y = load_odds(s)
            x_tr, x_te, y_tr, y_te = split(x, y, seed)
            for d in names:
                if (s, seed, d) in done:
                    continue
                row = {"set": s, "seed": seed, "detector": d, "auroc": None, "fit_seconds": None,
                       "score_seconds": None, "n_train": int(len(x_tr)), "n_test": int(len(x_te))}
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        det, _ = make(d, seed, x.shape[1])
                        t0 = time.perf_counter()
                        det.fit(x_tr)
                        row["fit_seconds"] = time.perf_counter() - t0
                        t0 = time.perf_counter()
                        scores = np.asarray(det.decision_function(x_te), dtype=np.float64)
                        row["score_seconds"] = time.perf_counter() - t0
                    if not np.all(np.isfinite(scores)):
                        raise ValueError(f"{int((~np.isfinite(scores)).sum())} non-finite test scores")
                    row["auroc"] = float(roc_auc_score(y_te, scores))
                    row["auprc"] = float(average_precision_score(y_te, scores))
                except Exception as e:
                    row["error"] = f"{type(e).__name__}: {e}"
                res["results"].append(row)
                write(res)
                msg = (f"auroc={row['auroc']:.4f} fit={row['fit_seconds']:.2f}s score={row['score_seconds']:.3f}s"
                       if row["auroc"] is not None else f"ERROR {row['error']}")
                print(f"[pyod_side] {s:<17} seed={seed} {d:<11} {msg}", flush=True)
    res["total_seconds"] = time.perf_counter() - t_all
    write(res)
    print(f"[pyod_side] wrote {args.out} ({len(res['results'])} rows, {res['total_seconds']:.1f}s)", flush=True)


if __name__ == "__main__":
    main()
