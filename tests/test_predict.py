"""vprompt predict / vprompt.predict: eval's preprocessing and predictions, unreadable files as
rows, streaming output, and the standalone pieces of the Python API."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from PIL import Image

import vprompt
from conftest import tiny_vit_spec
from test_cli import run_cli
from vprompt.data import FileListDataset, write_synthetic_suite
from vprompt.model import create_model, save_prompt
from vprompt.runs import evaluate_on_task


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    return write_synthetic_suite(root, tasks=["digits"], image_size=20, test_size=30, progress=False)[0]


@pytest.fixture(scope="module")
def prompt(tmp_path_factory, task):
    from vprompt.data.filelist import task_info

    info = task_info(task)
    torch.manual_seed(3)
    model = create_model(tiny_vit_spec(), "vpt-deep", info.num_classes, info.class_names, prompt_len=2)
    with torch.no_grad():  # a head far from init, so predictions differ between images
        model.head.fc.weight.normal_(0, 3)
    return save_prompt(model.eval(), tmp_path_factory.mktemp("prompt") / "p")


@pytest.fixture
def folder(tmp_path, task):
    """3 good images (nested), a text file and a truncated JPEG."""
    images = sorted((task / "images").rglob("*.*"))[:3] if (task / "images").exists() else sorted(task.rglob("*.png"))[:3]
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for i, source in enumerate(images):
        Image.open(source).save(tmp_path / "in" / ("sub" if i else "") / f"good{i}.png")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    Image.open(images[0]).convert("RGB").save(tmp_path / "in" / "broken.jpg")
    data = (tmp_path / "in" / "broken.jpg").read_bytes()
    (tmp_path / "in" / "broken.jpg").write_bytes(data[: len(data) // 2])
    return tmp_path / "in"


def test_predict_top1_equals_eval_on_a_split(capsys, tmp_path, task, prompt):
    out = tmp_path / "rows.csv"
    code, _, err = run_cli(capsys, "predict", "--prompt", str(prompt), "--data", str(task), "--split", "test",
                           "--top-k", "3", "--out", str(out), "--batch-size", "7", "--no-progress")
    assert code == 0, err
    rows = list(csv.DictReader(out.open()))
    model = vprompt.load_prompt(prompt)
    dataset = FileListDataset(task, "test", model.image_size)
    with torch.no_grad():
        expected = [model.class_names[i] for i in model(torch.stack([dataset[i][0] for i in range(len(dataset))])).argmax(1)]
    assert [row["class_1"] for row in rows] == expected
    assert len(set(expected)) > 1  # the check means something
    accuracy = sum(row["class_1"] == row["label"] for row in rows) / len(rows)
    assert accuracy == pytest.approx(evaluate_on_task(prompt, task, "test", progress=False)["acc"])
    assert [row["path"] for row in rows] == [str(path) for path, _ in dataset.samples]
    probs = [float(row[f"prob_{k}"]) for row in rows for k in (1, 2, 3)]
    assert all(0 <= p <= 1 for p in probs) and all(float(r["prob_1"]) >= float(r["prob_2"]) for r in rows)
    assert "30 predicted, 0 unreadable" in err


def test_unreadable_files_become_error_rows_and_strict_stops(capsys, tmp_path, folder, prompt):
    out = tmp_path / "rows.json"
    code, _, err = run_cli(capsys, "predict", "--prompt", str(prompt), str(folder), "--out", str(out), "--no-progress")
    assert code == 0 and "Traceback" not in err
    rows = json.loads(out.read_text())
    assert len(rows) == 4
    errors = [row for row in rows if row["error"]]
    assert len(errors) == 1 and errors[0]["path"].endswith("broken.jpg") and "class_1" not in errors[0]
    assert err.strip().endswith("3 predicted, 1 unreadable, 1 files skipped (not image files by their extension); "
                                f"rows in {out}")
    strict_out = tmp_path / "strict.csv"
    code, _, err = run_cli(capsys, "predict", "--prompt", str(prompt), str(folder), "--strict", "--out",
                           str(strict_out), "--no-progress")
    assert code == 2 and err.startswith("error: ") and "broken.jpg" in err and err.count("\n") == 1
    assert not strict_out.exists() and not list(tmp_path.glob("strict.csv*"))  # nothing half-written
    code, out_text, err = run_cli(capsys, "predict", "--prompt", str(prompt), str(folder / "notes.txt"),
                                  str(folder / "good0.png"), "--no-progress")
    assert code == 0 and "notes.txt: error: cannot read image" in out_text and "1 predicted, 1 unreadable" in err
    nothing = tmp_path / "nothing.csv"
    code, _, err = run_cli(capsys, "predict", "--prompt", str(prompt), str(folder / "broken.jpg"), "--out",
                           str(nothing), "--no-progress")  # nothing predicted is not a success
    assert code == 2 and err == f"error: nothing predicted: 0 predicted, 1 unreadable (their error rows are in {nothing})\n"
    assert "broken.jpg" in nothing.read_text()  # the rows say why, nothing lost


def test_globs_expand_and_a_missing_file_is_an_error_row(capsys, folder, prompt):
    code, out, err = run_cli(capsys, "predict", "--prompt", str(prompt), str(folder / "**" / "good*.png"),
                             str(folder / "missing.png"), "--top-k", "1", "--no-progress")
    assert code == 0, err
    assert out.count("\n") == 4 and "missing.png: error:" in out and "3 predicted, 1 unreadable" in err


def test_python_predict_takes_paths_pil_images_and_tensors(folder, prompt):
    model = vprompt.load_prompt(prompt)
    path = folder / "good0.png"
    image = Image.open(path)
    pixels = torch.from_numpy(__import__("numpy").array(image.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR)))
    tensor = pixels.permute(2, 0, 1).float() / 255
    rows = vprompt.predict(model, [path, image, tensor, folder / "broken.jpg"], top_k=2)
    assert rows[0]["class_1"] == rows[1]["class_1"] == rows[2]["class_1"]
    assert rows[0]["prob_1"] == rows[1]["prob_1"] == rows[2]["prob_1"]
    assert rows[3]["error"] and rows[1]["path"] == "<image 1>"


def test_predict_proba_is_a_distribution_and_keeps_the_mode(prompt):
    model = vprompt.load_prompt(prompt).train()
    probs = model.predict_proba(torch.rand(5, 3, 16, 16))
    assert probs.shape == (5, model.num_classes) and torch.allclose(probs.sum(1), torch.ones(5))
    assert model.training and not probs.requires_grad
