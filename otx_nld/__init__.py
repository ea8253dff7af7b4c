"""otx-nld: noisy label detection for object detection from training loss dynamics.

Public Python API::

    from otx_nld import Dataset
    ds = Dataset.import_from("d6-dice")              # format detected
    ds = ds.random_split({"train": 0.5, "val": 0.2, "test": 0.3}, seed=0).reindex_annotations()
    noisy, truth = synthesize_noise(ds, NoiseSpec(flip=4), subset="train", seed=0)
    noisy.export("d6-dice-noisy", format="datumaro")
"""

from otx_nld.data.dataset import Box, Dataset, Item
from otx_nld.errors import ConfigError, DatasetError, OtxNldError

__version__ = "0.1.0"

__all__ = ["Box", "ConfigError", "Dataset", "DatasetError", "Item", "OtxNldError", "__version__"]
