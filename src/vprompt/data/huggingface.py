"""Hugging Face ``datasets`` datasets as tasks, read offline.

``--data hf:WHERE[:CONFIG][,image=COLUMN][,label=COLUMN]``, where WHERE is

- a folder written by ``save_to_disk`` (a ``DatasetDict``, or one ``Dataset`` read as ``train``);
- a parquet or arrow file (read as ``train``), or a folder of them whose file names carry the split
  as on the Hub (``train-00000-of-00001.parquet``, ``data/test.parquet``);
- or a dataset name, ``ORG/NAME``, already in the local Hugging Face cache.

Nothing reaches the network unless ``download`` is set (``--download``). The image column is the
dataset's one ``Image`` feature and the label column its one ``ClassLabel`` (else an integer
column named ``label`` or ``labels``); the class names come from the ``ClassLabel``. Where that is
ambiguous, name the columns. Splits: ``train``; ``validation`` (or ``val``, ``valid``, ``dev``);
``test``. A missing one is drawn from ``train`` by the seeded draw of
[`holdout`][vprompt.data.holdout], recorded in every result row.

Images are read as VTAB-1k file lists are: RGB, resized bilinearly, no augmentation, so the same
images in the same order train to the same accuracy whichever format holds them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from vprompt.errors import ConfigError, DataError

from .filelist import TaskDataset, TaskInfo, read_rgb, to_uint8
from .holdout import draw_missing, holdout_note, split_sizes
from .source import TRAINVAL_PROTOCOL, TaskSource

INSTALL = "pip install 'vprompt[hf]'"
SPLIT_NAMES = {"train": ("train",), "val": ("validation", "val", "valid", "dev"), "test": ("test",)}
"""Our split ← the dataset's split names it may come from, first match wins."""
LABEL_NAMES = ("label", "labels")
"""Column names taken as the label (which must hold integers) when there is no ClassLabel column."""
FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow"}
SAVED_MARKERS = ("dataset_dict.json", "state.json")
"""Files that make a folder one written by ``save_to_disk``."""
SPEC_FORM = "hf:PATH_OR_NAME[:CONFIG][,image=COLUMN][,label=COLUMN]"



class Row(NamedTuple):
    """A row of the loaded dataset: its split there and its index (``test#12`` in predictions)."""

    split: str
    index: int

    def __str__(self) -> str:
        return f"{self.split}#{self.index}"


@dataclass(frozen=True)
class HFSpec:
    """What ``--data hf:…`` names: where the dataset is, its config, and the columns if given."""

    where: str
    config: str | None = None
    image: str | None = None
    label: str | None = None

    @classmethod
    def parse(cls, rest: str) -> HFSpec:
        """``rest`` is the spec after ``hf:``; trailing ``,image=…`` / ``,label=…`` name columns."""
        parts = rest.split(",")
        columns: dict[str, str] = {}
        while len(parts) > 1 and parts[-1].partition("=")[0] in ("image", "label") and "=" in parts[-1]:
            key, _, value = parts.pop().partition("=")
            columns.setdefault(key, value)  # the last one given wins (--image-column after a recorded one)
        where, _, config = ",".join(parts).partition(":")
        if not where or any(not value for value in columns.values()):
            raise DataError(f"expected {SPEC_FORM}, got 'hf:{rest}'")
        return cls(where, config or None, columns.get("image"), columns.get("label"))


def with_columns(data: str, image: str | None, label: str | None) -> str:
    """``data`` with the columns named by ``--image-column`` / ``--label-column`` folded in, so the
    spec that is recorded says everything needed to read the data again."""
    if image is None and label is None:
        return data
    if not data.startswith("hf:"):
        raise ConfigError(f"--image-column and --label-column apply to Hugging Face datasets (--data hf:…), "
                          f"not to {data!r}")
    named = [f"image={image}"] * (image is not None) + [f"label={label}"] * (label is not None)
    return ",".join([data, *named])


def import_datasets() -> Any:
    """The ``datasets`` module, or one line saying how to install it."""
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"--data hf:… needs the Hugging Face datasets package: {INSTALL}") from None
    return datasets


