"""The VTAB-1k file-list layout (as distributed with VPT): a task folder of images plus split files.

A task folder holds its images (in any subfolders) and the split files ``train800.txt``,
``val200.txt``, ``train800val200.txt`` and ``test.txt``, one ``relative/path label`` per line. The
label is the last whitespace-separated token, so paths may contain spaces. Optional extras:
``classes.txt`` (one class name per line; line index = label) and ``task.json`` (name, group, ...).

Every bad input raises ``vprompt.errors.DataError`` with one line naming the file (and the
line of the split file), because these folders are prepared by hand and must be fixable from the
message alone.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from vprompt.errors import ConfigError, DataError

from .vtab import vtab_task

SPLITS: tuple[str, ...] = ("train800", "val200", "train800val200", "test")
"""The split files of a task folder: train800, val200, their union train800val200, and test."""
SPLIT_SIZES: dict[str, int] = {"train800": 800, "val200": 200, "train800val200": 1000}
"""Images per training split in VTAB-1k (800, 200, 1000); the test split has no fixed size."""
GROUPS: tuple[str, ...] = ("natural", "specialized", "structured")
CLASSES_FILE = "classes.txt"
TASK_FILE = "task.json"
SUITE_FILE = "suite.json"

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
"""The file endings read as images when a folder is searched for them."""
# What PIL raises for a missing, truncated, corrupt or hostile image file.
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class SplitEntry(NamedTuple):
    """One line of a split file; the line number is kept so errors can point at it."""

    path: str
    label: int
    line: int


def split_file(task_dir: Path | str, split: str) -> Path:
    """The path of ``split``'s file in ``task_dir``; unknown split names are a DataError."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return Path(task_dir) / f"{split}.txt"


def parse_split(task_dir: Path | str, split: str) -> tuple[list[SplitEntry], list[str]]:
    """Parse a split file, collecting every malformed line instead of stopping at the first.

    Returns the well-formed entries and one message per malformed line (``file:line: why``), so the
    checker can list them all while [`read_split`][vprompt.data.read_split] raises the first. Blank
    lines are skipped.
    """
    path = split_file(task_dir, split)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"split file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read split file {path}: {e}") from None
    entries, errors = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            errors.append(f"{path}:{number}: expected 'relative/path label', got {line!r}")
        elif not (parts[1].isascii() and parts[1].isdigit()):
            errors.append(f"{path}:{number}: label must be a non-negative integer, got {parts[1]!r}")
        elif Path(parts[0]).is_absolute():
            errors.append(
                f"{path}:{number}: image path must be relative to the task folder, got {parts[0]!r}"
            )
        else:
            entries.append(SplitEntry(parts[0], int(parts[1]), number))
    return entries, errors


def expected_size(task_dir: Path | str, split: str) -> int | None:
    """The size ``split`` must have when the folder is one of the 19 VTAB-1k tasks (VTAB-1k's fixed
    training sizes, and that task's test size); None for any other folder, where a split of any
    non-empty size is your own data's business."""
    known = vtab_task(Path(task_dir).resolve().name)
    if known is None:
        return None
    return known.test_size if split == "test" else SPLIT_SIZES.get(split)


def size_problem(task_dir: Path | str, split: str, count: int) -> str | None:
    """Why ``count`` entries is the wrong size for ``split`` (None when it is right)."""
    path = split_file(task_dir, split)
    expected = expected_size(task_dir, split)
    if expected is None:
        return None if count > 0 else f"{path} has no entries"
    if count == expected:
        return None
    known = vtab_task(Path(task_dir).resolve().name)
    why = f" (the size of VTAB-1k's {known.folder} test split)" if split == "test" else ""
    return f"{path} has {count} entries, expected {expected}{why}"


def vtab_size_note(task_dir: Path | str, split: str, count: int) -> str | None:
    """For a folder that is not a VTAB-1k task: that ``split`` differs from VTAB-1k's size, which is
    fine for your own data and worth knowing when comparing with VTAB-1k numbers."""
    vtab_size = SPLIT_SIZES.get(split)
    if vtab_size is None or count in (0, vtab_size) or expected_size(task_dir, split) is not None:
        return None
    return (f"{split_file(task_dir, split)} has {count} entries where VTAB-1k's {split} has {vtab_size}: "
            "results are not comparable with VTAB-1k numbers")


def load_split(task_dir: Path | str, split: str, *, check_size: bool = True) -> list[SplitEntry]:
    """Entries of a split file with their line numbers; the first problem found is a DataError."""
    entries, errors = parse_split(task_dir, split)
    if errors:
        more = f" (and {len(errors) - 1} more malformed lines)" if len(errors) > 1 else ""
        raise DataError(errors[0] + more)
    problem = size_problem(task_dir, split, len(entries)) if check_size else None
    if problem:
        raise DataError(problem)
    return entries


