"""The visual-prompting datasets through torchvision, read from disk (downloaded only on request).

Every dataset is offered with the same four splits as FGVC, so the tuning protocol runs unchanged:
``trainval`` is the dataset's official training data (train ∪ val where it has a val split),
``test`` its official test split, and ``train``/``val`` its own train/val split where it has one,
else a fixed 90 % / 10 % partition of ``trainval`` (seed 0). Datasets that ship without any split
(EuroSAT, SUN397) hold out a fixed 20 % of the images as ``test`` (seed 0). Images are resized to
the model's input size (the VP papers' preparation), with a random flip for training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset

from vprompt.errors import DataError

from .filelist import TaskInfo
from .images import PixelTransform, WrappedDataset
from .source import TRAINVAL_PROTOCOL, TaskSource

HOLDOUT_SEED = 0
VAL_FRACTION = 0.1
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class TorchvisionSet:
    """How to build a torchvision dataset: its class, class count and constructor arguments per
    official split ("all" when it has none)."""

    cls: str
    num_classes: int
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)


def _split_arg(**splits: str) -> dict[str, dict[str, Any]]:
    return {ours: {"split": theirs} for ours, theirs in splits.items()}


TORCHVISION_SETS: dict[str, TorchvisionSet] = {
    "cifar10": TorchvisionSet("CIFAR10", 10, {"trainval": {"train": True}, "test": {"train": False}}),
    "cifar100": TorchvisionSet("CIFAR100", 100, {"trainval": {"train": True}, "test": {"train": False}}),
    "svhn": TorchvisionSet("SVHN", 10, _split_arg(trainval="train", test="test")),
    "gtsrb": TorchvisionSet("GTSRB", 43, _split_arg(trainval="train", test="test")),
    "flowers102": TorchvisionSet("Flowers102", 102, _split_arg(train="train", val="val", test="test")),
    "dtd": TorchvisionSet("DTD", 47, _split_arg(train="train", val="val", test="test")),
    "eurosat": TorchvisionSet("EuroSAT", 10, {"all": {}}),
    "oxford_pets": TorchvisionSet("OxfordIIITPet", 37, _split_arg(trainval="trainval", test="test")),
    "food101": TorchvisionSet("Food101", 101, _split_arg(trainval="train", test="test")),
    "fgvc_aircraft": TorchvisionSet("FGVCAircraft", 100, _split_arg(train="train", val="val", test="test")),
    "country211": TorchvisionSet("Country211", 211, _split_arg(train="train", val="valid", test="test")),
    "sun397": TorchvisionSet("SUN397", 397, {"all": {}}),
    "stanford_cars": TorchvisionSet("StanfordCars", 196, _split_arg(trainval="train", test="test")),
}


def _build(spec: TorchvisionSet, root: Path, download: bool, kwargs: dict[str, Any]) -> Dataset:
    import torchvision.datasets

    try:
        return getattr(torchvision.datasets, spec.cls)(root=str(root), download=download, **kwargs)
    except RuntimeError as e:
        hint = "" if download else " (pass --download to fetch it)"
        raise DataError(f"torchvision {spec.cls} not found under {root}{hint}: {e}") from None


def _partition(size: int, fraction: float) -> tuple[list[int], list[int]]:
    """A fixed (seeded) split of range(size) into (rest, held out)."""
    order = torch.randperm(size, generator=torch.Generator().manual_seed(HOLDOUT_SEED)).tolist()
    cut = max(1, round(size * fraction))
    return sorted(order[cut:]), sorted(order[:cut])


def torchvision_source(name: str, root: Path | str, download: bool = False) -> TaskSource:
    """A torchvision dataset as a task with splits train, val, trainval and test."""
    spec = TORCHVISION_SETS.get(name.lower())
    if spec is None:
        raise DataError(f"unknown torchvision dataset {name!r}; choose from {', '.join(TORCHVISION_SETS)}")
    root = Path(root)
    built = {split: _build(spec, root, download, kwargs) for split, kwargs in spec.splits.items()}
    parts: dict[str, tuple[Dataset, list[int]]] = {}
    if "all" in built:
        rest, held = _partition(len(built["all"]), TEST_FRACTION)
        parts["test"] = (built["all"], held)
        parts["trainval"] = (built["all"], rest)
    else:
        parts["test"] = (built["test"], list(range(len(built["test"]))))
    if "train" in built:
        parts["train"] = (built["train"], list(range(len(built["train"]))))
        parts["val"] = (built["val"], list(range(len(built["val"]))))
        joined = ConcatDataset([built["train"], built["val"]])
        parts["trainval"] = (joined, list(range(len(joined))))
    else:
        if "trainval" in built:
            parts["trainval"] = (built["trainval"], list(range(len(built["trainval"]))))
        base, indices = parts["trainval"]
        train, val = _partition(len(indices), VAL_FRACTION)
        parts["train"] = (base, [indices[i] for i in train])
        parts["val"] = (base, [indices[i] for i in val])
    first = next(iter(built.values()))
    names = list(getattr(first, "classes", None) or [str(i) for i in range(spec.num_classes)])
    if len(names) != spec.num_classes:
        names = [str(i) for i in range(spec.num_classes)]
    info = TaskInfo(root=root, name=name.lower(), num_classes=spec.num_classes, class_names=names, group=None)

    def open_split(split: str, size: tuple[int, int], train: bool) -> WrappedDataset:
        base, indices = parts[split]
        return WrappedDataset(info, base, indices, PixelTransform(size, train, crop=False))

    return TaskSource(info=info, kind="torchvision", image_source=f"torchvision {spec.cls} in {root}",
                      splits=("train", "val", "trainval", "test"), protocol=TRAINVAL_PROTOCOL, open_split=open_split)
