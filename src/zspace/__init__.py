"""zspace: deep latent-variable generative models that reproduce the literature.

    import zspace
    run = zspace.train("vae", "fashion-mnist", latent_dim=32, out="runs/fm-vae",
                       config=zspace.TrainConfig(epochs=50))
    report = zspace.evaluate_likelihood(run.model, run.loader("test"), num_samples=1000)
"""
from .core.version import __version__  # noqa: E402,F401

from .data import ArrayData, BatchLoader, DataSplits, Preprocessing, load_dataset  # noqa: E402
from .distributions import Bernoulli, DiagonalGaussian, Gaussian  # noqa: E402
from .errors import (CheckpointError, ConfigError, DataError, TrainingDiverged,  # noqa: E402
                     ZspaceError)
from .evaluation import (bits_per_dim, evaluate_likelihood,  # noqa: E402
                         importance_sampled_log_likelihood, reconstruction_error)
from .models import (CVAE, VAE, VQVAE, Autoencoder, AutoencoderConfig, CVAEConfig, GatedPixelCNN,  # noqa: E402
                     GatedPixelCNNConfig, PixelCNN, PixelCNNConfig, VAEConfig, VQVAEConfig, build_model)
from .training import DataSpec, Run, TrainConfig, Trainer, load_run, resume, train  # noqa: E402
from .training import run as _training_run  # noqa: E402


def _write_run_figures(run):
    """train(figures=True) draws through the report layer; imported when first drawn (matplotlib)."""
    from .report.figures import write_run_figures

    written = write_run_figures(run)
    if run.model.name == "dbvae":      # its resampling weights and the most/least up-weighted images
        from .report.debias_figures import save_debias_weights

        written.append(save_debias_weights(run, run.path / "figures" / "debias_weights.png"))
    return [p for p in written if p is not None]


_training_run.FIGURE_WRITER = _write_run_figures

__all__ = [
    "ArrayData", "BatchLoader", "DataSplits", "Preprocessing", "load_dataset",
    "Bernoulli", "DiagonalGaussian", "Gaussian",
    "CheckpointError", "ConfigError", "DataError", "TrainingDiverged", "ZspaceError",
    "bits_per_dim", "evaluate_likelihood", "importance_sampled_log_likelihood",
    "reconstruction_error",
    "VAE", "CVAE", "Autoencoder", "AutoencoderConfig", "VAEConfig", "CVAEConfig", "build_model",
    "PixelCNN", "PixelCNNConfig", "GatedPixelCNN", "GatedPixelCNNConfig", "VQVAE", "VQVAEConfig",
    "DataSpec", "Run", "TrainConfig", "Trainer", "load_run", "resume", "train",
]