def read_split(task_dir: Path | str, split: str, *, check_size: bool = True) -> list[tuple[str, int]]:
    """The ``(relative path, label)`` pairs of a split file.

    Args:
        task_dir: The task folder.
        split: One of [`SPLITS`][vprompt.data.SPLITS].
        check_size: Refuse an empty split and, in a folder named after a VTAB-1k task, a split
            of another size than VTAB-1k's (train800 800, val200 200, train800val200 1000, the
            task's test size), because a short split silently changes the benchmark.

    Returns:
        The pairs, in file order; a malformed line is a DataError naming it.
    """
    return [(e.path, e.label) for e in load_split(task_dir, split, check_size=check_size)]


def read_class_names(task_dir: Path | str) -> list[str] | None:
    """Class names from ``classes.txt`` (None if the file is absent); trailing blank lines ignored."""
    path = Path(task_dir) / CLASSES_FILE
    if not path.exists():
        return None
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    while names and not names[-1]:
        names.pop()
    seen: dict[str, int] = {}
    for number, name in enumerate(names, start=1):
        if not name:
            raise DataError(f"{path}:{number}: empty class name")
        if name in seen:
            raise DataError(f"{path}:{number}: class name {name!r} repeats line {seen[name]}")
        seen[name] = number
    if not names:
        raise DataError(f"{path} lists no classes")
    return names


def read_task_meta(task_dir: Path | str) -> dict:
    """The optional ``task.json`` as a dict ({} if absent); a bad file or group is a DataError."""
    path = Path(task_dir) / TASK_FILE
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path} must hold a JSON object")
    group = meta.get("group")
    if group is not None and group not in GROUPS:
        raise DataError(f"{path}: group must be one of {', '.join(GROUPS)}, got {group!r}")
    return meta


def has_split_files(path: Path) -> bool:
    """Whether ``path`` is a task folder, i.e. holds at least one split file."""
    return any(split_file(path, split).is_file() for split in SPLITS)


def task_folders(root: Path) -> list[Path]:
    """The task folders directly inside ``root`` (a folder of VTAB-layout tasks), by name."""
    return sorted(p for p in root.iterdir() if p.is_dir() and has_split_files(p))


@dataclass
class TaskInfo:
    """What a task folder declares: where it is, its classes and its VTAB group."""

    root: Path
    """The task folder."""
    name: str
    """The folder's name."""
    num_classes: int
    """Classes of the task, labels 0 to ``num_classes - 1``."""
    class_names: list[str]
    """One name per label: from ``classes.txt``, else the labels as strings."""
    group: str | None
    """``natural``, ``specialized`` or ``structured``, or None when unknown."""


def task_info(task_dir: Path | str) -> TaskInfo:
    """Read a task's classes and group.

    The number of classes is the length of ``classes.txt`` when present, else the VTAB-1k class
    count for the 19 known task folders, else the highest label in any split file plus one; a
    label beyond that count is a DataError. The group comes from ``task.json``, else from the
    VTAB-1k table.

    Args:
        task_dir: The task folder, holding at least one split file.

    Returns:
        The task's folder, name, classes and group.
    """
    root = Path(task_dir)
    if not root.is_dir():
        raise DataError(f"task folder {root} does not exist")
    present = [split for split in SPLITS if split_file(root, split).is_file()]
    if not present:
        raise DataError(f"{root} holds none of the split files {', '.join(s + '.txt' for s in SPLITS)}")
    labels = [e.label for split in present for e in load_split(root, split, check_size=False)]
    top = max(labels, default=-1) + 1
    names = read_class_names(root)
    known = vtab_task(root.resolve().name)
    if names is None:
        if top == 0:
            raise DataError(f"{root}: the split files list no images, and there is no {CLASSES_FILE}")
        names = [str(i) for i in range(known.num_classes if known else top)]
        source = f"VTAB-1k's {known.folder} has" if known else "the split files have"
    else:
        source = f"{root / CLASSES_FILE} names"
    if top > len(names):
        raise DataError(f"{source} {len(names)} classes but the split files use label {top - 1}")
    group = read_task_meta(root).get("group", known.group if known else None)
    return TaskInfo(
        root=root, name=root.resolve().name, num_classes=len(names), class_names=names, group=group
    )


def image_reason(error: object) -> str:
    """Why an image cannot be used, on one line (PIL names an in-memory image by its object repr,
    which says nothing: dropped)."""
    text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(error))
    return " ".join(text.split()) or type(error).__name__


def image_error(path: Path | str, where: str, reason: object) -> str:
    """The one-line message for an image that cannot be used; ``where`` names the list holding it."""
    return f"cannot read image {path} listed in {where}: {image_reason(reason)}"


EXIF_ORIENTATION = 0x0112


def upright_rgb(image: Image.Image) -> Image.Image:
    """``image`` turned upright by its EXIF orientation (a phone photo taken upright is stored
    sideways with a tag saying so), as RGB: the one reading of an image that training, evaluation
    and prediction share."""
    if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    return image.convert("RGB")


def read_rgb(path: Path | str, where: str, data: bytes | None = None) -> Image.Image:
    """``path`` as an upright RGB image (with ``data``: the encoded image that ``path`` names, e.g. a
    row of a Hugging Face dataset); anything PIL cannot read is a one-line DataError."""
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as image:
            return upright_rgb(image)
    except IMAGE_ERRORS as e:
        raise DataError(image_error(path, where, e)) from None


