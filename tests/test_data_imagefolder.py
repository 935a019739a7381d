"""Image folders (a sub-folder of images per class) as tasks: classes from the folder names, splits
from train/ val/ test/ or a fixed seeded stratified draw, everywhere --data goes, and one clear line
for a layout that cannot train."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from test_cli import MODEL, run_cli
from vprompt.data import check_dataset, write_synthetic_suite
from vprompt.data.filelist import read_split, task_info
from vprompt.data.holdout import TEST_SHARE, VAL_SHARE
from vprompt.data.imagefolder import is_image_folder
from vprompt.data.registry import open_task
from vprompt.sweep import expand_tasks


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("suite")
    return write_synthetic_suite(root, tasks=["digits"], image_size=16, test_size=40, progress=False)[0]


def as_image_folder(task: Path, out: Path, splits: dict[str, str]) -> Path:
    """The file-list task's images copied into ``out/[SPLIT/]CLASS/``; ``splits`` maps our split
    folder ('' for none) to the file-list split it takes its images from."""
    names = task_info(task).class_names
    for folder, split in splits.items():
        for relative, label in read_split(task, split, check_size=False):
            target = out / folder / f"class_{names[label]}" / relative.replace("/", "_")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(task / relative, target)
    return out


def test_a_plain_folder_of_classes_is_split_70_10_20_per_class_the_same_way_every_time(digits, tmp_path):
    folder = as_image_folder(digits, tmp_path / "photos", {"": "train800val200"})
    assert is_image_folder(folder)
    source = open_task(folder)  # detected without the prefix
    assert source.kind == "imagefolder" and source.info.class_names == sorted(source.info.class_names)
    assert source.info.num_classes == task_info(digits).num_classes
    sizes = {split: len(source.dataset(split, 16)) for split in ("train", "val", "test", "trainval")}
    assert sum(sizes[s] for s in ("train", "val", "test")) == 1000 and sizes["trainval"] == sizes["train"] + sizes["val"]
    per_class = Counter(label for _, label in open_task(f"imagefolder:{folder}").dataset("test", 16).samples)
    all_per_class = Counter(label for split in ("train", "val", "test")
                            for _, label in source.dataset(split, 16).samples)
    for label, count in all_per_class.items():  # stratified: each class gives its own share
        assert per_class[label] == round(TEST_SHARE * count)
    assert sizes["val"] == sum(round(VAL_SHARE * (n - round(TEST_SHARE * n))) for n in all_per_class.values())
    again = open_task(folder)
    assert [s.samples for s in (again.dataset("test", 16), again.dataset("val", 16))] == \
        [s.samples for s in (source.dataset("test", 16), source.dataset("val", 16))]
    assert "seed 0" in source.image_source and "test 0.2" in source.image_source


def test_split_folders_are_used_and_only_the_missing_val_is_drawn(digits, tmp_path):
    folder = as_image_folder(digits, tmp_path / "photos", {"train": "train800val200", "test": "test"})
    source = open_task(folder)
    assert len(source.dataset("test", 16)) == 40
    assert len(source.dataset("train", 16)) + len(source.dataset("val", 16)) == 1000
    assert "val drawn per class" in source.image_source and "test and val" not in source.image_source


@pytest.mark.slow  # end to end: train and predict through the CLI
@pytest.mark.parametrize("split_folders", [False, True])
def test_an_image_folder_trains_and_predicts_with_its_class_names(capsys, digits, tmp_path, split_folders):
    layout = {"train": "train800val200", "test": "test"} if split_folders else {"": "train800val200"}
    folder = as_image_folder(digits, tmp_path / "photos", layout)
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--data", str(folder), "--out", str(run), *MODEL, "--method",
                             "vpt-shallow", "--prompt-len", "2", "--epochs", "1", "--warmup-epochs", "0",
                             "--no-progress")
    assert code == 0, err
    row = json.loads(out)
    assert row["task"] == "photos" and "image folder" in row["image_source"]
    names = json.loads((run / "prompt" / "prompt.json").read_text())["class_names"]
    assert names == sorted(p.name for p in (folder / ("train" if split_folders else "")).iterdir())
    image = next((folder / ("test" if split_folders else "") / names[0]).iterdir())
    code, out, err = run_cli(capsys, "predict", "--prompt", str(run), str(image), "--top-k", "2", "--no-progress")
    assert code == 0, err
    assert any(name in out for name in names)


def test_an_empty_class_folder_is_one_line_and_nothing_is_written(capsys, digits, tmp_path):
    folder = as_image_folder(digits, tmp_path / "photos", {"": "test"})
    (folder / "class_empty").mkdir()
    code, _, err = run_cli(capsys, "train", "--data", f"imagefolder:{folder}", "--out", str(tmp_path / "run"), *MODEL)
    assert code == 2 and err.count("\n") == 1
    assert f"class folder {folder / 'class_empty'} holds no images" in err
    assert not (tmp_path / "run").exists()
    assert check_dataset(folder).problems == [err.removeprefix("error: ").strip()]


def test_a_single_class_is_one_line(capsys, digits, tmp_path):
    folder = as_image_folder(digits, tmp_path / "photos", {"": "test"})
    for extra in sorted(folder.iterdir())[1:]:
        shutil.rmtree(extra)
    code, _, err = run_cli(capsys, "train", "--data", f"imagefolder:{folder}", "--out", str(tmp_path / "run"), *MODEL)
    assert code == 2 and err.count("\n") == 1 and "at least two classes; found only" in err


def test_data_check_reports_stray_files_and_images_in_two_splits(capsys, digits, tmp_path):
    folder = as_image_folder(digits, tmp_path / "photos", {"train": "train800val200", "test": "test"})
    (folder / "train" / "notes.txt").write_text("not an image")
    leaked = next(p for p in (folder / "train").glob("*/*") if p.is_file())
    shutil.copyfile(leaked, folder / "test" / leaked.parent.name / f"copy{leaked.suffix}")
    report = check_dataset(folder)
    assert any("1 files are not images" in w and "notes.txt" in w for w in report.warnings)
    assert len(report.problems) == 1 and "1 images occur in two splits" in report.problems[0]
    assert f"copy{leaked.suffix} (test)" in report.problems[0]
    code, out, _ = run_cli(capsys, "data", "check", str(folder))
    assert code == 1 and "image folder" in out


def test_a_sweep_takes_an_image_folder_as_one_task_and_a_folder_of_task_folders_as_its_tasks(digits, tmp_path):
    folder = as_image_folder(digits, tmp_path / "photos", {"": "test"})
    assert expand_tasks([str(folder)]) == [str(folder)]
    assert expand_tasks([str(digits.parent)]) == [str(digits)]
