"""The command line end to end: params, data, train → eval → resume, and one-line errors."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import TINY_VIT
from vprompt.cli import main
from vprompt.data import write_synthetic_suite

MODEL = ["--model", "vit_tiny_patch16_224", "--init-seed", "0", "--model-arg", *(f"{k}={v}" for k, v in TINY_VIT.items())]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    return write_synthetic_suite(root, tasks=["digits"], image_size=16, test_size=40, progress=False)[0]


def test_params_json_reports_the_vpt_deep_formula(capsys):
    code, out, _ = run_cli(capsys, "params", *MODEL, "--method", "vpt-deep", "--prompt-len", "5",
                           "--num-classes", "7", "--json")
    assert code == 0
    report = json.loads(out)
    d, depth = TINY_VIT["embed_dim"], TINY_VIT["depth"]
    assert report["prompt"] == depth * 5 * d
    assert report["head"] == d * 7 + 7
    assert report["total_trainable"] == report["prompt"] + report["head"]


def test_train_eval_and_resume_through_the_cli(capsys, tmp_path, task):
    run = tmp_path / "run"
    common = ["train", "--data", str(task), "--out", str(run), *MODEL, "--method", "vpt-shallow",
              "--prompt-len", "2", "--batch-size", "100", "--warmup-epochs", "0", "--no-progress"]
    code, out, err = run_cli(capsys, *common, "--epochs", "1")
    assert code == 0, err
    row = json.loads(out)  # stdout is the row alone: --no-progress's epoch lines go to stderr, as bars do
    assert row["task"] == task.name and 0.0 <= row["eval_acc"] <= 1.0
    assert "[epoch 1/1] train_loss " in err and f"eval_acc {row['eval_acc']:.4f} (" in err
    code, out, err = run_cli(capsys, "eval", "--prompt", str(run), "--data", str(task), "--json")
    assert code == 0, err
    scored = json.loads(out)
    assert scored["acc"] == pytest.approx(row["eval_acc"]) and scored["n"] == 40
    code, _, err = run_cli(capsys, *common, "--epochs", "1")
    assert code == 2 and "already holds a run" in err
    code, _, err = run_cli(capsys, *common, "--epochs", "2", "--resume")
    assert code == 2 and "different settings: epochs" in err


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "/no/such/task", "--out", "x", *MODEL], "task folder /no/such/task does not exist"),
    (["params", "--model", "no_such_model_v9"], "unknown timm model 'no_such_model_v9'"),
    (["params", *MODEL, "--method", "vtp"], "unknown method 'vtp'"),
    (["params", *MODEL, "--method", "linear", "--prompt-len", "4"], "does not take prompt_len"),
    (["params", *MODEL, "--method", "vapt", "--method-arg", "kernal=3"], "does not take kernal"),
    (["params", "--model", "vit_tiny_patch16_224", "--model-arg", "img_size"], "expected KEY=VALUE, got 'img_size'"),
    (["eval", "--prompt", "/no/such/prompt", "--data", "."], "no prompt checkpoint in /no/such/prompt"),
])
def test_bad_input_is_one_clear_line(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("workers", ["0", "1"])  # 1: the error is re-raised from a worker process
def test_corrupt_image_is_one_clear_line_from_train(capsys, tmp_path, task, workers):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(task, broken)
    first_image = (broken / "train800val200.txt").read_text().split()[0]
    (broken / first_image).write_bytes(b"garbage")
    code, _, err = run_cli(capsys, "train", "--data", str(broken), "--out", str(tmp_path / "run"), *MODEL,
                           "--epochs", "1", "--workers", workers, "--no-progress")
    assert code == 2
    assert err.startswith(f"error: cannot read image {broken / first_image}") and err.count("\n") == 1


def test_data_check_says_what_is_wrong(capsys, tmp_path, task):
    import shutil

    broken = tmp_path / "dtd"  # named after a VTAB-1k task: VTAB-1k's split sizes are required
    shutil.copytree(task, broken)
    lines = (broken / "val200.txt").read_text().splitlines()
    (broken / "val200.txt").write_text("\n".join(lines[:-1]) + "\n")
    code, out, _ = run_cli(capsys, "data", "check", str(broken))
    assert code == 1
    assert "val200.txt has 199 entries, expected 200" in out
    code, out, _ = run_cli(capsys, "data", "check", str(task))
    assert code == 0



@pytest.mark.slow  # end to end: accelerate launch, two processes
def test_the_same_train_command_runs_on_two_processes(tmp_path, task):
    """`accelerate launch` (CPU, gloo) as on N GPUs: one result line, global metrics, a loadable prompt."""
    import os
    import subprocess
    import sys

    from vprompt.model import load_prompt

    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "vprompt.cli"]
    train = ["train", "--data", str(task), "--out", str(tmp_path / "run"), *MODEL, "--method", "vpt-deep",
             "--prompt-len", "2", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "50", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(launch + train, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count('"task"') == 1  # printed by the main process only
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics) == 1
    assert metrics[0]["train_images"] == 1000  # both processes' shards counted
    assert load_prompt(tmp_path / "run" / "prompt").num_classes == 10


def test_method_args_reach_the_method(capsys):
    base = ["params", *MODEL, "--method", "vapt", "--prompt-len", "3", "--json"]
    _, out, _ = run_cli(capsys, *base)
    _, ablated, _ = run_cli(capsys, *base, "--method-arg", "projector=none")
    assert json.loads(out)["prompt"] - json.loads(ablated)["prompt"] == 2 * 8 * TINY_VIT["embed_dim"]


def test_adversarial_prompt_training_then_attack_and_eval_attack(capsys, tmp_path, task):
    run = tmp_path / "adv"
    code, out, err = run_cli(capsys, "train", "--data", str(task), "--out", str(run), *MODEL, "--method", "vp",
                             "--method-arg", "template=pad", "--epochs", "1", "--batch-size", "200",
                             "--warmup-epochs", "0", "--adv-train", "fgsm-rs", "--adv-eps", "4/255", "--no-progress")
    assert code == 0, err
    assert json.loads(out)["adversarial"] == "fgsm-rs linf eps 0.01569"
    code, out, err = run_cli(capsys, "attack", "--prompt", str(run), "--data", str(task), "--images", "12",
                             "--eps", "0.5", "--steps", "5", "--json")
    assert code == 0, err
    row = json.loads(out)
    assert row["n"] == 12 and row["eps"] == 0.5 and row["norm"] == "linf"
    assert row["robust_acc_aa"] <= row["robust_acc_pgd"] <= row["clean_acc"]
    assert row["robust_acc_pgd"] == 0.0  # eps 0.5 can paint any image grey
    code, out, err = run_cli(capsys, "eval", "--prompt", str(run), "--data", str(task), "--attack", "pgd",
                             "--images", "12", "--eps", "8/255", "--steps", "3")
    assert code == 0, err
    assert "linf eps 0.03137 (8/255), first 12 images of test" in out and "under pgd-3, 1 restart(s)" in out
    assert "accuracy" in out.splitlines()[-1]


@pytest.mark.slow  # end to end: a sweep through the CLI
def test_sweep_through_the_cli_writes_the_table_and_rows(capsys, tmp_path, task):
    code, out, err = run_cli(capsys, "sweep", "--data", str(task.parent), "--out", str(tmp_path), *MODEL,
                             "--methods", "linear", "vpt-shallow", "--prompt-lens", "1", "2", "--base-lrs", "0.02",
                             "--weight-decays", "0", "--seeds", "0", "1", "--epochs", "1", "--batch-size", "100",
                             "--warmup-epochs", "0", "--optimizer", "adamw", "--ray", "none", "--no-progress")
    assert code == 0, err
    done = [line for line in out.splitlines() if line.startswith("[runs] ")]  # for logs: a line per finished run
    assert done[-1].startswith("[runs] 4/4 done: ") and str(tmp_path) in done[-1]
    rows = json.loads((tmp_path / "results.json").read_text())
    assert {(r["task"], r["method"], r["seed"]) for r in rows} == {
        ("digits", m, s) for m in ("linear", "vpt-shallow") for s in (0, 1)}
    assert "mean of group means" in out and "prompt length [1, 2]" in out
    written = yaml.safe_load((tmp_path / "config.yaml").read_text())  # the sweep as a file, for --config
    assert written["methods"] == ["linear", "vpt-shallow"] and written["prompt-lens"] == [1, 2]
    code, _, err = run_cli(capsys, "sweep", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"),
                           *MODEL, "--ray", "none")
    assert code == 2 and err.startswith("error:")
    code, _, err = run_cli(capsys, "sweep", "--data", str(task.parent), "--out", str(tmp_path / "y"), *MODEL,
                           "--seed", "3", "--ray", "none")
    assert code == 2 and "use --seeds 3" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "y").exists()


@pytest.mark.slow  # end to end: train through the CLI
def test_a_thirty_image_file_list_folder_of_your_own_trains(capsys, tmp_path, task):
    """Split files of any size: only a folder named after a VTAB-1k task must have VTAB-1k's sizes."""
    import shutil

    own = tmp_path / "own"
    shutil.copytree(task, own)
    train = (own / "train800val200.txt").read_text().splitlines()[:30]
    (own / "train800val200.txt").write_text("\n".join(train) + "\n")
    for split in ("train800", "val200"):
        (own / f"{split}.txt").unlink()
    code, out, err = run_cli(capsys, "train", "--data", str(own), "--out", str(tmp_path / "run"), *MODEL,
                             "--method", "vpt-shallow", "--prompt-len", "2", "--epochs", "1", "--warmup-epochs", "0",
                             "--no-progress")
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics[0]["train_images"] == 30 and json.loads(out)["task"] == "own"
