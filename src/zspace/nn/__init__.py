"""Building blocks only: MLPs, convolutional and residual encoder/decoder stacks."""
from .conv import ConvDecoder, ConvEncoder
from .mlp import MLP, activation
from .resnet import NORMS, ResidualBlock, ResNetDecoder, ResNetEncoder

__all__ = ["MLP", "activation", "ConvEncoder", "ConvDecoder", "NORMS", "ResidualBlock", "ResNetEncoder",
           "ResNetDecoder"]
