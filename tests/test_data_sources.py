"""FGVC json folders, torchvision datasets in their on-disk layouts, VTAB-1k sizes, and --data specs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vprompt.data import check_dataset, write_synthetic_suite
from vprompt.data.registry import open_task
from vprompt.data.vtab import VTAB_TASKS, vtab_task
from vprompt.errors import DataError
from vprompt.runs import evaluate_on_task, train_on_task
from vprompt.train import TrainConfig

from conftest import tiny_vit_spec


def _jpeg(path: Path, value: int, size: tuple[int, int] = (20, 14)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    pixels[: size[1] // 2, :, 0] = 255 - value  # a class-dependent pattern the trainer can learn
    Image.fromarray(pixels).save(path)


def make_fgvc(root: Path, classes: int = 3, per_split: dict[str, int] | None = None, image_dir: str = "images") -> Path:
    """An FGVC folder as VPT's json files describe it: 1-based class ids, images under ``image_dir``."""
    per_split = per_split or {"train": 4, "val": 2, "test": 3}
    for split, count in per_split.items():
        listed = {}
        for c in range(classes):
            for i in range(count):
                rel = f"{c + 1:03d}.class_{c}/{split}_{i}.jpg"
                _jpeg(root / image_dir / rel, 40 + 80 * c)
                listed[rel] = c + 1
        (root / f"{split}.json").write_text(json.dumps(listed))
    return root


def test_fgvc_folder_maps_class_ids_and_merges_trainval(tmp_path):
    source = open_task(f"fgvc:{make_fgvc(tmp_path / 'CUB_200_2011')}")
    assert source.kind == "fgvc-json" and source.info.num_classes == 3
    assert source.info.class_names == ["1", "2", "3"]
    train, val, trainval = (source.dataset(s, 16) for s in ("train", "val", "trainval"))
    assert (len(train), len(val), len(trainval)) == (12, 6, 18)
    image, label = source.dataset("test", (16, 12))[0]
    assert image.shape == (3, 16, 12) and 0.0 <= image.min() and image.max() <= 1.0
    assert sorted({source.dataset("test", 16)[i][1] for i in range(9)}) == [0, 1, 2]
    assert source.protocol.final_train == "trainval"


