"""The 22 tabular outlier-detection sets and the split protocol shared by zspace's and PyOD's side.

Plain NumPy + scikit-learn only (no zspace, no torch), so the same file is imported by the
zspace benchmark and by ``peers/pyod_side.py`` running in a separate PyOD venv.

Data: ``<name>.npz`` with ``x`` (n, d) features and ``y`` (n, 1) labels, 1 = outlier: the five
ODDS sets (Rayana 2016) in ``../shared/data/odds`` and 17 more in ``../shared/data/tabular``
(ZSPACE_ODDS / ZSPACE_TABULAR override the folders).

Protocol (unsupervised):
  * each set is split by ``split(x, y, seed)``: a stratified ``train_test_split`` with
    ``test_fraction=0.4`` and ``random_state=seed``, so both parts keep the set's outlier rate;
    then, to keep 22 sets x 10+ detectors within minutes on two cores, the training part is
    subsampled (stratified, same seed) to at most ``MAX_TRAIN`` rows and the test part to at
    most ``MAX_TEST`` rows (sets above 1,666 rows are cut);
  * detectors are fit on the training part, which still contains its outliers; labels are
    never shown to a detector;
  * AUROC and AUPRC of the detector's outlier scores (higher = more abnormal) on the test part;
  * the seed picks the split and is also the detector's own seed (weight init, shuffling,
    subsampling); results are the mean over seeds.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

ODDS_SETS = ("annthyroid", "cardio", "mammography", "satellite", "thyroid")
MORE_SETS = ("biomed-normal", "diabetes-present", "elevators", "hepatitis", "housing-low", "kc1",
             "magictelescope", "page-blocks", "pc1", "pc3", "pc4", "phoneme", "spambase", "spectf-1",
             "survival-long", "thyroid-subnormal", "wpbc-non-ret")
ALL_SETS = ODDS_SETS + MORE_SETS
SEEDS = (0,)
TEST_FRACTION = 0.4
MAX_TRAIN, MAX_TEST = 1000, 2000

_ROOT = Path(__file__).resolve().parents[1]


def set_folder(name: str) -> Path:
    """The folder holding set ``name``'s .npz file."""
    if name in ODDS_SETS:
        env, sub = os.environ.get("ZSPACE_ODDS"), "odds"
    elif name in MORE_SETS:
        env, sub = os.environ.get("ZSPACE_TABULAR"), "tabular"
    else:
        raise ValueError(f"unknown set {name!r}; expected one of {', '.join(ALL_SETS)}")
    return Path(env) if env else _ROOT.parent / "shared" / "data" / sub


def load_odds(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(x, y)``: x float64 (n, d), y int64 (n,) with 1 = outlier, 0 = inlier."""
    path = set_folder(name) / f"{name}.npz"
    if not path.is_file():
        raise ValueError(f"set {name!r} not found: {path} does not exist "
                         "(set ZSPACE_ODDS / ZSPACE_TABULAR to the folder holding the .npz files)")
    with np.load(path) as data:
        missing = [k for k in ("x", "y") if k not in data.files]
        if missing:
            raise ValueError(f"{path}: missing array(s) {missing}; has {data.files}")
        x, y = data["x"], data["y"]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{path}: x must be a non-empty (n, d) array, got shape {x.shape}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{path}: y must have shape ({x.shape[0]}, 1) or ({x.shape[0]},), got {y.shape}")
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{path}: x contains NaN or infinite values")
    values = np.unique(y)
    if not np.all(np.isin(values, (0, 1))):
        raise ValueError(f"{path}: y must hold only 0 (inlier) and 1 (outlier), got values {values[:10]}")
    y = y.astype(np.int64)
    if y.sum() == 0 or y.sum() == y.size:
        raise ValueError(f"{path}: y must contain both inliers and outliers")
    return x, y


def _at_most(x, y, n: int, seed: int):
    if len(x) <= n:
        return x, y
    x, _, y, _ = train_test_split(x, y, train_size=n, random_state=seed, stratify=y)
    return x, y


def split(x: np.ndarray, y: np.ndarray, seed: int, test_fraction: float = TEST_FRACTION,
          max_train: int = MAX_TRAIN, max_test: int = MAX_TEST):
    """Stratified split, each part capped: ``x_tr, x_te, y_tr, y_te`` (training keeps its outliers)."""
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    x_tr, y_tr = _at_most(x_tr, y_tr, max_train, seed)
    x_te, y_te = _at_most(x_te, y_te, max_test, seed)
    return x_tr, x_te, y_tr, y_te
