"""Model families, one file each, all registered by name for the trainer and CLI."""
from .autoencoder import Autoencoder, AutoencoderConfig
from .dbvae import DBVAE, DBVAEConfig
from .base import MODELS, Model, build_model
from .capabilities import (Conditional, ContinuousCode, DiscreteCodes, ExactLikelihood, ImportanceSampledLikelihood,
                           LatentVariableModel, Reconstructs, SamplesFromPrior, capabilities_of)
from .losses import Losses, Statistic
from .pixelcnn import GatedPixelCNN, GatedPixelCNNConfig, PixelCNN, PixelCNNConfig
from .sae import SAEConfig, SparseAutoencoder
from .tile_transformer import TileTransformer, TileTransformerConfig
from .vae import CVAE, VAE, CVAEConfig, VAEConfig
from .vqprior import VQPrior, VQPriorConfig
from .vqvae import VQVAE, VQVAEConfig

__all__ = ["Autoencoder", "AutoencoderConfig", "VAE", "VAEConfig", "CVAE", "CVAEConfig", "PixelCNN", "PixelCNNConfig",
           "GatedPixelCNN", "GatedPixelCNNConfig", "VQVAE", "VQVAEConfig", "VQPrior", "VQPriorConfig",
           "SparseAutoencoder", "SAEConfig", "TileTransformer", "TileTransformerConfig", "DBVAE", "DBVAEConfig",
           "MODELS", "Losses", "Statistic", "Model", "build_model",
           "Conditional", "ContinuousCode", "DiscreteCodes", "ExactLikelihood", "ImportanceSampledLikelihood",
           "LatentVariableModel", "Reconstructs", "SamplesFromPrior", "capabilities_of"]
