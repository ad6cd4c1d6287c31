"""Building blocks only: MLPs and convolutional encoder/decoder stacks."""
from .conv import ConvDecoder, ConvEncoder
from .mlp import MLP, activation

__all__ = ["MLP", "activation", "ConvEncoder", "ConvDecoder"]