def test_fgvc_errors_name_the_problem(tmp_path):
    root = make_fgvc(tmp_path / "dogs", image_dir="Images")
    assert open_task(f"fgvc:{root}").info.num_classes == 3  # images found under Images/
    with pytest.raises(DataError, match="Stanford Dogs has 120"):
        open_task(f"fgvc:dogs:{root}")
    (root / "val.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="val.json must be a non-empty JSON object"):
        open_task(f"fgvc:{root}")
    (root / "val.json").unlink()
    with pytest.raises(DataError, match="val.json does not exist"):
        open_task(f"fgvc:{root}")
    (root / "val.json").write_text(json.dumps({"001.class_0/val_0.jpg": "one"}))
    with pytest.raises(DataError, match="class ids must be integers"):
        open_task(f"fgvc:{root}")
    root = make_fgvc(tmp_path / "cars", image_dir="")
    next(root.glob("002*/train_1.jpg")).write_bytes(b"\xff\xd8 not a jpeg")
    train = open_task(f"fgvc:{root}").dataset("train", 16, train=True)
    with pytest.raises(DataError, match="cannot read image .*train_1.jpg listed in .*train.json"):
        train[5]
    next(root.glob("001*/test_0.jpg")).unlink()
    with pytest.raises(DataError, match="test_0.jpg listed in .*test.json does not exist"):
        open_task(f"fgvc:{root}").dataset("test", 16)


def make_dtd(root: Path) -> Path:
    """torchvision's DTD layout: dtd/dtd/images/<class>/*.jpg and labels/{split}1.txt."""
    base = root / "dtd" / "dtd"
    for split in ("train", "val", "test"):
        lines = []
        for c in range(47):
            name = f"class{c:02d}/{split}.jpg"
            _jpeg(base / "images" / name, (5 * c) % 256, (8, 8))
            lines.append(name)
        (base / "labels").mkdir(parents=True, exist_ok=True)
        (base / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")
    return root


def make_eurosat(root: Path) -> Path:
    """torchvision's EuroSAT layout: eurosat/2750/<class>/*.jpg, no official split."""
    for c in range(10):
        for i in range(5):
            _jpeg(root / "eurosat" / "2750" / f"Class{c}" / f"{i}.jpg", 20 * c, (8, 8))
    return root


def test_torchvision_sets_read_from_disk_with_four_splits(tmp_path):
    dtd = open_task(f"torchvision:dtd:{make_dtd(tmp_path / 'dtd')}")
    assert dtd.info.num_classes == 47 and dtd.info.class_names[0] == "class00"
    assert [len(dtd.dataset(s, 8)) for s in ("train", "val", "trainval", "test")] == [47, 47, 94, 47]
    image, label = dtd.dataset("test", 12)[3]
    assert image.shape == (3, 12, 12) and label == 3
    euro = open_task(f"tv:eurosat:{make_eurosat(tmp_path / 'eurosat')}")
    splits = {s: euro.dataset(s, 8) for s in ("train", "val", "trainval", "test")}
    assert (len(splits["test"]), len(splits["trainval"]), len(splits["val"]), len(splits["train"])) == (10, 40, 4, 36)
    held = set(splits["test"].indices)
    assert not held & set(splits["trainval"].indices)  # the fixed test holdout never leaks into training
    assert set(splits["train"].indices) | set(splits["val"].indices) == set(splits["trainval"].indices)
    assert held == set(open_task(f"tv:eurosat:{tmp_path / 'eurosat'}").dataset("test", 8).indices)  # fixed


def test_missing_torchvision_data_is_not_downloaded_unless_asked(tmp_path):
    with pytest.raises(DataError, match="pass --download"):
        open_task(f"torchvision:dtd:{tmp_path / 'nothing'}")
    with pytest.raises(DataError, match="unknown torchvision dataset 'imagenet9'"):
        open_task(f"torchvision:imagenet9:{tmp_path}")
    with pytest.raises(DataError, match="torchvision:NAME:ROOT"):
        open_task("torchvision:dtd")


def test_vtab_task_folders_get_their_exact_test_size_class_count_and_group(tmp_path):
    assert len(VTAB_TASKS) == 19 and {t.group for t in VTAB_TASKS.values()} == {"natural", "specialized", "structured"}
    assert vtab_task("KITTI").test_size == 711 and vtab_task("clevr_distance").folder == "clevr_dist"
    suite = write_synthetic_suite(tmp_path / "suite", tasks=["count"], image_size=16, progress=False)
    folder = shutil.copytree(suite[0], tmp_path / "clevr_count")  # 8 classes, like Clevr/count
    (folder / "task.json").unlink()
    source = open_task(folder)
    assert source.info.group == "structured" and source.info.num_classes == 8
    with pytest.raises(DataError, match="expected 15000 .*clevr_count test split"):
        source.dataset("test", 16)
    assert len(open_task(folder, check_sizes=False).dataset("test", 16)) > 0
    report = check_dataset(folder)
    assert any("expected 15000" in p for p in report.problems) and "group structured" in report.summary[0]
    kitti = shutil.copytree(suite[0], tmp_path / "kitti")  # 8 classes where KITTI has 4
    assert any("VTAB-1k's kitti has 4" in p for p in check_dataset(kitti).problems)


def test_training_and_evaluation_run_on_an_fgvc_folder(tmp_path):
    root = make_fgvc(tmp_path / "flowers")
    config = TrainConfig(epochs=2, batch_size=6, optimizer="adamw", base_lr=0.05, warmup_epochs=0)
    row = train_on_task(f"fgvc:{root}", tiny_vit_spec(), "linear", {}, config, tmp_path / "run", progress=False)
    assert row["train_split"] == "trainval" and row["image_source"].startswith("FGVC json splits")
    evaluated = evaluate_on_task(tmp_path / "run", f"fgvc:{root}", "test", progress=False)
    assert evaluated["n"] == 9 and evaluated["acc"] == pytest.approx(row["eval_acc"])
