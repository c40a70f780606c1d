"""FER2013 reading, caching, splitting, augmentation and the LightningDataModule."""

from fer_sweep.data.classes import CLASS_NAMES, SIX_CLASS_NAMES, class_names
from fer_sweep.data.errors import FER2013Error

__all__ = ["CLASS_NAMES", "SIX_CLASS_NAMES", "FER2013Error", "class_names"]
