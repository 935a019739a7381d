"""Frozen features computed once: a method that trains nothing before the backbone's output (the
linear probe) sees the same features of an un-augmented image every epoch, so the backbone runs
over each image once per run and every epoch trains the head on the stored features.

Unlike a prompt, a linear probe cannot change what the backbone computes, and running the frozen
backbone again every epoch is almost all of its cost. The training loop asks
[`cacheable`][vprompt.frozen_features.cacheable] why not (None when it can), computes
[`CachedFeatures`][vprompt.frozen_features.CachedFeatures] for the training and evaluation splits,
and trains the head on them; the run's metrics rows say so (``cached_features``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from vprompt.data.filelist import TaskDataset
from vprompt.model import PromptedModel, check_pixels


def frozen_trunk_reason(model: PromptedModel) -> str | None:
    """Why the model's features change while it trains (None when they cannot)."""
    if model.input_prompt is not None or model.token_prompt is not None:
        return f"{model.method.name} trains a prompt before the backbone's output"
    if model.method.changes_backbone:
        return f"{model.method.name} trains the backbone"
    if model.method.epoch_start is not None:
        return f"{model.method.name} changes between epochs"
    return None


def cacheable(model: PromptedModel, datasets: list[Dataset | None], budget_mb: float, processes: int,
              per_batch: bool) -> str | None:
    """Why the run cannot train on stored features (None when it can): a prompt or backbone that
    trains, a split drawn at random each epoch (or of unknown kind), work done on every batch's
    images (adversarial examples, a teacher), several processes, or features over ``budget_mb``."""
    reason = frozen_trunk_reason(model)
    if reason:
        return reason
    if per_batch:
        return "each batch's images are transformed (adversarial training or distillation)"
    if processes > 1:
        return "several processes train (the head alone would skip their gradient sync)"
    splits = [d for d in datasets if d is not None]
    if any(not isinstance(d, TaskDataset) or d.random_augment for d in splits):
        return "a split is augmented at random (or of unknown kind), so its features change every epoch"
    size_mb = sum(len(d) for d in splits) * int(model.backbone.num_features) * 4 / 2**20
    if size_mb > budget_mb:
        return f"the features ({size_mb:.0f} MB) exceed --cache-mb {budget_mb:g}"
    return None


class CachedFeatures(Dataset):
    """A split's backbone features (N, D) and labels, with the split's task and name."""

    def __init__(self, source: Dataset, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.features, self.labels = features, labels
        self.task = getattr(source, "task", None)
        self.split = getattr(source, "split", None)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.features[index], int(self.labels[index])


@torch.no_grad()
def cache_features(model: PromptedModel, dataset: Dataset, batch_size: int, workers: int, accelerator: Any,
                   show: bool) -> CachedFeatures:
    """``dataset`` through the frozen backbone once (eval mode, the run's precision), as float32."""
    device = accelerator.device
    was_training = model.training
    model.eval()
    features, labels = [], []
    loader = DataLoader(dataset, batch_size, shuffle=False, num_workers=workers)
    for index, (images, batch_labels) in enumerate(tqdm(loader, desc="features", leave=False, disable=not show)):
        images = images.to(device)
        if index == 0:
            check_pixels(images, model.data_config)
        with accelerator.autocast():
            features.append(model.features(images).float().cpu())
        labels.append(batch_labels)
    model.train(was_training)
    return CachedFeatures(dataset, torch.cat(features), torch.cat(labels))
