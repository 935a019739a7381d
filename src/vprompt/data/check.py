"""``vprompt data check``: say precisely what is wrong with a prepared VTAB-1k-layout folder or an
image folder.

A run that silently trains on 799 images, a relabelled duplicate or a truncated JPEG gives numbers
that cannot be compared with anyone's; this checker finds those before training does. Structural
faults are *problems* (``ok`` is False); facts that are legitimate in real VTAB-1k data but limit
what a model can learn, such as a class without training examples (SUN397 has some), are
*warnings*.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

from PIL import Image
from tqdm.auto import tqdm

from vprompt.errors import DataError

from .filelist import (
    CLASSES_FILE,
    IMAGE_SUFFIXES,
    IMAGE_ERRORS,
    SPLITS,
    SUITE_FILE,
    SplitEntry,
    has_split_files,
    image_reason,
    parse_split,
    read_class_names,
    read_task_meta,
    size_problem,
    split_file,
    task_folders,
    vtab_size_note,
)
from .imagefolder import is_image_folder, read_layout
from .registry import open_task
from .vtab import vtab_task

EXAMPLES = 3  # how many offending items a message names

T = TypeVar("T")


@dataclass
class CheckReport:
    """What [`check_dataset`][vprompt.data.check_dataset] found: problems (which make ``ok``
    False), warnings, a summary."""

    path: Path
    """The folder checked."""
    problems: list[str]
    """Structural faults, one line each, naming the file and the offending items."""
    summary: list[str]
    """One line per task: its classes, split sizes and group."""
    warnings: list[str] = field(default_factory=list)
    """Facts that are legitimate in VTAB-1k but limit what a model can learn."""

    @property
    def ok(self) -> bool:
        """Whether the folder can be trained on: no problems (warnings allowed)."""
        return not self.problems

    def lines(self) -> list[str]:
        """Human-readable report: one summary line per task, then warnings, problems, verdict."""
        verdict = "OK" if self.ok else f"FAILED: {len(self.problems)} problem(s)"
        return [
            f"checked {self.path}",
            *(f"  {line}" for line in self.summary),
            *(f"warning: {line}" for line in self.warnings),
            *(f"problem: {line}" for line in self.problems),
            verdict,
        ]


def check_dataset(path: Path | str, *, progress: bool = False) -> CheckReport:
    """Check one task folder, or every task folder directly inside a suite/parent folder.

    Every image is opened and fully decoded, so a truncated file is found here rather than
    mid-epoch.

    Args:
        path: A task folder, an image folder, a folder of task folders, or ``hf:…`` (a Hugging
            Face dataset, see ``vprompt.data.huggingface``).
        progress: Show a bar per task while the images are decoded.

    Returns:
        Every problem and warning found, not only the first.
    """
    if str(path).startswith("hf:"):
        return check_hf_dataset(str(path), progress)
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    if is_image_folder(root):
        return check_image_folder(root, progress)
    if has_split_files(root):
        task_dirs = [root]
    else:
        task_dirs = task_folders(root)
        if not task_dirs:
            splits = ", ".join(f"{s}.txt" for s in SPLITS)
            raise DataError(f"{root} is neither a task folder (no {splits}) nor a folder of task folders")
    report = CheckReport(root, problems=_suite_problems(root), summary=[])
    for task_dir in task_dirs:
        _check_task(task_dir, report, progress)
    return report


def check_image_folder(root: Path, progress: bool = False) -> CheckReport:
    """An image folder's report: a layout that cannot train (an empty class folder, a single
    class) is its one problem; otherwise files that are not images (warnings), images that occur
    in two splits (compared by content) and images that cannot be decoded."""
    report = CheckReport(root, problems=[], summary=[])
    try:
        layout = read_layout(root)
    except DataError as e:
        report.problems.append(str(e))
        return report
    strays = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES
              and not p.name.startswith(".")]
    if strays:
        report.warnings.append(f"{root}: {len(strays)} files are not images and are left out: "
                               f"{_examples([str(p.relative_to(root)) for p in strays])}")
    repeats = SplitRepeats()
    for split in ("train", "val", "test"):
        for image, _ in layout.samples[split]:
            repeats.add(image.read_bytes(), str(image.relative_to(root)), split)
    images = [image for split in ("train", "val", "test") for image, _ in layout.samples[split]]
    with ThreadPoolExecutor() as pool:
        reasons = tqdm(pool.map(_decode_error, images), total=len(images), disable=not progress, unit="img",
                       desc=root.name)
        unreadable = [f"{image.relative_to(root)}: {reason}" for image, reason in zip(images, reasons) if reason]
    report.problems += repeats.problems(root) + _unreadable_problems(root, unreadable, len(images))
    report.summary.append(f"{root.resolve().name}: {len(layout.class_names)} classes "
                          f"({_examples(layout.class_names)}); {layout.describe()}")
    return report


def check_hf_dataset(spec: str, progress: bool = False) -> CheckReport:
    """A Hugging Face dataset's report: a dataset that cannot be read as a task (no image or label
    column, a label outside the classes, no train split) is its one problem; otherwise images that
    occur in two splits (compared by content) and images that cannot be decoded."""
    report = CheckReport(Path(spec), problems=[], summary=[])
    try:
        source = open_task(spec)
    except DataError as e:
        report.problems.append(str(e))
        return report
    splits = {split: source.dataset(split, 1) for split in ("train", "val", "test")}
    repeats, unreadable = SplitRepeats(), []
    total = sum(len(dataset) for dataset in splits.values())
    with tqdm(total=total, disable=not progress, unit="img", desc=source.info.name) as bar:
        for split, dataset in splits.items():
            for index in range(len(dataset)):
                bar.update()
                try:
                    name, data = dataset.encoded(index)
                except DataError as e:  # an Image column entry naming a file that is gone
                    unreadable.append(str(e))
                    continue
                repeats.add(data, name, split)
                reason = _decode_error(io.BytesIO(data))
                if reason:
                    unreadable.append(f"{name} ({split}): {reason}")
    report.problems += repeats.problems(spec) + _unreadable_problems(spec, unreadable, total)
    report.summary.append(f"{source.info.name}: {source.info.num_classes} classes "
                          f"({_examples(source.info.class_names)}); {source.image_source}")
    return report


class SplitRepeats:
    """Images that occur in two splits, compared by content (the same bytes under any name)."""

    def __init__(self) -> None:
        self.first: dict[str, tuple[str, str]] = {}
        self.found: list[str] = []

    def add(self, data: bytes, name: str, split: str) -> None:
        """Image ``name`` of ``split``, encoded as ``data``."""
        earlier, earlier_split = self.first.setdefault(hashlib.sha1(data).hexdigest(), (name, split))
        if earlier_split != split:
            self.found.append(f"{name} ({split}) = {earlier} ({earlier_split})")

    def problems(self, where: object) -> list[str]:
        """The problem line, if any image repeats."""
        return [f"{where}: {len(self.found)} images occur in two splits: {_examples(self.found)}"] if self.found else []


def _unreadable_problems(where: object, unreadable: list[str], total: int) -> list[str]:
    """The problem line, if any of ``total`` images cannot be read."""
    return [f"{where}: {len(unreadable)} of {total} images cannot be read: {_examples(unreadable)}"] if unreadable \
        else []


def _suite_problems(root: Path) -> list[str]:
    """Tasks that ``suite.json`` lists but that are missing as task folders."""
    path = root / SUITE_FILE
    if not path.exists():
        return []
    try:
        names = [task["name"] for task in json.loads(path.read_text(encoding="utf-8"))["tasks"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return [f"cannot read the task list in {path}: {e!r}"]
    missing = [n for n in names if not (isinstance(n, str) and has_split_files(root / n))]
    return (
        [f"{path} lists {len(missing)} task(s) with no task folder: {_examples(missing)}"] if missing else []
    )


def _check_task(task_dir: Path, report: CheckReport, progress: bool) -> None:
    """Append one task's problems, warnings and summary line to ``report``."""
    problems = report.problems
    splits: dict[str, list[SplitEntry]] = {}
    present = [split for split in SPLITS if split_file(task_dir, split).is_file()]
    if len(present) < len(SPLITS):
        missing = ", ".join(f"{split}.txt" for split in SPLITS if split not in present)
        problems.append(f"{task_dir}: missing split file(s) {missing}")
    for split in present:
        try:
            entries, malformed = parse_split(task_dir, split)
        except DataError as e:
            problems.append(str(e))
            continue
        problems.extend(malformed)
        problems.extend(
            filter(None, [size_problem(task_dir, split, len(entries)), _duplicates(task_dir, split, entries)])
        )
        splits[split] = entries
    problems.extend(_union_problems(task_dir, splits))
    names = _try(read_class_names, task_dir, problems)
    meta = _try(read_task_meta, task_dir, problems) or {}
    known = vtab_task(task_dir.resolve().name)
    group = meta.get("group", known.group if known else "unknown")
    num_classes = _label_problems(task_dir, splits, names, report)
    problems.extend(_image_problems(task_dir, splits, progress))
    report.warnings.extend(filter(None, (vtab_size_note(task_dir, split, len(entries)) for split, entries in splits.items())))
    sizes = ", ".join(f"{split} {len(entries)}" for split, entries in splits.items())
    report.summary.append(
        f"{task_dir.resolve().name}: {num_classes} classes; {sizes}; group {group}"
    )


