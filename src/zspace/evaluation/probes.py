"""What a code is worth: linear probes, and how close a linear autoencoder comes to PCA.

Baldi & Hornik (1989): the global minimum of a linear autoencoder's squared error spans
the top-k principal subspace of the (centred) data. ``principal_angles_to_pca`` measures
it: the principal angles between the decoder's column space and that subspace.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import subspace_angles
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..errors import ConfigError, DataError


def decoder_column_space(model) -> np.ndarray:
    """(D, k) matrix whose columns span the image of a linear decoder's weights."""
    linears = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]
    if len(linears) != 1 or model.config.output_activation != "none":
        raise ConfigError("principal angles need a linear autoencoder (preset 'linear': one linear "
                          "decoder layer and no output activation)")
    return linears[0].weight.detach().double().cpu().numpy()      # (D, k)


def principal_angles_to_pca(model, x: np.ndarray) -> tuple[np.ndarray, PCA]:
    """Principal angles in degrees (ascending) between the decoder's column space and the
    top-k PCA subspace of ``x`` (N, D); also returns the fitted PCA."""
    w = decoder_column_space(model)
    k = w.shape[1]
    pca = PCA(n_components=k, svd_solver="full").fit(x.reshape(len(x), -1))
    angles = np.degrees(subspace_angles(w, pca.components_.T))
    return np.sort(angles), pca


def pca_reconstruction_mse(pca: PCA, x: np.ndarray) -> float:
    flat = x.reshape(len(x), -1)
    return float(np.mean((pca.inverse_transform(pca.transform(flat)) - flat) ** 2))


def linear_probe_accuracy(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray,
                          y_test: np.ndarray, max_iter: int = 1000, seed: int = 0) -> float:
    """Test accuracy of a multinomial logistic regression on standardised codes."""
    if y_train is None or y_test is None:
        raise DataError("a linear probe needs labels")
    if z_train.shape[1] != z_test.shape[1]:
        raise DataError(f"train codes have {z_train.shape[1]} dimensions, test codes {z_test.shape[1]}")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
    clf.fit(z_train, y_train)
    return float(clf.score(z_test, y_test))