@contextmanager
def quiet_read(download: bool) -> Iterator[None]:
    """Offline unless ``download``, and without datasets' own log lines (a failure is reported
    once, as a DataError). datasets reads HF_HUB_OFFLINE once, at import, so its flag (and
    huggingface_hub's) is set for this read only."""
    import datasets
    import huggingface_hub.constants as hub

    saved = datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE, datasets.logging.get_verbosity()
    if not download:
        datasets.config.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE = True
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE = saved[:2]
        datasets.logging.set_verbosity(saved[2])


def root_cause(error: BaseException) -> str:
    """The innermost message of a chained error, on one line (datasets wraps the reader's)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return " ".join(f"{type(error).__name__}: {error}".split())


def load_splits(spec: HFSpec, download: bool) -> dict[str, Any]:
    """The dataset's splits by their own names; anything datasets cannot read is one DataError."""
    datasets = import_datasets()
    path = Path(spec.where).expanduser()
    saved = path.is_dir() and any((path / marker).is_file() for marker in SAVED_MARKERS)
    if spec.config and (saved or path.is_file()):
        raise DataError(f"{path} has no configs to choose from (drop ':{spec.config}')")
    if path.is_file() and path.suffix.lower() not in FILE_BUILDERS:
        raise DataError(f"{path} is not a parquet or arrow file, nor a folder of them or one written by save_to_disk")
    try:
        with quiet_read(download):
            if saved:
                loaded = datasets.load_from_disk(str(path))
            elif path.is_file():
                loaded = datasets.load_dataset(FILE_BUILDERS[path.suffix.lower()], data_files={"train": str(path)})
            else:
                loaded = datasets.load_dataset(str(path) if path.exists() else spec.where, spec.config)
    except Exception as e:  # noqa: BLE001  (datasets raises many types: unreadable files, unknown names, no network)
        if not path.exists() and not download:
            raise DataError(f"hf:{spec.where} is not a local path, and reading it from the local Hugging Face cache "
                            f"failed (pass --download to fetch it): {root_cause(e)}") from None
        raise DataError(f"cannot read Hugging Face dataset {spec.where}: {root_cause(e)}") from None
    return {"train": loaded} if isinstance(loaded, datasets.Dataset) else dict(loaded)


def our_splits(loaded: dict[str, Any], where: str) -> dict[str, str]:
    """Our split → the dataset's split it is read from (train, and val / test where present)."""
    mapped = {ours: next(name for name in names if name in loaded)
              for ours, names in SPLIT_NAMES.items() if any(name in loaded for name in names)}
    if "train" not in mapped:
        raise DataError(f"{where} has no train split (its splits: {', '.join(loaded)})")
    return mapped


