"""FGVC tasks with the json split files used by VPT (CUB-200-2011, NABirds, Oxford Flowers,
Stanford Dogs, Stanford Cars).

A dataset folder holds ``train.json``, ``val.json`` and ``test.json``, each ``{image_path:
class_id}``, beside the dataset's own images. Image paths are relative to the folder or to its
``images``/``Images`` subfolder (CUB and NABirds keep images there, Dogs in ``Images``); the first
of those under which the listed images exist is used. Class ids (any integers, e.g. 1-based) are
mapped to 0..C−1 in sorted order over all three files. ``trainval`` is train ∪ val. Training
images get VPT's FGVC augmentation (resize 256/224 of the input size, random crop, flip); the
other splits a centre crop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vprompt.errors import DataError

from .filelist import TaskInfo
from .images import ImageListDataset, PixelTransform
from .source import TRAINVAL_PROTOCOL, TaskSource

SPLIT_FILES = ("train", "val", "test")
IMAGE_DIRS = ("", "images", "Images")


@dataclass(frozen=True)
class FGVCTask:
    title: str
    num_classes: int


FGVC_TASKS: dict[str, FGVCTask] = {
    "cub": FGVCTask("CUB-200-2011", 200),
    "nabirds": FGVCTask("NABirds", 555),
    "flowers": FGVCTask("Oxford Flowers", 102),
    "dogs": FGVCTask("Stanford Dogs", 120),
    "cars": FGVCTask("Stanford Cars", 196),
}


def read_json_split(root: Path, split: str) -> dict[str, int]:
    """``{relative image path: class id}`` of ``split.json``; a malformed file is a DataError."""
    path = root / f"{split}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} does not exist (an FGVC folder needs {', '.join(s + '.json' for s in SPLIT_FILES)})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path} must be a non-empty JSON object {{image_path: class_id}}")
    bad = [key for key, value in data.items() if not isinstance(value, int) or isinstance(value, bool)]
    if bad:
        raise DataError(f"{path}: class ids must be integers; {bad[0]!r} has {data[bad[0]]!r}")
    return data


def image_root(root: Path, listed: dict[str, int]) -> Path:
    """The folder the json paths are relative to: the first candidate holding the first listed image."""
    first = next(iter(listed))
    for sub in IMAGE_DIRS:
        if (root / sub / first).is_file():
            return root / sub
    tried = ", ".join(str(root / sub / first) for sub in IMAGE_DIRS)
    raise DataError(f"cannot find the image {first!r} listed in {root / 'train.json'}; tried {tried}")


def fgvc_source(root: Path | str, name: str | None = None) -> TaskSource:
    """An FGVC folder as a task; with ``name`` (cub, nabirds, flowers, dogs, cars) its class count is checked."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"FGVC folder {root} does not exist")
    known = None
    if name is not None:
        known = FGVC_TASKS.get(name.lower())
        if known is None:
            raise DataError(f"unknown FGVC dataset {name!r}; choose from {', '.join(FGVC_TASKS)}")
    splits = {split: read_json_split(root, split) for split in SPLIT_FILES}
    class_ids = sorted({cid for listed in splits.values() for cid in listed.values()})
    if known and len(class_ids) != known.num_classes:
        raise DataError(f"{root}: the json files use {len(class_ids)} class ids; {known.title} has {known.num_classes}")
    index = {cid: i for i, cid in enumerate(class_ids)}
    images = image_root(root, splits["train"])
    samples = {split: [(images / path, index[cid]) for path, cid in listed.items()] for split, listed in splits.items()}
    samples["trainval"] = samples["train"] + samples["val"]
    info = TaskInfo(root=root, name=name or root.resolve().name, num_classes=len(class_ids),
                    class_names=[str(c) for c in class_ids], group=None)

    def open_split(split: str, size: tuple[int, int], train: bool) -> ImageListDataset:
        where = f"{root / split}.json" if split != "trainval" else f"{root}/train.json + val.json"
        return ImageListDataset(info, samples[split], where, PixelTransform(size, train, crop=True))

    return TaskSource(info=info, kind="fgvc-json", image_source=f"FGVC json splits in {root}",
                      splits=("train", "val", "trainval", "test"), protocol=TRAINVAL_PROTOCOL, open_split=open_split)
