"""scikit-learn estimator façades, so zspace models drop into pipelines.

They follow the estimator contract (``__init__`` stores parameters only, fitted
attributes end in ``_``, ``fit`` returns self) and pass
``sklearn.utils.estimator_checks.check_estimator`` (tests/test_sklearn.py); the one check
scikit-learn skips, array-API input, is skipped for every estimator unless SCIPY_ARRAY_API
is set, and the façade converts inputs to NumPy float32 anyway.
Inputs are 2-D arrays (n_samples, n_features): images are flattened. Features are
min-max scaled to [0, 1] on the training data, and ``inverse_transform`` undoes it.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

from .core.compute import small_fit_threads
from .data.dataset import ArrayData
from .data.transforms import Preprocessing
from .models.autoencoder import Autoencoder, AutoencoderConfig
from .training.config import TrainConfig
from .training.trainer import Trainer
from .rng import seeded


class AutoencoderTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Autoencoder codes as a transformer: ``fit``, ``transform`` (codes),
    ``inverse_transform`` (reconstructions in the original feature scale).

    Parameters mirror :class:`zspace.AutoencoderConfig` (``n_components`` is its
    ``latent_dim``) and the training settings; ``preset`` picks a variant ('basic',
    'linear', 'denoising', 'dropout', 'sparse-l1', 'sparse-kl').
    """

    def __init__(self, n_components=2, *, preset="none", hidden=(64,), activation="relu",
                 code_activation="none", corruption="none", corruption_level=0.0, dropout=0.0,
                 sparsity="none", sparsity_weight=0.0, sparsity_target=0.05, epochs=50,
                 batch_size=64, lr=3e-3, random_state=None):
        self.n_components = n_components
        self.preset = preset
        self.hidden = hidden
        self.activation = activation
        self.code_activation = code_activation
        self.corruption = corruption
        self.corruption_level = corruption_level
        self.dropout = dropout
        self.sparsity = sparsity
        self.sparsity_weight = sparsity_weight
        self.sparsity_target = sparsity_target
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.random_state = random_state

    def _model_options(self) -> dict:
        opts = dict(latent_dim=self.n_components, hidden=tuple(self.hidden), activation=self.activation,
                    code_activation=self.code_activation, corruption=self.corruption,
                    corruption_level=self.corruption_level, dropout=self.dropout, sparsity=self.sparsity,
                    sparsity_weight=self.sparsity_weight, sparsity_target=self.sparsity_target)
        if self.preset != "none":  # a preset's values fill what was left at the default
            defaults = type(self)().get_params()
            opts = {k: v for k, v in opts.items()
                    if k == "latent_dim" or v != defaults.get(k, defaults.get("n_components"))}
        return {**opts, "preset": self.preset, "architecture": "mlp"}

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=np.float32, ensure_min_samples=2)
        self.scaler_ = MinMaxScaler().fit(X)
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        config = AutoencoderConfig.from_dict({"input_shape": (X.shape[1],), **self._model_options()})
        train_config = TrainConfig(epochs=self.epochs, batch_size=min(self.batch_size, len(X)), lr=self.lr,
                                   seed=seed, threads=small_fit_threads(X.size))
        data = ArrayData.from_arrays(self.scaler_.transform(X).astype(np.float32))
        with seeded(seed):
            model = Autoencoder(config)
            Trainer(model, data, None, Preprocessing("none"), train_config, progress=False).fit()
        self.model_ = model.eval()
        self._n_features_out = self.n_components
        return self

    def transform(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        x = torch.from_numpy(self.scaler_.transform(X).astype(np.float32))
        with torch.no_grad():
            return self.model_.embed(x).numpy().astype(np.float64)

    def inverse_transform(self, X):
        check_is_fitted(self)
        z = np.asarray(X, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.n_components:
            raise ValueError(f"expected codes of shape (n, {self.n_components}), got {z.shape}")
        with torch.no_grad():
            x = self.model_.decode(torch.from_numpy(z)).numpy().astype(np.float64)
        return self.scaler_.inverse_transform(x)