def _try(read: Callable[[Path], T], task_dir: Path, problems: list[str]) -> T | None:
    """``read(task_dir)``, recording a DataError as a problem (and returning None) instead of raising."""
    try:
        return read(task_dir)
    except DataError as e:
        problems.append(str(e))
        return None


def _examples(items: list, limit: int = EXAMPLES) -> str:
    """The first few items, and how many more there are."""
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _where(split: str, entry: SplitEntry) -> str:
    """Where an entry comes from, for messages: ``path (split.txt:line)``."""
    return f"{entry.path} ({split}.txt:{entry.line})"


def _duplicates(task_dir: Path, split: str, entries: list[SplitEntry]) -> str | None:
    """Paths a split lists more than once, with the lines that repeat them."""
    lines = defaultdict(list)
    for entry in entries:
        lines[entry.path].append(entry.line)
    repeated = [f"{path} (lines {', '.join(map(str, ls))})" for path, ls in lines.items() if len(ls) > 1]
    if not repeated:
        return None
    return f"{task_dir / split}.txt lists {len(repeated)} image(s) more than once: {_examples(repeated)}"


def _union_problems(task_dir: Path, splits: dict[str, list[SplitEntry]]) -> list[str]:
    """train800val200 must be exactly train800 + val200, those two disjoint, and test apart from all."""
    pairs = {split: {(e.path, e.label) for e in entries} for split, entries in splits.items()}
    problems = []
    if {"train800", "val200"} <= pairs.keys():
        shared = sorted(p for p, _ in pairs["train800"] & pairs["val200"])
        if shared:
            problems.append(
                f"{task_dir}: train800.txt and val200.txt share {len(shared)} entries: {_examples(shared)}"
            )
        if "train800val200" in pairs:
            union, combined = pairs["train800"] | pairs["val200"], pairs["train800val200"]
            extra = [f"{path} {label}" for path, label in sorted(combined - union)]
            absent = [f"{path} {label}" for path, label in sorted(union - combined)]
            if extra or absent:
                problems.append(
                    f"{task_dir}: train800val200.txt differs from train800.txt + val200.txt in "
                    f"{len(extra) + len(absent)} entries: {len(extra)} only in train800val200.txt "
                    f"({_examples(extra)}), {len(absent)} missing from it ({_examples(absent)})"
                )
    if "test" in pairs:
        train = {p for split in ("train800", "val200", "train800val200") for p, _ in pairs.get(split, ())}
        leaked = sorted(train & {p for p, _ in pairs["test"]})
        if leaked:
            problems.append(
                f"{task_dir}: {len(leaked)} test image(s) are also training images: {_examples(leaked)}"
            )
    return problems


