"""Dataset readers (one module per format), validation, augmentation and the in-memory loader.

Importing this package registers every built-in reader in `DATASETS`.
"""

from distil.data import cifar, digits, idx, npz, tabular  # noqa: F401  (imported to register readers)
from distil.data.augment import augment_batch, zero_fill
from distil.data.bundle import DataBundle, Split
from distil.data.loader import DatasetLoader, EpochSampler, SampleDataset, TensorLoader
from distil.data.registry import DATASETS, load_dataset

__all__ = [
    "DATASETS",
    "DataBundle",
    "DatasetLoader",
    "EpochSampler",
    "SampleDataset",
    "Split",
    "TensorLoader",
    "augment_batch",
    "load_dataset",
    "zero_fill",
]
