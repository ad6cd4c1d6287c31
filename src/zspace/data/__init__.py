"""Data: sources, validated containers, preprocessing and resumable batches."""
from .dataset import ArrayData, DataSplits
from .idx import read_idx
from .loader import Batch, BatchLoader
from .sources import CLASS_NAMES, NAMED_DATASETS, load_dataset, load_file, search_dirs
from .transforms import PREPROCESSING, Preprocessing

__all__ = ["ArrayData", "DataSplits", "read_idx", "Batch", "BatchLoader", "CLASS_NAMES",
           "NAMED_DATASETS", "load_dataset", "load_file", "search_dirs", "PREPROCESSING",
           "Preprocessing"]
