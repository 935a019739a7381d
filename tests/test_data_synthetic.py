"""The offline synthetic suite: VTAB-1k layout, sizes, classes, determinism and overwrite rules."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vprompt.data import TASKS, FileListDataset, check_dataset, read_split, task_info, write_synthetic_suite
from vprompt.errors import ConfigError, DataError

TEST_SIZE = 40


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, for byte-for-byte comparisons."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_synthetic_suite(out, seed=0, test_size=TEST_SIZE, progress=False)
    return out


def test_suite_json_lists_every_task_with_its_group(suite: Path) -> None:
    listed = json.loads((suite / "suite.json").read_text())["tasks"]
    assert listed == [{"name": name, "group": task.group} for name, task in TASKS.items()]
    assert sorted(p.name for p in suite.iterdir() if p.is_dir()) == sorted(TASKS)


def test_tasks_cover_the_three_vtab_groups() -> None:
    groups = Counter(task.group for task in TASKS.values())
    assert groups["natural"] >= 2 and groups["specialized"] >= 1 and groups["structured"] >= 2
    assert TASKS["digits"].group == "natural" and len(TASKS) >= 6


@pytest.mark.parametrize("name", list(TASKS))
def test_task_has_the_vtab1k_layout(suite: Path, name: str) -> None:
    task = suite / name
    splits = {split: read_split(task, split) for split in ("train800", "val200", "train800val200", "test")}
    assert [len(splits[s]) for s in splits] == [800, 200, 1000, TEST_SIZE]
    assert splits["train800val200"] == splits["train800"] + splits["val200"]
    paths = [p for entries in splits.values() for p, _ in entries]
    assert all(p.startswith("images/") and p.endswith(".jpg") for p in paths)
    assert len(set(paths)) == 1000 + TEST_SIZE
    assert sorted(str(p.relative_to(task)) for p in (task / "images").rglob("*.jpg")) == sorted(set(paths))
    with Image.open(task / splits["test"][0][0]) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (32, 32))
    meta = json.loads((task / "task.json").read_text())
    assert (meta["name"], meta["group"], meta["seed"], meta["image_size"]) == (name, TASKS[name].group, 0, 32)
    assert meta["description"]


@pytest.mark.parametrize("name", list(TASKS))
def test_task_classes_are_balanced_and_all_in_train800(suite: Path, name: str) -> None:
    info = task_info(suite / name)
    assert 4 <= info.num_classes <= 16
    assert info.class_names == list(TASKS[name].class_names)
    counts = Counter(label for _, label in read_split(suite / name, "train800"))
    assert sorted(counts) == list(range(info.num_classes))
    assert max(counts.values()) - min(counts.values()) <= 1


def test_fresh_suite_passes_the_checker(suite: Path) -> None:
    report = check_dataset(suite)
    assert report.ok, report.lines()
    assert not report.warnings and len(report.summary) == len(TASKS)


def test_dataset_reads_a_synthetic_task(suite: Path) -> None:
    data = FileListDataset(suite / "objects", "train800", 24)
    image, label = data[0]
    assert (
        len(data) == 800
        and image.shape == (3, 24, 24)
        and label == read_split(suite / "objects", "train800")[0][1]
    )


def test_same_seed_writes_byte_identical_files_whatever_else_is_written(suite: Path, tmp_path: Path) -> None:
    write_synthetic_suite(tmp_path, seed=0, test_size=TEST_SIZE, tasks=["digits"], progress=False)
    assert tree_bytes(tmp_path / "digits") == tree_bytes(suite / "digits")


def first_images(name: str, seed: int, count: int = 12) -> list[bytes]:
    """The first training images a task draws from a generator seeded with ``seed``."""
    drawn = TASKS[name].draw(np.random.default_rng(seed), {"train800": count, "val200": 0, "test": 1}, 32)
    return [image.tobytes() for _, image, _ in itertools.islice(drawn, count)]


@pytest.mark.parametrize("name", list(TASKS))
def test_every_generator_depends_on_its_seed_only(name: str) -> None:
    assert first_images(name, 0) == first_images(name, 0)
    assert sum(a != b for a, b in zip(first_images(name, 0), first_images(name, 1), strict=True)) >= 10


def test_seed_reaches_the_files(suite: Path, tmp_path: Path) -> None:
    write_synthetic_suite(tmp_path, seed=1, test_size=5, tasks=["textures"], progress=False)
    reseeded, original = tree_bytes(tmp_path / "textures"), tree_bytes(suite / "textures")
    train = [p for p in reseeded if p.startswith(("images/train800/", "images/val200/"))]
    assert len(train) == 1000 and sum(reseeded[p] != original[p] for p in train) > 990


def test_digits_test_images_are_not_training_images(suite: Path) -> None:
    def digests(split: str) -> set[str]:
        return {
            hashlib.sha1((suite / "digits" / p).read_bytes()).hexdigest()
            for p, _ in read_split(suite / "digits", split)
        }

    train, test = digests("train800val200"), digests("test")
    assert len(train) == 1000 and len(test) == TEST_SIZE and not train & test


def test_digits_refuses_a_test_split_larger_than_the_leftover(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="797 images left"):
        write_synthetic_suite(tmp_path, tasks=["digits"], test_size=798, progress=False)
    assert not any(tmp_path.iterdir())


def test_refuses_a_non_empty_folder_that_is_not_a_suite(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty and is not a synthetic suite"):
        write_synthetic_suite(tmp_path, tasks=["cells"], test_size=5, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_rewriting_a_suite_replaces_its_tasks_only(tmp_path: Path) -> None:
    write_synthetic_suite(tmp_path, tasks=["cells"], test_size=5, progress=False)
    (tmp_path / "results.json").write_text("{}")
    write_synthetic_suite(tmp_path, tasks=["textures"], test_size=5, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "suite.json", "textures"]
    assert json.loads((tmp_path / "suite.json").read_text())["tasks"] == [
        {"name": "textures", "group": "natural"}
    ]


@pytest.mark.parametrize(
    "kwargs",
    [{"tasks": ["nope"]}, {"tasks": ["cells", "cells"]}, {"image_size": 8}, {"test_size": 0}, {"seed": -1}],
)
def test_bad_settings_are_config_errors(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        write_synthetic_suite(tmp_path, progress=False, **kwargs)
