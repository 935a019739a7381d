"""The VTAB-1k file-list layout: split parsing, task info and the image dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vprompt.data import SPLITS, FileListDataset, read_split, task_info
from vprompt.errors import ConfigError, DataError


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def gradient_image(width: int, height: int, label: int) -> Image.Image:
    """A horizontally asymmetric image whose red channel encodes the label."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 0] = 40 * label
    pixels[..., 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    return Image.fromarray(pixels)


@pytest.fixture
def small_task(tmp_path: Path) -> Path:
    """A task with 6 PNG images (one in a folder with a space), labels 0..2, short splits."""
    task = tmp_path / "tiny task"
    entries = []
    for i in range(6):
        relative = f"img dir/{i}.png" if i == 5 else f"img/{i}.png"
        (task / relative).parent.mkdir(parents=True, exist_ok=True)
        gradient_image(20, 12, i % 3).save(task / relative)
        entries.append(f"{relative} {i % 3}")
    write_lines(task / "train800.txt", entries[:4])
    write_lines(task / "val200.txt", entries[4:])
    write_lines(task / "train800val200.txt", entries)
    write_lines(task / "test.txt", entries[::2])
    return task


def test_read_split_takes_the_last_token_as_label(tmp_path: Path) -> None:
    write_lines(tmp_path / "test.txt", ["a/b c.jpg 3", "", "  x.jpg\t0  "])
    assert read_split(tmp_path, "test") == [("a/b c.jpg", 3), ("x.jpg", 0)]


def test_read_split_enforces_vtab_sizes(tmp_path: Path) -> None:
    dtd = tmp_path / "dtd"  # a folder named after a VTAB-1k task holds VTAB-1k's splits
    write_lines(dtd / "train800.txt", [f"img/{i}.jpg {i % 5}" for i in range(799)])
    with pytest.raises(DataError, match=r"train800\.txt has 799 entries, expected 800"):
        read_split(dtd, "train800")
    assert len(read_split(dtd, "train800", check_size=False)) == 799


def test_split_files_of_any_size_are_your_own_data(tmp_path: Path) -> None:
    own = tmp_path / "own"  # not a VTAB-1k task: any non-empty size
    write_lines(own / "train800val200.txt", [f"img/{i}.jpg {i % 3}" for i in range(30)])
    assert len(read_split(own, "train800val200")) == 30


def test_read_split_rejects_an_empty_test_split(tmp_path: Path) -> None:
    write_lines(tmp_path / "test.txt", [])
    with pytest.raises(DataError, match=r"test\.txt has no entries"):
        read_split(tmp_path, "test")


@pytest.mark.parametrize(
    "bad, why",
    [
        ("lonely.jpg", "expected 'relative/path label'"),
        ("a.jpg cat", "non-negative integer"),
        ("a.jpg -1", "non-negative integer"),
        ("/abs/a.jpg 1", "relative to the task folder"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, bad: str, why: str) -> None:
    write_lines(tmp_path / "val200.txt", ["ok.jpg 0", "ok2.jpg 1", bad])
    with pytest.raises(DataError, match=r"val200\.txt:3: ") as error:
        read_split(tmp_path, "val200", check_size=False)
    assert why in str(error.value) and "\n" not in str(error.value)


def test_unknown_split_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown split 'train'"):
        read_split(tmp_path, "train")
    with pytest.raises(DataError, match=r"test\.txt does not exist"):
        read_split(tmp_path, "test")


def test_task_info_without_extras(small_task: Path) -> None:
    info = task_info(small_task)
    assert (info.name, info.num_classes, info.class_names, info.group) == (
        "tiny task",
        3,
        ["0", "1", "2"],
        None,
    )


def test_task_info_reads_classes_and_group(small_task: Path) -> None:
    write_lines(small_task / "classes.txt", ["cat", "dog", "emu", "fox", ""])
    (small_task / "task.json").write_text(json.dumps({"group": "specialized"}))
    info = task_info(small_task)
    assert (info.num_classes, info.class_names, info.group) == (
        4,
        ["cat", "dog", "emu", "fox"],
        "specialized",
    )


def test_task_info_rejects_labels_beyond_classes_txt(small_task: Path) -> None:
    write_lines(small_task / "classes.txt", ["cat", "dog"])
    with pytest.raises(DataError, match=r"classes\.txt names 2 classes but the split files use label 2"):
        task_info(small_task)


def test_task_info_needs_split_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="holds none of the split files"):
        task_info(tmp_path)


def test_dataset_items_are_unnormalised_rgb_at_the_requested_size(small_task: Path) -> None:
    data = FileListDataset(small_task, "train800val200", (8, 10), check_size=False)
    assert len(data) == 6 and data.num_classes == 3 and data.class_names == ["0", "1", "2"]
    assert data.samples[5] == (small_task / "img dir/5.png", 2)
    for index in range(len(data)):
        image, label = data[index]
        assert image.shape == (3, 8, 10) and image.dtype == torch.float32
        assert image.min() >= 0.0 and image.max() <= 1.0
        assert label == index % 3
        assert image[0].mean().item() == pytest.approx(40 * label / 255, abs=1e-3)  # no normalisation
        assert image[1, :, -1].mean() > image[1, :, 0].mean()  # not flipped without augmentation


def test_train_augment_flips_horizontally_sometimes(small_task: Path) -> None:
    data = FileListDataset(small_task, "train800", 12, check_size=False, train_augment=True)
    flipped = [bool(data[0][0][1, :, 0].mean() > data[0][0][1, :, -1].mean()) for _ in range(40)]
    assert any(flipped) and not all(flipped)


def test_dataset_enforces_split_size_by_default(small_task: Path) -> None:
    vtab_named = small_task.rename(small_task.with_name("cifar"))
    with pytest.raises(DataError, match=r"train800\.txt has 4 entries, expected 800"):
        FileListDataset(vtab_named, "train800", 8)


def test_corrupt_image_names_file_split_and_line(small_task: Path) -> None:
    (small_task / "img/3.png").write_bytes(b"this is not an image at all")
    data = FileListDataset(small_task, "train800", 8, check_size=False)
    data[0]
    with pytest.raises(DataError, match=r"cannot read image .*img/3\.png listed in train800\.txt:4: "):
        data[3]


def test_missing_image_fails_at_construction(small_task: Path) -> None:
    (small_task / "img/2.png").unlink()
    (small_task / "img/4.png").unlink()
    with pytest.raises(
        DataError, match=r"img/2\.png listed in train800val200\.txt:3: no such file \(and 1 more"
    ):
        FileListDataset(small_task, "train800val200", 8, check_size=False)


def test_bad_image_size_is_a_config_error(small_task: Path) -> None:
    with pytest.raises(ConfigError):
        FileListDataset(small_task, "test", 0, check_size=False)


def test_splits_constant_matches_the_layout() -> None:
    assert SPLITS == ("train800", "val200", "train800val200", "test")


def test_an_image_is_turned_upright_by_its_exif_orientation_in_training_and_prediction(tmp_path):
    """A phone stores an upright photo sideways with orientation 6 ("rotate 90° clockwise to show"):
    the dataset and `vprompt.predict` (from the path or an opened PIL image) all see it upright."""
    from PIL import Image

    from vprompt.data.filelist import EXIF_ORIENTATION, read_rgb, to_pixels
    from vprompt.predict import InMemory

    upright = Image.new("RGB", (12, 8))
    upright.paste((255, 0, 0), (0, 0, 6, 4))  # red in the top-left quarter: any rotation moves it
    stored = upright.rotate(90, expand=True)  # as the sensor wrote it: turned a quarter counter-clockwise
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    path = tmp_path / "photo.png"  # PNG carries EXIF too, and is lossless: an exact comparison
    stored.save(path, exif=exif)
    assert Image.open(path).size == (8, 12)  # PIL alone reads it sideways
    read = read_rgb(path, "test")
    expected = to_pixels(upright, (8, 12))
    assert read.size == (12, 8) and torch.equal(to_pixels(read, (8, 12)), expected)
    assert torch.equal(InMemory([path], (8, 12))[0][0], expected)
    assert torch.equal(InMemory([Image.open(path)], (8, 12))[0][0], expected)
