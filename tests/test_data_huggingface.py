"""Hugging Face datasets as tasks (``--data hf:…``), offline, in every on-disk form: the same
images, labels and class names as the file-list task they were written from, splits mapped onto
the protocol (a missing one drawn and recorded), and one clear line for each bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import datasets
import pytest
import torch
from conftest import tiny_vit_spec
from hf_forms import as_dataset_dict, write_forms
from safetensors.torch import load_file
from test_cli import MODEL, run_cli

from vprompt.checkpoint import WEIGHTS_FILE
from vprompt.data import check_dataset, write_synthetic_suite
from vprompt.data.filelist import FileListDataset, task_info
from vprompt.data.registry import open_task
from vprompt.errors import ConfigError, DataError
from vprompt.runs import train_on_task
from vprompt.train import TrainConfig


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    return write_synthetic_suite(root, tasks=["digits"], image_size=16, test_size=40, progress=False)[0]


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("hf_cache")


@pytest.fixture(autouse=True)
def _own_cache(hf_cache, monkeypatch):
    """Reads prepare into (and named datasets come from) a cache of the test's own."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", hf_cache)


@pytest.fixture(scope="module")
def forms(digits, hf_cache, tmp_path_factory):
    return write_forms(digits, tmp_path_factory.mktemp("hf"), hf_cache)


@pytest.mark.parametrize("form", ["save_to_disk", "parquet", "arrow", "cache"])
def test_each_form_holds_the_file_list_tasks_images_labels_and_class_names(digits, forms, form):
    source = open_task(forms[form])
    assert source.kind == "huggingface" and source.info.class_names == task_info(digits).class_names
    assert "val drawn" not in source.image_source and "label column 'label'" in source.image_source
    for ours, theirs in [("trainval", "train800val200"), ("test", "test"), ("val", "val200")]:
        ours_set, theirs_set = source.dataset(ours, 16), FileListDataset(digits, theirs, 16, check_size=False)
        assert len(ours_set) == len(theirs_set)
        for index in range(0, len(ours_set), 7):
            mine, label = ours_set[index]
            reference, expected = theirs_set[index]
            assert label == expected and torch.equal(mine, reference)


def test_reading_a_named_dataset_stays_offline(forms, monkeypatch):
    seen = []
    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: seen.append(datasets.config.HF_HUB_OFFLINE) or real(*a, **k))
    with pytest.raises(DataError, match="not a local path, and reading it from the local Hugging Face cache failed.*--download"):
        open_task("hf:vprompt-tests/no-such-dataset")
    assert seen == [True]
    before = datasets.config.HF_HUB_OFFLINE
    assert open_task(forms["cache"]).info.num_classes == 10
    assert datasets.config.HF_HUB_OFFLINE == before  # offline for the read only


@pytest.mark.slow  # five trainings
def test_every_form_trains_to_the_file_lists_accuracy_and_prompt_at_the_same_seed(digits, forms, tmp_path):
    config = TrainConfig(epochs=2, warmup_epochs=0, batch_size=64, seed=3)
    rows = {}
    prompts = {}
    for form, data in {"file list": str(digits), **forms}.items():
        row = train_on_task(data, tiny_vit_spec(), "vpt-shallow", {"prompt_len": 2}, config, tmp_path / form,
                            progress=False)
        rows[form] = row
        prompts[form] = load_file(Path(row["prompt"]) / WEIGHTS_FILE)
    reference = rows.pop("file list")
    for form, row in rows.items():
        assert row["eval_acc"] == reference["eval_acc"] and row["train_acc"] == reference["train_acc"], form
        assert prompts[form].keys() == prompts["file list"].keys()
        assert all(torch.equal(prompts[form][k], prompts["file list"][k]) for k in prompts[form]), form
    assert rows["cache"]["image_source"].startswith("Hugging Face dataset hf:vprompt-tests/digits")


def write(dataset: datasets.Dataset | datasets.DatasetDict, path) -> str:
    dataset.save_to_disk(str(path))
    return f"hf:{path}"


def test_a_missing_validation_split_is_drawn_per_class_and_recorded(digits, tmp_path):
    data = write(as_dataset_dict(digits, {"train": "train800val200", "test": "test"}), tmp_path / "no_val")
    source = open_task(data)
    assert len(source.dataset("train", 16)) + len(source.dataset("val", 16)) == 1000
    assert len(source.dataset("test", 16)) == 40
    assert "val drawn per class" in source.image_source and "seed 0" in source.image_source
    again = open_task(data)
    assert again.dataset("val", 16).samples == source.dataset("val", 16).samples


def test_one_dataset_without_splits_is_train_with_val_and_test_drawn(digits, tmp_path):
    data = write(as_dataset_dict(digits, {"train": "train800val200"})["train"], tmp_path / "single")
    source = open_task(data)
    assert sum(len(source.dataset(split, 16)) for split in ("train", "val", "test")) == 1000
    assert "test and val drawn" in source.image_source


def test_an_unlabelled_test_split_is_drawn_from_train_and_said_so(digits, tmp_path):
    table = as_dataset_dict(digits, {"train": "train800", "test": "test"})
    table["test"] = table["test"].cast_column("label", datasets.Value("int64")).map(lambda row: {"label": -1})
    table["train"] = table["train"].cast_column("label", datasets.Value("int64"))
    source = open_task(write(table, tmp_path / "hidden"))
    assert abs(len(source.dataset("test", 16)) - 0.2 * 800) <= 5  # 20 % of each class
    assert "test unlabelled in the dataset" in source.image_source


