"""Image lists as datasets: ``(path, label)`` pairs or another dataset's PIL images → [0, 1] tensors.

The FGVC and torchvision loaders share this so that every source hands the trainer the same thing
FileListDataset does: float images (3, H, W) in [0, 1], not normalised (normalisation lives in the
model, so attacks see pixels), and a one-line DataError naming the file for an unreadable image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vprompt.errors import DataError

from .filelist import TaskDataset, TaskInfo, read_rgb, upright_rgb

FGVC_RESIZE = 256 / 224  # VPT's FGVC recipe: resize to 256, crop 224


class PixelTransform:
    """PIL → [0, 1] tensor at ``size``, in the two stages a [`TaskDataset`][vprompt.data.TaskDataset]
    item is made of. With ``crop`` (the FGVC recipe): resize to 256/224 of the target, then a
    random crop and flip for training, a centre crop otherwise. Without it: a plain resize, plus a
    random flip for training. Decoding ends at the resize, so cached pixels are the same every epoch."""

    def __init__(self, size: tuple[int, int], train: bool, crop: bool) -> None:
        from torchvision import transforms as T  # on first use: torchvision is slow to import

        resize = tuple(round(s * FGVC_RESIZE) for s in size) if crop else size
        self.decode = T.Compose([T.Resize(resize), T.PILToTensor()])
        crops = [T.RandomCrop(size) if train else T.CenterCrop(size)] if crop else []
        flips = [T.RandomHorizontalFlip()] if train else []
        self.augment = T.Compose([*crops, *flips])
        self.random = train
        """Whether ``augment`` draws at random (a training split's crop and flip)."""


class TransformedDataset(TaskDataset):
    """A split whose items are made by a [`PixelTransform`][vprompt.data.images.PixelTransform]: its
    augmentation, and whether that is random, are the transform's."""

    transform: PixelTransform

    def augment(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.transform.augment(pixels)

    @property
    def random_augment(self) -> bool:
        return self.transform.random


class ImageListDataset(TransformedDataset):
    """Images on disk listed as ``(path, label)``; a missing one fails at construction."""

    def __init__(self, task: TaskInfo, samples: Sequence[tuple[Path, int]], where: str,
                 transform: PixelTransform) -> None:
        self.task, self.samples, self.where, self.transform = task, list(samples), where, transform
        missing = [path for path, _ in self.samples if not path.is_file()]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(f"image {missing[0]} listed in {where} does not exist{more}")

    def __len__(self) -> int:
        return len(self.samples)

    def decode(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform.decode(read_rgb(path, self.where)), label


class WrappedDataset(TransformedDataset):
    """A subset of another dataset's ``(PIL image, label)`` items, converted by ``transform``."""

    def __init__(self, task: TaskInfo, base: Dataset, indices: Sequence[int],
                 transform: PixelTransform) -> None:
        self.task, self.base, self.indices, self.transform = task, base, list(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def decode(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[self.indices[index]]
        return self.transform.decode(upright_rgb(image)), int(label)
