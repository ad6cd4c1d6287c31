"""Data: the dataset contract and its sources, preprocessing and resumable batches."""
from .dataset import ArrayData, Concat, Dataset, DataSplits, Subset
from .idx import read_idx
from .images import ImageFolder
from .loader import Batch, BatchLoader
from .shards import ShardStore, ShardWriter
from .sources import CLASS_NAMES, NAMED_DATASETS, load_dataset, load_file, search_dirs
from .transforms import PREPROCESSING, Preprocessing

__all__ = ["ArrayData", "Concat", "Dataset", "DataSplits", "Subset", "read_idx", "ImageFolder",
           "Batch", "BatchLoader", "ShardStore", "ShardWriter", "CLASS_NAMES", "NAMED_DATASETS",
           "load_dataset", "load_file", "search_dirs", "PREPROCESSING", "Preprocessing"]