class TaskDataset(Dataset):
    """A split of one task: its classes come from the task's [`TaskInfo`][vprompt.data.TaskInfo].

    An item is made in two stages, so that a small split can be decoded once and kept in memory
    (see [`in_memory`][vprompt.data.in_memory]) while its augmentation still runs every epoch:
    [`decode`][vprompt.data.TaskDataset.decode] (read, convert, resize: the same every time) and
    [`augment`][vprompt.data.TaskDataset.augment] (random crops and flips, if any).
    """

    task: TaskInfo

    def decode(self, index: int) -> tuple[torch.Tensor, int]:
        """Item ``index`` before augmentation: uint8 pixels (3, H, W) and its label."""
        raise NotImplementedError

    def augment(self, pixels: torch.Tensor) -> torch.Tensor:
        """The per-epoch random part of an item, applied to decoded uint8 pixels (none by default)."""
        return pixels

    @property
    def random_augment(self) -> bool:
        """Whether :meth:`augment` is random, so an item differs from epoch to epoch (none by default)."""
        return False

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """Item ``index`` as (3, H, W) floats in [0, 1] and its label; unreadable: a DataError."""
        pixels, label = self.decode(index)
        return self.augment(pixels).float().div_(255), label

    @property
    def num_classes(self) -> int:
        """Classes of the task, whichever labels this split happens to use."""
        return self.task.num_classes

    @property
    def class_names(self) -> list[str]:
        """One name per label."""
        return self.task.class_names


class FileListDataset(TaskDataset):
    """One split of a task folder: ``(float image (3, H, W) in [0, 1], label)`` items.

    Images are converted to RGB and resized (bilinear, antialiased) but not normalised: the
    backbone's normalisation lives inside the model, so attacks see [0, 1] pixels. VTAB uses no
    augmentation, so ``train_augment`` is off by default.

    Args:
        task_dir: The task folder.
        split: One of [`SPLITS`][vprompt.data.SPLITS].
        image_size: Side, or (height, width), that every image is resized to.
        check_size: Enforce the VTAB-1k split sizes (see [`read_split`][vprompt.data.read_split]).
        train_augment: Flip each image horizontally with probability 1/2.

    Raises:
        DataError: A split line is malformed or a listed image is missing, found here rather
            than mid-epoch.
    """

    task: TaskInfo
    """The task the split belongs to."""
    split: str
    """The split's name."""
    samples: list[tuple[Path, int]]
    """``(image path, label)`` of every item, in split-file order."""
    train_augment: bool
    """Flip images at random."""

    def __init__(
        self,
        task_dir: Path | str,
        split: str,
        image_size: int | tuple[int, int],
        *,
        check_size: bool = True,
        train_augment: bool = False,
    ) -> None:
        self.task = task_info(task_dir)
        self.split = split
        self.height, self.width = _size_pair(image_size)
        self.train_augment = train_augment
        entries = load_split(self.task.root, split, check_size=check_size)
        self.samples = [(self.task.root / e.path, e.label) for e in entries]
        self._lines = [e.line for e in entries]
        self._split_path = split_file(self.task.root, split)
        self._check_images_exist()

    def __len__(self) -> int:
        """Images in the split."""
        return len(self.samples)

    def decode(self, index: int) -> tuple[torch.Tensor, int]:
        """Image ``index`` read, converted to RGB and resized, as uint8 (3, H, W), and its label."""
        path, label = self.samples[index]
        image = read_rgb(path, f"{self._split_path.name}:{self._lines[index]}")
        return to_uint8(image, (self.height, self.width)), label

    def augment(self, pixels: torch.Tensor) -> torch.Tensor:
        """A horizontal flip with probability 1/2 when ``train_augment`` is on."""
        if self.train_augment and torch.rand(()) < 0.5:
            return pixels.flip(-1)
        return pixels

    @property
    def random_augment(self) -> bool:
        """Whether items are flipped at random (``train_augment``)."""
        return self.train_augment

    def _check_images_exist(self) -> None:
        """Fail at construction, not mid-epoch, when listed images are missing."""
        missing = [i for i, (path, _) in enumerate(self.samples) if not path.is_file()]
        if missing:
            first = missing[0]
            more = f" (and {len(missing) - 1} more listed images are missing)" if len(missing) > 1 else ""
            path = self.samples[first][0]
            raise DataError(image_error(path, f"{self._split_path.name}:{self._lines[first]}", "no such file" + more))


def to_uint8(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """An RGB image as a (3, H, W) uint8 tensor at ``size`` (bilinear, antialiased resize)."""
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()


def to_pixels(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """An RGB image as a (3, H, W) float tensor in [0, 1] at ``size``: the one conversion that
    training, evaluation and prediction share."""
    return to_uint8(image, size).float().div_(255)


def _size_pair(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` from an int or a pair; non-positive sizes are a ConfigError."""
    pair = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(pair) != 2 or not all(isinstance(s, int) and s > 0 for s in pair):
        raise ConfigError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return pair
