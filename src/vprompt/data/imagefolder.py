"""Image folders: one sub-folder of images per class, the most common layout there is.

``photos/cat/*.jpg, photos/dog/*.jpg`` is a task whose class names are the sub-folder names (in
sorted order, label 0 first). Sub-folders ``train/``, ``val/`` and ``test/``, each holding the
class sub-folders, are used as the splits when present. A split that is missing is carved out of
the training images by the fixed seeded draw of [`holdout`][vprompt.data.holdout], so a folder
with no split folders is split 70 / 10 / 20 (train / val / test). The split is recorded in every
result row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vprompt.errors import DataError

from .filelist import IMAGE_SUFFIXES, TaskInfo, has_split_files
from .holdout import draw_missing, holdout_note, split_sizes
from .images import ImageListDataset, PixelTransform
from .source import TRAINVAL_PROTOCOL, TaskSource

SPLIT_FOLDERS = ("train", "val", "test")
Samples = list[tuple[Path, int]]


def image_files(folder: Path) -> list[Path]:
    """The image files in ``folder`` and below, in a fixed (sorted) order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def class_folders(folder: Path) -> list[Path]:
    """The class sub-folders of ``folder`` (hidden ones left out), by name."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def is_image_folder(path: Path) -> bool:
    """Whether ``path`` is clearly an image folder: no split files, and at least two class
    sub-folders holding images (under ``train/`` when there is one). A one-class folder is read
    only when named as ``imagefolder:PATH``, which then says why it cannot train."""
    if not path.is_dir() or any(path.glob("*.txt")) or any(path.glob("*.json")):
        return False
    root = path / "train" if (path / "train").is_dir() else path
    folders = class_folders(root)
    if any(has_split_files(folder) for folder in folders):  # a folder of task folders
        return False
    return sum(1 for folder in folders if image_files(folder)) >= 2


@dataclass(frozen=True)
class FolderLayout:
    """What an image folder holds: its classes and, per split, the listed images."""

    root: Path
    class_names: list[str]
    samples: dict[str, Samples]
    drawn: tuple[str, ...]
    """The splits drawn out of the training images (not given as folders)."""

    def describe(self) -> str:
        """Where the pixels come from and how the splits were made, for result rows."""
        return f"image folder {self.root} ({split_sizes(self.samples)}{holdout_note(self.drawn)})"


def read_layout(root: Path) -> FolderLayout:
    """The classes and splits of the image folder ``root``; a layout that cannot train is a
    DataError saying why (an empty class folder, a single class, a class unknown to training)."""
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    given = [split for split in SPLIT_FOLDERS if (root / split).is_dir()]
    if given and "train" not in given:
        raise DataError(f"{root} has {', '.join(s + '/' for s in given)} but no train/ folder of class sub-folders")
    train_root = root / "train" if given else root
    names = [folder.name for folder in class_folders(train_root)]
    if len(names) < 2:
        found = f"only {names[0]!r}" if names else "none"
        raise DataError(f"{train_root} needs a sub-folder of images per class, at least two classes; found {found}")
    samples = {split: class_samples(root / split, names) for split in given} if given else \
        {"train": class_samples(root, names)}
    return FolderLayout(root, names, samples, draw_missing(samples))


def class_samples(split_root: Path, names: list[str]) -> Samples:
    """``(image, label)`` for every class sub-folder of ``split_root``; an empty class folder, or
    one whose name training does not know, is refused."""
    samples: Samples = []
    for folder in class_folders(split_root):
        if folder.name not in names:
            raise DataError(f"{folder} is a class that {split_root.parent / 'train'} does not have "
                            f"(its classes: {', '.join(names)})")
        files = image_files(folder)
        if not files:
            raise DataError(f"class folder {folder} holds no images (files ending in "
                            f"{', '.join(sorted(IMAGE_SUFFIXES))})")
        samples += [(path, names.index(folder.name)) for path in files]
    return samples


def imagefolder_source(root: Path | str) -> TaskSource:
    """An image folder as a task (see the module docstring for its splits)."""
    layout = read_layout(Path(root))
    samples = dict(layout.samples, trainval=layout.samples["train"] + layout.samples["val"])
    info = TaskInfo(root=layout.root, name=layout.root.resolve().name, num_classes=len(layout.class_names),
                    class_names=layout.class_names, group=None)

    def open_split(split: str, size: tuple[int, int], train: bool) -> ImageListDataset:
        return ImageListDataset(info, samples[split], f"{layout.root} ({split})", PixelTransform(size, train, crop=False))

    return TaskSource(info=info, kind="imagefolder", image_source=layout.describe(),
                      splits=("train", "val", "trainval", "test"), protocol=TRAINVAL_PROTOCOL, open_split=open_split)
