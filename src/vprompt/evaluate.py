"""Clean accuracy of a PromptedModel on a dataset (single process or under accelerate)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from vprompt.hardware import pin_memory
from vprompt.model import PromptedModel


@torch.no_grad()
def evaluate(
    model: PromptedModel,
    dataset: Dataset,
    batch_size: int = 128,
    accelerator: Any | None = None,
    workers: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy; with an accelerator, every process scores a shard."""
    loader = DataLoader(dataset, batch_size, shuffle=False, num_workers=workers, pin_memory=pin_memory())
    device = next(model.parameters()).device
    if accelerator is not None:
        loader = accelerator.prepare_data_loader(loader)
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for images, labels in tqdm(loader, desc="eval", leave=False, disable=not progress):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if accelerator is not None:
            with accelerator.autocast():
                logits = model(images)
            logits, labels = accelerator.gather_for_metrics((logits, labels))
        else:
            logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
        count += len(labels)
    model.train(was_training)
    return {"acc": correct / count, "loss": loss_sum / count, "n": count}