def test_integer_labels_named_label_get_numbered_class_names(digits, tmp_path):
    table = as_dataset_dict(digits, {"train": "train800", "test": "test"})
    table = table.cast_column("label", datasets.Value("int64"))
    source = open_task(write(table, tmp_path / "ints"))
    assert source.info.class_names == [str(i) for i in range(10)]


def test_columns_are_chosen_by_name_when_the_features_leave_it_open(capsys, digits, tmp_path):
    table = as_dataset_dict(digits, {"train": "train800", "test": "test"})
    table = table.map(lambda row: {"copy": row["image"]}, features=datasets.Features(
        {**table["train"].features, "copy": datasets.Image()}))
    data = write(table, tmp_path / "two_images")
    with pytest.raises(DataError, match=r"several image columns \(image, copy\): name one with --image-column"):
        open_task(data)
    assert "image column 'copy'" in open_task(f"{data},image=copy").image_source
    capsys.readouterr()
    code, _, err = run_cli(capsys, "train", "--data", str(tmp_path), "--image-column", "copy", "--out",
                           str(tmp_path / "run"), *MODEL)
    assert code == 2 and err.count("\n") == 1 and "apply to Hugging Face datasets" in err


@pytest.mark.parametrize("case", ["string label", "named image not an image", "not parquet", "a missing label",
                                  "unknown column"])
def test_bad_input_is_one_error_line_exit_2_and_nothing_written(capsys, digits, tmp_path, case):
    table = as_dataset_dict(digits, {"train": "train800", "test": "test"})
    extra: list[str] = []
    if case == "string label":
        names = table["train"].features["label"].names
        table = table.map(lambda row: {"label": names[row["label"]]}, features=datasets.Features(
            {"image": datasets.Image(), "label": datasets.Value("string")}))
        data, expected = write(table, tmp_path / "strings"), "holds Value('string'), not a class label or an integer"
    elif case == "named image not an image":
        data, expected = write(table, tmp_path / "d"), "column 'label' of"
        extra = ["--image-column", "label"]
    elif case == "not parquet":
        (tmp_path / "broken.parquet").write_bytes(b"this is not parquet")
        data, expected = f"hf:{tmp_path / 'broken.parquet'}", "cannot read Hugging Face dataset"
    elif case == "a missing label":
        table["test"] = table["test"].cast_column("label", datasets.Value("int64")).map(
            lambda row, index: {"label": -1 if index == 3 else row["label"]}, with_indices=True)
        table["train"] = table["train"].cast_column("label", datasets.Value("int64"))
        data, expected = write(table, tmp_path / "unlabelled"), "split 'test' of"
    else:
        data, expected = write(table, tmp_path / "d"), "has no column 'name' (its columns: image, label)"
        extra = ["--label-column", "name"]
    capsys.readouterr()
    code, _, err = run_cli(capsys, "train", "--data", data, *extra, "--out", str(tmp_path / "run"), *MODEL)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err
    assert not (tmp_path / "run").exists()


def test_without_the_datasets_package_one_line_says_how_to_install_it(monkeypatch, forms):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ConfigError, match=r"pip install 'vprompt\[hf\]'"):
        open_task(forms["save_to_disk"])


@pytest.mark.slow  # end to end through the CLI: train, then predict the test split with class names
def test_the_cli_trains_and_predicts_on_a_parquet_folder(capsys, digits, forms, tmp_path):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--data", forms["parquet"], "--out", str(run), *MODEL, "--method",
                             "vpt-shallow", "--prompt-len", "2", "--epochs", "1", "--warmup-epochs", "0",
                             "--no-progress")
    assert code == 0, err
    assert json.loads(out)["image_source"].startswith(f"Hugging Face dataset {forms['parquet']}")
    code, out, err = run_cli(capsys, "predict", "--prompt", str(run), "--data", forms["parquet"], "--top-k", "1",
                             "--out", str(tmp_path / "p.json"), "--no-progress")
    assert code == 0, err
    rows = json.loads((tmp_path / "p.json").read_text())
    assert rows[0]["path"] == "test#0" and rows[0]["label"] in task_info(digits).class_names
    assert len(rows) == 40 and {row["class_1"] for row in rows} <= set(task_info(digits).class_names)


def test_data_check_reports_images_in_two_splits_and_undecodable_ones(capsys, digits, tmp_path):
    table = as_dataset_dict(digits, {"train": "train800", "test": "test"})
    leaked = table["train"].cast_column("image", datasets.Image(decode=False))[5]  # the same encoded bytes
    broken = {"image": {"bytes": b"not an image", "path": "broken.png"}, "label": 0}
    table["test"] = datasets.concatenate_datasets([table["test"], datasets.Dataset.from_list(
        [leaked, broken], features=table["test"].features)])
    data = write(table, tmp_path / "faulty")
    report = check_dataset(data)
    assert len(report.problems) == 2, report.problems
    assert "1 images occur in two splits" in report.problems[0] and "(test) =" in report.problems[0]
    assert report.problems[1].endswith("1 of 842 images cannot be read: broken.png (test): cannot identify image file")
    capsys.readouterr()
    code, out, _ = run_cli(capsys, "data", "check", data)
    assert code == 1 and "Hugging Face dataset" in out and "FAILED: 2 problem(s)" in out