def find_columns(features: Any, spec: HFSpec) -> tuple[str, str]:
    """The image and label columns: named in ``spec``, else found from the features."""
    datasets = import_datasets()
    listing = f"(its columns: {', '.join(features)})"
    for column in (spec.image, spec.label):
        if column is not None and column not in features:
            raise DataError(f"{spec.where} has no column {column!r} {listing}")

    def is_label(feature: Any) -> bool:
        return isinstance(feature, datasets.ClassLabel) or (
            isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")))

    image = spec.image or only(
        [c for c, f in features.items() if isinstance(f, datasets.Image)], "image", spec.where, listing)
    if not isinstance(features[image], datasets.Image):
        raise DataError(f"column {image!r} of {spec.where} holds {features[image]}, not images "
                        "(a datasets Image feature)")
    label = spec.label or only(
        [c for c, f in features.items() if isinstance(f, datasets.ClassLabel)]
        or [c for c in LABEL_NAMES if c in features], "label", spec.where, listing)
    if not is_label(features[label]):
        raise DataError(f"column {label!r} of {spec.where} holds {features[label]}, not a class label or an "
                        f"integer (Dataset.class_encode_column({label!r}) turns names into one)")
    return image, label


def only(found: list[str], kind: str, where: str, listing: str) -> str:
    """The one column of ``kind`` found; none or several is a DataError naming the flag to use."""
    if len(found) == 1:
        return found[0]
    which = f"several {kind} columns ({', '.join(found)})" if found else f"no {kind} column {listing}"
    raise DataError(f"{where} has {which}: name one with --{kind}-column (or ,{kind}=COLUMN after the spec)")


def class_names(feature: Any, labels: dict[str, list[int]], where: str) -> list[str]:
    """The ClassLabel's names, else "0" … "K-1" for the highest integer label K-1; a label outside
    the classes (a missing one, -1, in a split that has labels otherwise) is a DataError."""
    names = list(getattr(feature, "names", None) or [str(i) for i in range(1 + max(max(v, default=0)
                                                                                 for v in labels.values()))])
    for split, values in labels.items():
        bad = [v for v in values if not 0 <= v < len(names)]
        if bad:
            raise DataError(f"split {split!r} of {where} has label {bad[0]}, outside 0..{len(names) - 1} "
                            "(a split is either labelled or not)")
    if len(names) < 2:
        raise DataError(f"{where} has {len(names)} class; a task needs at least two")
    return names


def read_bytes(path: Path, where: str) -> bytes:
    """The file an Image column refers to; a missing one is a DataError naming it."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read image {path} listed in {where}: {e.strerror or e}") from None


class HFImages(TaskDataset):
    """Rows of a Hugging Face dataset as ``(uint8 image, label)``, read like a VTAB-1k file list."""

    def __init__(self, task: TaskInfo, tables: dict[str, Any], samples: list[tuple[Row, int]], image: str,
                 where: str, size: tuple[int, int]) -> None:
        self.task, self.tables, self.samples = task, tables, samples
        self.image, self.where, self.size = image, where, size

    def __len__(self) -> int:
        return len(self.samples)

    def encoded(self, index: int) -> tuple[str, bytes]:
        """Item ``index``'s name (its file name, else ``split#row``) and encoded image bytes."""
        row = self.samples[index][0]
        entry = self.tables[row.split][row.index][self.image]
        name = entry.get("path") or str(row)
        data = entry.get("bytes")
        if data is None:  # an Image column that refers to files instead of holding them
            data = read_bytes(Path(name), f"{self.where} ({row.split})")
        return name, data

    def decode(self, index: int) -> tuple[torch.Tensor, int]:
        name, data = self.encoded(index)
        pixels = read_rgb(name, f"{self.where} ({self.samples[index][0].split})", data)
        return to_uint8(pixels, self.size), self.samples[index][1]


def hf_source(rest: str, download: bool = False) -> TaskSource:
    """A Hugging Face dataset as a task (see the module docstring)."""
    spec = HFSpec.parse(rest)
    datasets = import_datasets()
    loaded = load_splits(spec, download)
    mapped = our_splits(loaded, spec.where)
    features = loaded[mapped["train"]].features
    image, label = find_columns(features, spec)
    for theirs in mapped.values():
        missing = [c for c in (image, label) if c not in loaded[theirs].features]
        if missing:
            raise DataError(f"split {theirs!r} of {spec.where} has no column {missing[0]!r}")
    tables = {theirs: loaded[theirs].select_columns([image, label]).cast_column(image, datasets.Image(decode=False))
              for theirs in mapped.values()}
    labels = {theirs: [-1 if v is None else int(v) for v in table[label]] for theirs, table in tables.items()}
    unlabelled = [ours for ours, theirs in mapped.items() if ours != "train" and all(v < 0 for v in labels[theirs])]
    for ours in unlabelled:  # e.g. a benchmark's hidden test labels (-1): drawn from train instead
        labels.pop(mapped.pop(ours))
    names = class_names(features[label], labels, spec.where)
    samples: dict[str, list[tuple[Row, int]]] = {
        ours: [(Row(theirs, row), value) for row, value in enumerate(labels[theirs])] for ours, theirs in mapped.items()}
    drawn = draw_missing(samples)
    samples["trainval"] = samples["train"] + samples["val"]
    info = TaskInfo(root=Path(spec.where), name=Path(spec.where).name + (f"-{spec.config}" if spec.config else ""),
                    num_classes=len(names), class_names=names, group=None)
    hidden = f"; {' and '.join(unlabelled)} unlabelled in the dataset" if unlabelled else ""
    described = (f"Hugging Face dataset hf:{rest} (image column {image!r}, label column {label!r}; "
                 f"{split_sizes(samples)}{hidden}{holdout_note(drawn)})")

    def open_split(split: str, size: tuple[int, int], train: bool) -> HFImages:
        return HFImages(info, tables, samples[split], image, f"hf:{spec.where}", size)

    return TaskSource(info=info, kind="huggingface", image_source=described,
                      splits=("train", "val", "trainval", "test"), protocol=TRAINVAL_PROTOCOL, open_split=open_split)
