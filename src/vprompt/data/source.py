"""A task as the trainer sees it, whatever its on-disk format: classes, splits and datasets.

VTAB-1k file lists, FGVC json splits and torchvision datasets differ in split names and in how
images are prepared; each loader returns a ``TaskSource``, so training, evaluation and the
tuning protocol never look at the format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch.utils.data import Dataset

from vprompt.errors import DataError

from .filelist import TaskInfo

# (split, (height, width), train) → dataset of ([0, 1] image, label)
OpenSplit = Callable[[str, tuple[int, int], bool], Dataset]


@dataclass(frozen=True)
class ProtocolSplits:
    """Which splits the tuning protocol uses: the grid trains on ``tune_train`` and is scored on
    ``tune_val``; the chosen setting is retrained on ``final_train`` and tested on ``test``."""

    tune_train: str
    tune_val: str
    final_train: str
    test: str


VTAB_PROTOCOL = ProtocolSplits("train800", "val200", "train800val200", "test")
TRAINVAL_PROTOCOL = ProtocolSplits("train", "val", "trainval", "test")


@dataclass(frozen=True)
class TaskSource:
    """One downstream task: what it is, which splits it has, and how to open one."""

    info: TaskInfo
    kind: str
    """"vtab-filelist", "fgvc-json" or "torchvision"."""
    image_source: str
    """Where the pixels come from, recorded in every result row (e.g. "JPEG file lists")."""
    splits: tuple[str, ...]
    protocol: ProtocolSplits
    open_split: OpenSplit

    def dataset(self, split: str, image_size: int | tuple[int, int], train: bool = False) -> Dataset:
        """The ``split`` at ``image_size``, with the source's training augmentation when ``train``."""
        if split not in self.splits:
            raise DataError(f"{self.info.name} ({self.kind}) has no split {split!r}; "
                            f"it has {', '.join(self.splits)}")
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        return self.open_split(split, size, train)
