"""otx-nld: noisy label detection for object detection from training loss dynamics.

Public Python API::

    from otx_nld import Dataset
    ds = Dataset.import_from("d6-dice")              # format detected
    ds = ds.random_split({"train": 0.5, "val": 0.2, "test": 0.3}, seed=0).reindex_annotations()
    noisy, truth = synthesize_noise(ds, NoiseSpec(flip=4), subset="train", seed=0)
    noisy.export("d6-dice-noisy", format="datumaro")
    result = otx_nld.train("atss_cpu", train_data="d6-dice-noisy", val_data="d6-dice-noisy", output="run")
"""

from otx_nld.data.dataset import Box, Dataset, Item
from otx_nld.errors import ConfigError, DatasetError, OtxNldError

__version__ = "0.1.0"

# Heavy (torch) entry points load on first use, so `import otx_nld` and `otx-nld data ...` stay fast.
_LAZY = {"train": "otx_nld.training.trainer"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'otx_nld' has no attribute {name!r}")


__all__ = ["Box", "ConfigError", "Dataset", "DatasetError", "Item", "OtxNldError", "__version__", "train"]
