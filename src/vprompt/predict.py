"""Predictions of a trained prompt on images: the top-k class names and their probabilities.

Images stream through in batches (a DataLoader over paths), so memory stays flat however many
there are, and each is preprocessed exactly as evaluation does (RGB, bilinear resize to the
model's input size, [0, 1]). An unreadable file becomes a row holding its error instead of
stopping the run, unless ``strict``.
"""

from __future__ import annotations

import csv
import glob
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from vprompt.data.filelist import IMAGE_SUFFIXES, read_rgb, to_pixels, upright_rgb
from vprompt.errors import ConfigError, DataError
from vprompt.model import PromptedModel

WHERE = "the images to predict"
Row = dict[str, Any]


@dataclass
class ImageScan:
    """The files to predict, and how many a folder scan left out by their extension."""

    files: list[Path] = field(default_factory=list)
    skipped: int = 0


def scan_images(items: Iterable[str | Path]) -> ImageScan:
    """Files as given, folders searched recursively for image files, glob patterns expanded. A
    file named explicitly (or matched by a pattern) is always tried, whatever its extension; one
    that does not exist becomes an error row."""
    scan = ImageScan()
    for item in items:
        path = Path(item)
        if path.is_dir():
            for found in sorted(p for p in path.rglob("*") if p.is_file()):
                if found.suffix.lower() in IMAGE_SUFFIXES:
                    scan.files.append(found)
                else:
                    scan.skipped += 1
        elif not path.exists() and glob.has_magic(str(item)):
            scan.files += sorted(Path(p) for p in glob.glob(str(item), recursive=True) if Path(p).is_file())
        else:
            scan.files.append(path)
    return scan


class ImageFiles(Dataset):
    """Image files as ``(pixels, -1)`` items at the model's input size; unreadable: a DataError."""

    def __init__(self, files: Sequence[Path], size: tuple[int, int]) -> None:
        self.files, self.size = list(files), size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return to_pixels(read_rgb(self.files[index], WHERE), self.size), -1


class Tolerant(Dataset):
    """``(pixels, label, error)`` items from a ``(pixels, label)`` dataset: an unreadable item
    becomes a blank image with its error (``strict``: the DataError is raised)."""

    def __init__(self, base: Dataset, size: tuple[int, int], strict: bool) -> None:
        self.base, self.size, self.strict = base, size, strict

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        try:
            pixels, label = self.base[index]
        except DataError as exc:
            if self.strict:
                raise
            return torch.zeros(3, *self.size), -1, str(exc).strip().splitlines()[-1]
        return pixels, int(label), ""


def iter_predictions(model: PromptedModel, dataset: Dataset, names: Callable[[int], str], top_k: int = 5,
                     batch_size: int = 64, strict: bool = False, workers: int = 0,
                     progress: bool = False) -> Iterator[Row]:
    """One row per item of ``dataset`` (``(pixels, label)`` items), in order, batch by batch."""
    if top_k < 1 or batch_size < 1:
        raise ConfigError(f"--top-k and --batch-size must be at least 1, got {top_k} and {batch_size}")
    top_k = min(top_k, model.num_classes)
    loader = DataLoader(Tolerant(dataset, model.image_size, strict), batch_size, shuffle=False, num_workers=workers)
    device = next(model.parameters()).device
    index = 0
    for images, labels, errors in tqdm(loader, desc="predict", unit="batch", disable=not progress):
        readable = [i for i, error in enumerate(errors) if not error]
        probs = model.predict_proba(images[readable].to(device)).cpu() if readable else None
        top = probs.topk(top_k, dim=1) if probs is not None else None
        for i, error in enumerate(errors):
            row: Row = {"path": names(index + i)}
            if int(labels[i]) >= 0:
                row["label"] = model.class_names[int(labels[i])]
            if not error:
                k = readable.index(i)
                for rank, (p, c) in enumerate(zip(top.values[k].tolist(), top.indices[k].tolist()), 1):
                    row[f"class_{rank}"], row[f"prob_{rank}"] = model.class_names[c], round(p, 6)
            row["error"] = error
            yield row
        index += len(errors)


def predict(model: PromptedModel, images: Sequence[str | Path | Image.Image | torch.Tensor], top_k: int = 5,
            batch_size: int = 64) -> list[Row]:
    """Top-k predictions for images in memory or on disk, preprocessed exactly as evaluation does.

    Args:
        model: A trained model, e.g. from [`load_prompt`][vprompt.load_prompt].
        images: Paths, PIL images or (3, H, W) tensors in [0, 1]; a tensor of another size than
            ``model.image_size`` is resized bilinearly with antialiasing.
        top_k: Classes per row (at most the model's classes).
        batch_size: Images per forward pass.

    Returns:
        One row per image, in order: ``path`` (or ``<image N>``), ``class_1``/``prob_1`` to
        ``class_k``/``prob_k``, and ``error``, empty unless the path could not be read.
    """
    items = InMemory(images, model.image_size)
    return list(iter_predictions(model, items, items.name, top_k, batch_size))


class InMemory(Dataset):
    """Mixed paths, PIL images and tensors as ``(pixels, -1)`` items."""

    def __init__(self, images: Sequence[Any], size: tuple[int, int]) -> None:
        self.images, self.size = list(images), size

    def __len__(self) -> int:
        return len(self.images)

    def name(self, index: int) -> str:
        item = self.images[index]
        return str(item) if isinstance(item, (str, Path)) else f"<image {index}>"

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.images[index]
        if isinstance(item, (str, Path)):
            return to_pixels(read_rgb(Path(item), WHERE), self.size), -1
        if isinstance(item, Image.Image):
            return to_pixels(upright_rgb(item), self.size), -1
        if isinstance(item, torch.Tensor) and item.dim() == 3 and item.shape[0] == 3:
            pixels = item.float()
            if tuple(pixels.shape[1:]) != tuple(self.size):
                pixels = F.interpolate(pixels[None], size=self.size, mode="bilinear", antialias=True,
                                       align_corners=False)[0]
            return pixels, -1
        raise ConfigError(f"image {index}: expected a path, a PIL image or a (3, H, W) tensor, got {type(item).__name__}")


class RowWriter:
    """Rows to a .csv or .json file as they come (nothing held in memory), or to a text stream."""

    def __init__(self, stream: TextIO, fmt: str, top_k: int, with_label: bool) -> None:
        self.stream, self.fmt, self.top_k, self.count = stream, fmt, top_k, 0
        ranks = [f"{kind}_{rank}" for rank in range(1, top_k + 1) for kind in ("class", "prob")]
        self.fields = ["path", *(["label"] if with_label else []), *ranks, "error"]
        if fmt == "csv":
            self.csv = csv.DictWriter(stream, self.fields, restval="")
            self.csv.writeheader()
        elif fmt == "json":
            stream.write("[")

    def write(self, row: Row) -> None:
        if self.fmt == "csv":
            self.csv.writerow(row)
        elif self.fmt == "json":
            self.stream.write(("," if self.count else "") + "\n  " + json.dumps(row))
        else:
            ranked = ", ".join(f"{row[f'class_{r}']} {row[f'prob_{r}']:.3f}" for r in range(1, self.top_k + 1)
                               if f"class_{r}" in row)
            self.stream.write(f"{row['path']}: {ranked or 'error: ' + row['error']}\n")
        self.count += 1

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write("\n]\n")


def output_format(out: Path | None) -> str:
    if out is None:
        return "text"
    if out.suffix.lower() not in (".csv", ".json"):
        raise ConfigError(f"--out must end in .csv or .json, got {out.name}")
    return out.suffix.lower()[1:]
