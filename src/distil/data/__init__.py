"""Dataset readers (one module per format), validation, augmentation and the in-memory loader.

Importing this package registers every built-in reader in `DATASETS`.
"""

from distil.data import (  # noqa: F401  (imported to register readers)
    arithmetic,
    chat,
    cifar,
    digits,
    hfdatasets,
    idx,
    imagefolder,
    npydir,
    npz,
    shards,
    tabular,
    text,
    textcls,
)
from distil.data.augment import augment_batch, zero_fill
from distil.data.bundle import DataBundle, SampleSplit, Split
from distil.data.imagefolder import ImageFolderSplit
from distil.data.loader import DatasetLoader, EpochSampler, SampleDataset, TensorLoader
from distil.data.npydir import ArraySplit, export_npy_dir
from distil.data.registry import DATASETS, load_dataset

__all__ = [
    "DATASETS",
    "ArraySplit",
    "DataBundle",
    "DatasetLoader",
    "EpochSampler",
    "ImageFolderSplit",
    "SampleDataset",
    "SampleSplit",
    "Split",
    "TensorLoader",
    "augment_batch",
    "export_npy_dir",
    "load_dataset",
    "zero_fill",
]