def _label_problems(
    task_dir: Path, splits: dict[str, list[SplitEntry]], names: list[str] | None, report: CheckReport
) -> int:
    """Labels beyond classes.txt (problem) and classes without training examples (warning).

    Returns the number of classes: ``classes.txt``'s length, else the highest label plus one.
    """
    labels = [e.label for entries in splits.values() for e in entries]
    num_classes = len(names) if names is not None else max(labels, default=-1) + 1
    known = vtab_task(task_dir.resolve().name)
    if known and num_classes != known.num_classes:
        where = CLASSES_FILE if names is not None else "the split files' labels"
        report.problems.append(f"{task_dir}: {where} give {num_classes} classes; VTAB-1k's {known.folder} "
                               f"has {known.num_classes}")
    if names is not None:
        beyond = [_where(s, e) for s, entries in splits.items() for e in entries if e.label >= num_classes]
        if beyond:
            report.problems.append(
                f"{task_dir}: {len(beyond)} entries have labels beyond the {num_classes} classes "
                f"of {CLASSES_FILE}: {_examples(beyond)}"
            )
    training = "train800val200" if "train800val200" in splits else "train800"
    if training not in splits:
        return num_classes
    counts = Counter(e.label for e in splits[training])
    untrained = [c for c in range(num_classes) if counts[c] == 0]
    in_test = {e.label for e in splits.get("test", ())} & set(untrained)
    if untrained:
        label = (lambda c: f"{c} ({names[c]})") if names is not None else str
        report.warnings.append(
            f"{task_dir}: {len(untrained)} of {num_classes} classes have no example in {training}.txt "
            f"({len(in_test)} of them occur in test.txt): {_examples([label(c) for c in untrained])}"
        )
    return num_classes


