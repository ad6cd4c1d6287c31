"""Model families, one file each, all registered by name for the trainer and CLI."""
from .autoencoder import Autoencoder, AutoencoderConfig
from .base import MODELS, Losses, Model, build_model
from .pixelcnn import GatedPixelCNN, GatedPixelCNNConfig, PixelCNN, PixelCNNConfig
from .vae import CVAE, VAE, CVAEConfig, VAEConfig
from .vqvae import VQVAE, VQVAEConfig

__all__ = ["Autoencoder", "AutoencoderConfig", "VAE", "VAEConfig", "CVAE", "CVAEConfig", "PixelCNN", "PixelCNNConfig",
           "GatedPixelCNN", "GatedPixelCNNConfig", "VQVAE", "VQVAEConfig", "MODELS", "Losses", "Model", "build_model"]
