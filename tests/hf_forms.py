"""A file-list task written as a Hugging Face dataset in each on-disk form vprompt reads: a
``save_to_disk`` folder, a folder of parquet files, a folder of arrow files, and a named dataset in
the local Hugging Face cache (as a download by ``load_dataset`` leaves it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
from datasets.packaged_modules.parquet.parquet import Parquet

from vprompt.data.filelist import read_split, task_info

SPLITS = {"train": "train800", "validation": "val200", "test": "test"}
"""Hugging Face split ← the file-list split it holds (train800val200 is their concatenation)."""
CACHED_NAME = "vprompt-tests/digits"


def as_dataset_dict(task: Path, splits: dict[str, str] = SPLITS) -> datasets.DatasetDict:
    """The task's images (their encoded bytes, unchanged) and labels, split by split, with the
    class names as a ClassLabel."""
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=task_info(task).class_names)})
    parts = {}
    for ours, theirs in splits.items():
        rows = read_split(task, theirs, check_size=False)
        parts[ours] = datasets.Dataset.from_dict(
            {"image": [{"bytes": (task / path).read_bytes(), "path": path} for path, _ in rows],
             "label": [label for _, label in rows]}, features=features)
    return datasets.DatasetDict(parts)


def write_forms(task: Path, out: Path, cache: Path) -> dict[str, str]:
    """The task in every form, as ``--data`` specs by form name; the cached one goes into ``cache``."""
    dataset = as_dataset_dict(task)
    dataset.save_to_disk(str(out / "saved"))
    for split, part in dataset.items():
        (out / "parquet" / "data").mkdir(parents=True, exist_ok=True)
        part.to_parquet(str(out / "parquet" / "data" / f"{split}-00000-of-00001.parquet"))
        (out / "arrow").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "saved" / split / "data-00000-of-00001.arrow", out / "arrow" / f"{split}.arrow")
    cache_as_downloaded(out / "parquet" / "data", cache)
    return {"save_to_disk": f"hf:{out / 'saved'}", "parquet": f"hf:{out / 'parquet'}", "arrow": f"hf:{out / 'arrow'}",
            "cache": f"hf:{CACHED_NAME}"}


def cache_as_downloaded(parquet: Path, cache: Path) -> None:
    """Prepare the parquet files into ``cache`` where ``load_dataset(CACHED_NAME)`` leaves a
    download (``ORG___NAME/default/0.0.0/HASH/NAME-SPLIT.arrow``), without a hub to download from."""
    namespace, name = CACHED_NAME.split("/")
    builder = Parquet(cache_dir=str(cache), dataset_name=f"{namespace}___{name}", config_id="default",
                      hash="0" * 16, data_files={split: [str(parquet / f"{split}-00000-of-00001.parquet")]
                                                 for split in SPLITS})
    builder.download_and_prepare()
    for arrow in (cache / f"{namespace}___{name}").rglob(f"{namespace}___{name}-*.arrow"):
        arrow.rename(arrow.with_name(arrow.name.replace(f"{namespace}___{name}-", f"{name}-")))
