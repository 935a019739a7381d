"""Image lists as datasets: ``(path, label)`` pairs or another dataset's PIL images → [0, 1] tensors.

The FGVC and torchvision loaders share this so that every source hands the trainer the same thing
FileListDataset does: float images (3, H, W) in [0, 1], not normalised (normalisation lives in the
model, so attacks see pixels), and a one-line DataError naming the file for an unreadable image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from vprompt.errors import DataError

from .filelist import TaskDataset, TaskInfo, read_rgb

FGVC_RESIZE = 256 / 224  # VPT's FGVC recipe: resize to 256, crop 224


def pixel_transform(size: tuple[int, int], train: bool, crop: bool) -> Callable[[Image.Image], torch.Tensor]:
    """PIL → [0, 1] tensor at ``size``. With ``crop`` (the FGVC recipe): resize the short side to
    256/224 of the target, then a random crop and flip for training, a centre crop otherwise.
    Without it: a plain resize, plus a random flip for training."""
    if crop:
        resize = [T.Resize(tuple(round(s * FGVC_RESIZE) for s in size)),
                  T.RandomCrop(size) if train else T.CenterCrop(size)]
    else:
        resize = [T.Resize(size)]
    flip = [T.RandomHorizontalFlip()] if train else []
    return T.Compose([*resize, *flip, T.ToTensor()])


class ImageListDataset(TaskDataset):
    """Images on disk listed as ``(path, label)``; a missing one fails at construction."""

    def __init__(self, task: TaskInfo, samples: Sequence[tuple[Path, int]], where: str,
                 transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.task, self.samples, self.where, self.transform = task, list(samples), where, transform
        missing = [path for path, _ in self.samples if not path.is_file()]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(f"image {missing[0]} listed in {where} does not exist{more}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(read_rgb(path, self.where)), label


class WrappedDataset(TaskDataset):
    """A subset of another dataset's ``(PIL image, label)`` items, converted by ``transform``."""

    def __init__(self, task: TaskInfo, base: Dataset, indices: Sequence[int],
                 transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.task, self.base, self.indices, self.transform = task, base, list(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[self.indices[index]]
        return self.transform(image.convert("RGB")), int(label)
