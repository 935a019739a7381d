"""``check_dataset``: each fault of a VTAB-1k-layout folder is reported precisely."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vprompt.data import check_dataset, write_synthetic_suite
from vprompt.errors import DataError

TASK = "count"  # 8 classes, named "1" to "8"
LISTED = 1000 + 10  # distinct images listed by the task below


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("suite")
    write_synthetic_suite(out, tasks=[TASK], test_size=10, progress=False)
    return out / TASK


@pytest.fixture
def task(pristine: Path, tmp_path: Path) -> Path:
    """A fresh, valid copy of the task for one test to break."""
    return Path(shutil.copytree(pristine, tmp_path / TASK))


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def set_lines(path: Path, new: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in new))


def only_problem(task: Path) -> str:
    report = check_dataset(task)
    assert not report.ok and len(report.problems) == 1, report.problems
    return report.problems[0]


def test_valid_task_is_ok_and_summarised(task: Path) -> None:
    report = check_dataset(task)
    assert report.ok and report.problems == [] and report.warnings == []
    assert report.summary == [
        f"{TASK}: 8 classes; train800 800, val200 200, train800val200 1000, test 10; group structured"
    ]
    assert report.lines()[-1] == "OK"


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_image_is_named_with_its_split_line(task: Path, damage: str) -> None:
    image = task / lines(task / "val200.txt")[6].rsplit(" ", 1)[0]
    data = image.read_bytes()
    image.write_bytes(b"\x00not a jpeg" * 10 if damage == "garbage" else data[: len(data) // 2])
    problem = only_problem(task)
    assert f"1 of {LISTED} listed images cannot be read" in problem
    assert f"{image.relative_to(task)} (val200.txt:7): " in problem


def test_missing_images_are_counted_and_named(task: Path) -> None:
    gone = [line.rsplit(" ", 1)[0] for line in lines(task / "train800.txt")[:4]]
    for relative in gone:
        (task / relative).unlink()
    problem = only_problem(task)
    assert f"4 of {LISTED} listed images are missing" in problem
    assert (
        f"{gone[0]} (train800.txt:1), {gone[1]} (train800.txt:2), {gone[2]} (train800.txt:3) and 1 more"
        in problem
    )


def test_train800val200_mismatch_says_how_many_entries_differ(task: Path) -> None:
    combined = lines(task / "train800val200.txt")
    path, label = combined[10].rsplit(" ", 1)
    combined[10] = f"{path} {(int(label) + 1) % 8}"
    set_lines(task / "train800val200.txt", combined)
    problem = only_problem(task)
    assert "train800val200.txt differs from train800.txt + val200.txt in 2 entries" in problem
    assert f"1 only in train800val200.txt ({combined[10]})" in problem and "1 missing from it" in problem


def test_missing_split_file(task: Path) -> None:
    (task / "test.txt").unlink()
    assert only_problem(task).endswith("missing split file(s) test.txt")


def test_wrong_size_and_malformed_lines_are_all_reported(task: Path) -> None:
    task = task.rename(task.with_name("dtd"))  # VTAB-1k's sizes hold for a folder named after its task
    train = lines(task / "train800.txt")
    set_lines(task / "train800.txt", train[:798] + ["no-label.jpg", train[799] + " x"])
    problems = check_dataset(task).problems
    assert any(
        p.endswith("train800.txt:799: expected 'relative/path label', got 'no-label.jpg'") for p in problems
    )
    assert any("train800.txt:800: label must be a non-negative integer" in p for p in problems)
    assert any(p.endswith("train800.txt has 798 entries, expected 800") for p in problems)


def test_duplicate_entries_are_reported_with_their_lines(task: Path) -> None:
    test = lines(task / "test.txt")
    set_lines(task / "test.txt", test + [test[2]])
    problem = only_problem(task)
    assert f"test.txt lists 1 image(s) more than once: {test[2].rsplit(' ', 1)[0]} (lines 3, 11)" in problem


def test_test_images_that_are_also_training_images(task: Path) -> None:
    test = lines(task / "test.txt")
    set_lines(task / "test.txt", test[:-1] + [lines(task / "val200.txt")[0]])
    assert "1 test image(s) are also training images" in only_problem(task)


def test_labels_beyond_classes_txt(task: Path) -> None:
    set_lines(task / "classes.txt", lines(task / "classes.txt")[:7])
    problems = check_dataset(task).problems
    assert any("entries have labels beyond the 7 classes of classes.txt" in p for p in problems)


def test_class_without_training_example_is_a_warning(task: Path) -> None:
    set_lines(task / "classes.txt", lines(task / "classes.txt") + ["9"])
    report = check_dataset(task)
    assert report.ok
    assert report.warnings == [
        f"{task}: 1 of 9 classes have no example in train800val200.txt (0 of them occur in test.txt): 8 (9)"
    ]


def test_test_class_never_seen_in_training_is_a_warning(task: Path) -> None:
    combined = [line for line in lines(task / "train800val200.txt") if not line.endswith(" 3")]
    for split in ("train800", "val200"):
        set_lines(
            task / f"{split}.txt", [line for line in lines(task / f"{split}.txt") if not line.endswith(" 3")]
        )
    set_lines(task / "train800val200.txt", combined)
    report = check_dataset(task)
    assert (
        "1 of 8 classes have no example in train800val200.txt (1 of them occur in test.txt): 3 (4)"
        in report.warnings[0]
    )
    assert all("expected" in p for p in report.problems)  # only the now-short splits


def test_suite_folder_checks_every_task(task: Path) -> None:
    suite = task.parent
    broken = Path(shutil.copytree(task, suite / "broken"))
    (broken / "val200.txt").unlink()
    report = check_dataset(suite)
    assert [line.split(":")[0] for line in report.summary] == ["broken", TASK]
    assert report.problems == [f"{broken}: missing split file(s) val200.txt"]
    assert report.lines()[-1] == "FAILED: 1 problem(s)"


def test_a_folder_without_tasks_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither a task folder"):
        check_dataset(tmp_path)
    with pytest.raises(DataError, match="is not a folder"):
        check_dataset(tmp_path / "nowhere")


def test_a_short_split_of_your_own_data_is_a_warning_not_a_problem(task: Path) -> None:
    train = lines(task / "train800.txt")
    set_lines(task / "train800.txt", train[:30])
    set_lines(task / "train800val200.txt", train[:30] + lines(task / "val200.txt"))
    report = check_dataset(task)
    assert report.ok, report.problems
    assert any("train800.txt has 30 entries where VTAB-1k's train800 has 800" in w for w in report.warnings)
    assert any("train800val200.txt has 230 entries where VTAB-1k's train800val200 has 1000" in w
               for w in report.warnings)
