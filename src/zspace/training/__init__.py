"""Training: the fit loop, checkpoints and runs."""
from .config import TrainConfig
from .run import DataSpec, Run, load_run, resume, train
from .trainer import Trainer

__all__ = ["TrainConfig", "DataSpec", "Run", "load_run", "resume", "train", "Trainer"]