def _image_problems(task_dir: Path, splits: dict[str, list[SplitEntry]], progress: bool) -> list[str]:
    """Listed images that are missing or that PIL cannot fully decode (count and first few)."""
    first_seen: dict[str, str] = {}
    for split, entries in splits.items():
        for entry in entries:
            first_seen.setdefault(entry.path, _where(split, entry))
    paths = list(first_seen)
    missing = [first_seen[p] for p in paths if not (task_dir / p).is_file()]
    present = [p for p in paths if (task_dir / p).is_file()]
    with ThreadPoolExecutor() as pool:  # PIL releases the GIL while decoding
        reasons = pool.map(_decode_error, (task_dir / p for p in present))
        bar = tqdm(reasons, total=len(present), disable=not progress, unit="img", desc=task_dir.name)
        unreadable = [f"{first_seen[p]}: {reason}" for p, reason in zip(present, bar, strict=True) if reason]
    problems = []
    if missing:
        problems.append(
            f"{task_dir}: {len(missing)} of {len(paths)} listed images are missing: {_examples(missing)}"
        )
    if unreadable:
        problems.append(
            f"{task_dir}: {len(unreadable)} of {len(paths)} listed images cannot be read: "
            f"{_examples(unreadable)}"
        )
    return problems


def _decode_error(path: Path | BinaryIO) -> str | None:
    """Why PIL cannot open and fully decode ``path`` (a file, or encoded bytes; None if it can)."""
    try:
        with Image.open(path) as image:
            image.load()
    except IMAGE_ERRORS as e:
        return image_reason(e)
    return None
