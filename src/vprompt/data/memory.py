"""Small splits decoded once and kept in memory as uint8 pixels.

A VTAB-1k training split is 1,000 images: at 224² that is 150 MB of uint8 pixels, while reading
and resizing the JPEGs again every epoch costs more than a prompt-tuning step of a small ViT
(``docs/results/data_path.md``). A split that fits the budget is decoded once, in parallel when
workers are allowed, and every epoch after that only runs the split's augmentation (random crop,
flip) on the cached pixels, so the items are the same as when they are read from disk.
"""

from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .filelist import TaskDataset

DEFAULT_BUDGET_MB = 2048
"""How many MB of decoded pixels a run keeps in memory by default (train and eval splits together)."""


class InMemoryDataset(TaskDataset):
    """A [`TaskDataset`][vprompt.data.TaskDataset] whose decoded pixels are held in one uint8
    tensor; augmentation is still the source's own, run per item.

    Args:
        source: The dataset that was decoded.
        pixels: Its items' uint8 pixels, (N, 3, H, W).
        labels: Its items' labels, (N,).
    """

    source: TaskDataset
    """The dataset that was decoded (its task, split and augmentation are used)."""

    def __init__(self, source: TaskDataset, pixels: torch.Tensor, labels: torch.Tensor) -> None:
        self.source, self.pixels, self.labels = source, pixels, labels
        self.task = source.task
        self.split = getattr(source, "split", None)

    def __len__(self) -> int:
        """Items in the split."""
        return len(self.labels)

    def decode(self, index: int) -> tuple[torch.Tensor, int]:
        """Item ``index``'s cached uint8 pixels (3, H, W) and its label: no file is read."""
        return self.pixels[index], int(self.labels[index])

    def augment(self, pixels: torch.Tensor) -> torch.Tensor:
        """The source's own per-epoch augmentation, so cached items are drawn as uncached ones."""
        return self.source.augment(pixels)

    @property
    def random_augment(self) -> bool:
        """The source's."""
        return self.source.random_augment

    @property
    def nbytes(self) -> int:
        """Bytes of the cached pixels."""
        return self.pixels.numel() * self.pixels.element_size()


class Decoded(Dataset):
    """The decode stage of a dataset alone, so a DataLoader can spread decoding over workers."""

    def __init__(self, source: TaskDataset) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.source.decode(index)


def first_decoded(dataset: Dataset) -> torch.Tensor | None:
    """The decoded pixels of ``dataset``'s first item, or None when it cannot be cached: not a
    two-stage dataset, already in memory, or empty."""
    if not isinstance(dataset, TaskDataset) or isinstance(dataset, InMemoryDataset) or len(dataset) == 0:
        return None
    try:
        pixels, _ = dataset.decode(0)
    except NotImplementedError:
        return None
    return pixels


SERIAL_DECODE_SECONDS = 0.5  # about what starting two DataLoader workers costs on a 2-core machine


def in_memory(dataset: Dataset, budget_mb: float, workers: int = 0, progress: bool = False) -> Dataset:
    """``dataset`` decoded into memory when its pixels fit in ``budget_mb``; otherwise unchanged.

    Args:
        dataset: Any dataset; only a [`TaskDataset`][vprompt.data.TaskDataset] with a decode
            stage is cached, and only when every item decodes to the same shape.
        budget_mb: The most MB of pixels to hold (0 turns caching off).
        workers: Processes that decode in parallel (0: this process; also when the first item
            says decoding everything here takes under ``SERIAL_DECODE_SECONDS``).
        progress: Show a progress bar while decoding.

    Returns:
        An [`InMemoryDataset`][vprompt.data.InMemoryDataset], or ``dataset`` itself.

    Raises:
        DataError: An image cannot be read (the same error reading it from disk gives).
    """
    started = time.perf_counter()
    first = first_decoded(dataset) if budget_mb > 0 else None
    if first is None or first.numel() * first.element_size() * len(dataset) > budget_mb * 2**20:
        return dataset
    if (time.perf_counter() - started) * len(dataset) < SERIAL_DECODE_SECONDS:
        workers = 0  # starting worker processes would take longer than decoding everything here
    pixels = torch.empty((len(dataset), *first.shape), dtype=first.dtype)
    labels = torch.empty(len(dataset), dtype=torch.long)
    loader = DataLoader(Decoded(dataset), batch_size=64, num_workers=workers, collate_fn=stacked)
    start = 0
    name = getattr(dataset, "split", None) or "split"
    for batch in tqdm(loader, desc=f"decoding {name}", leave=False, disable=not progress):
        if batch is None or batch[0].shape[1:] != first.shape:
            return dataset  # images of several sizes: read them from disk as before
        end = start + len(batch[1])
        pixels[start:end], labels[start:end] = batch
        start = end
    return InMemoryDataset(dataset, pixels, labels)


def stacked(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A batch of decoded items as one pixel tensor and one label tensor, or None when their shapes
    differ. Stacking in the worker sends two tensors back instead of one per image: passing each
    image's memory between processes cost more than decoding it (0.6 s for 1,000 small images)."""
    if any(item.shape != batch[0][0].shape for item, _ in batch):
        return None
    return torch.stack([item for item, _ in batch]), torch.tensor([label for _, label in batch], dtype=torch.long)
