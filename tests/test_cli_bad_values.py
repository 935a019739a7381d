"""Every option of every subcommand, given a bad value through the real entry point: exit status 2,
exactly one ``error:`` line, no traceback, and nothing written.

The subcommands and their value-taking options are read from the real ``--help`` output, so a
new option without a bad-value case here fails :func:`test_every_value_option_has_a_bad_case`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from conftest import TINY_VIT
from vprompt.cli import main
from vprompt.cli_reference import leaf_commands
from vprompt.data import write_synthetic_suite
from vprompt.data.filelist import task_info

MODEL = ["--model", "vit_tiny_patch16_224", "--model-arg", *(f"{k}={v}" for k, v in TINY_VIT.items())]
OPTION = re.compile(r"^(?:│ | {2})(--[a-z0-9-]+) (?=[\[{A-Z])", re.M)
POSITIONALS = re.compile(r"positional arguments(.*?)(?:\n\W*options\W*\n|\Z)", re.S)


def value_options(text: str) -> list[str]:
    """``--name`` of every option that takes a value, and ``POS0``, ``POS1``… for positionals."""
    block = POSITIONALS.search(text)
    positionals = re.findall(r"^(?:│ | {2})(\S+)", block.group(1), re.M) if block else []
    return OPTION.findall(text) + [f"POS{i}" for i in range(len(positionals))]


HELP = leaf_commands()  # every leaf subcommand and its real --help text
OPTIONS = {" ".join(path): value_options(text) for path, text in HELP.items()}

# Valid arguments per subcommand (options, positionals), so that a case fails on its bad value only.
VALID: dict[str, tuple[list[str], list[str]]] = {
    "demo": (["--out", "{out}", "--epochs", "1", "--tasks", "digits"], []),
    "train": (["--data", "{task}", "--out", "{out}", *MODEL, "--epochs", "1"], []),
    "eval": (["--prompt", "{prompt}", "--data", "{task}"], []),
    "attack": (["--prompt", "{prompt}", "--data", "{task}", "--images", "4"], []),
    "predict": (["--prompt", "{prompt}", "--data", "{task}", "--out", "{out}.csv"], []),
    "export": (["--prompt", "{prompt}", "--out", "{out}.pt", "--format", "torchscript"], []),
    "params": (MODEL, []),
    "data synth": ([], ["{out}"]),
    "data check": ([], ["{task}"]),
    "sweep": (["--data", "{task}", "--out", "{out}", *MODEL, "--ray", "none", "--seeds", "0", "--base-lrs", "1",
               "--weight-decays", "0", "--epochs", "1"], []),
    "transfer": (["--bank", "{bank}", "--target", "{task}", "--out", "{out}"], []),
    "bank list": ([], ["{bank}"]),
    "bank add": ([], ["{out}", "{prompt}"]),
    "report": (["--out", "{out}"], ["{results}"]),
    "reproduce vapt": (["--out", "{out}", "--quick"], []),
    "reproduce pbl": (["--out", "{out}", "--quick"], []),
    "reproduce robust-tokens": (["--out", "{out}", "--quick"], []),
    "reproduce hgprompt": (["--out", "{out}", "--quick"], []),
    "zoo build": (["--out", "{out}", "--work", "{out}-work", "--tiny"], ["fractal-resnet"]),
}

NOT_A_FOLDER = ["{file}/sub"]  # a path that cannot be created: its parent is a file
BAD: dict[str, list[list[str]]] = {
    "--out": [NOT_A_FOLDER], "--work": [NOT_A_FOLDER],
    "--data": [["{missing}"]], "--prompt": [["{missing}"], ["{file}"]], "--target": [["{missing}"]],
    "--bank": [["{missing}"]],
    "--split": [["train9000"]], "--train-split": [["train9000"]], "--eval-split": [["train9000"]],
    "--model": [["no_such_model_v9"]], "--model-arg": [["img_size"]], "--weights": [["{missing}"], ["{file}"]],
    "--init-seed": [["-1"]],
    "--method": [["vtp"]], "--prompt-len": [["0"], ["ten"]], "--prompt-dropout": [["1.5"]],
    "--method-arg": [["prompt_len=zero"], ["novalue"]],
    "--epochs": [["0"], ["ten"]], "--batch-size": [["0"]], "--optimizer": [["adam"]], "--base-lr": [["-0.1"]],
    "--weight-decay": [["-1"]], "--token-lr": [["0"]], "--vapt-lr": [["-1"]], "--momentum": [["1.5"]], "--warmup-epochs": [["-1"]], "--seed": [["-1"]],
    "--mixed-precision": [["fp8"]], "--workers": [["-2"], ["many"]], "--cache-mb": [["-1"]], "--grad-clip": [["0"]],
    "--adv-train": [["trades"]], "--adv-norm": [["l1"]], "--adv-eps": [["5"], ["abc"]], "--adv-steps": [["0"]],
    "--adv-ramp-steps": [["-1"]],
    "--attack": [["cw"]], "--norm": [["l1"]], "--eps": [["abc"], ["5"], ["0"]], "--steps": [["0"]],
    "--restarts": [["0"]], "--images": [["-1"]],
    "--top-k": [["0"]], "--device": [["tpu"]] + ([] if torch.cuda.is_available() else [["cuda"]]),
    "--format": [["tflite"]], "--num-classes": [["0"]],
    "--tasks": [["nosuchtask"]], "--methods": [["nosuchmethod"]], "--seeds": [["x"], ["-1"]],
    "--image-size": [["8"]], "--test-size": [["0"]],
    "--base-lrs": [["1", "-1"]], "--weight-decays": [["-1"]], "--prompt-lens": [["0"]],
    "--ray": [["127.0.0.1:1"]], "--ray-timeout": [["0"]], "--cpus-per-run": [["0"]], "--gpus-per-run": [["-1"]],
    "--sources": [["nosuchsource"]], "--similarity-temperature": [["0"]],
    "--search-epochs": [["0"]], "--search-batch-size": [["1"]], "--search-lr": [["0"]], "--head-lr": [["0"]],
    "--gar-weight": [["-1"]], "--conflict-weight": [["-1"]], "--h-ridge": [["0"]], "--weight-temperature": [["0"]],
    "--name": [["a/b"]], "--task": [[""]], "--accuracy": [["1.5"]],
    "--template": [["zigzag"]], "--mapping": [["nearest"]], "--value-strength": [["-1"]],
    "--spatial-strength": [["-1"]], "--output-strength": [["-1"]], "--attack-images": [["0"]], "--pgd-steps": [["0"]],
    "--standard": [["zoo:nosuch"]], "--robust": [["zoo:nosuch"]], "--standard-weights": [["{missing}"]],
    "--robust-weights": [["{missing}"]],
    "--source-method": [["vp"]], "--source-epochs": [["0"]], "--tune-epochs": [["0"]],
}
BAD_FOR: dict[tuple[str, str], list[list[str]]] = {
    ("predict", "POS0"): [["{images}"]],  # with --data given too
    ("predict", "--out"): [NOT_A_FOLDER, ["{out}.txt"]],
    ("export", "--out"): [NOT_A_FOLDER],
    ("data synth", "POS0"): [NOT_A_FOLDER],
    ("data check", "POS0"): [["{missing}"]],
    ("bank list", "POS0"): [["{missing}"]],
    ("bank add", "POS0"): [NOT_A_FOLDER],
    ("bank add", "POS1"): [["{missing}"]],
    ("report", "POS0"): [["{missing}"], ["{file}"]],
    ("zoo build", "POS0"): [["no-such-recipe"]],
}


def cases() -> list[tuple[str, str, list[str]]]:
    return [(sub, option, bad) for sub, options in OPTIONS.items() for option in options
            for bad in BAD_FOR.get((sub, option), BAD.get(option, []))]


def with_bad_value(sub: str, option: str, bad: list[str]) -> list[str]:
    """The valid command line of ``sub`` with ``option``'s value replaced by ``bad``."""
    options, positionals = VALID.get(sub, ([], []))
    positionals = list(positionals)
    if option.startswith("POS"):
        positionals[int(option[3:]):int(option[3:]) + 1] = [bad]
        return [*sub.split(), *options, *(token for p in positionals for token in ([p] if isinstance(p, str) else p))]
    kept, skipping = [], False
    for token in options:
        if token.startswith("--"):
            skipping = token == option
        if not skipping:
            kept.append(token)
    return [*sub.split(), *kept, option, *bad, *positionals]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, str]:
    """A task, a saved prompt, a bank holding it, results rows, a plain file and an empty folder."""
    root = tmp_path_factory.mktemp("bad-values")
    task = write_synthetic_suite(root / "suite", tasks=["digits"], image_size=16, test_size=20, progress=False)[0]
    from vprompt.backbones import BackboneSpec
    from vprompt.bank import add_to_bank
    from vprompt.model import create_model, save_prompt

    info = task_info(task)
    model = create_model(BackboneSpec("vit_tiny_patch16_224", kwargs=TINY_VIT), "vpt-deep", info.num_classes,
                         info.class_names, prompt_len=2)
    prompt = save_prompt(model, root / "prompt")
    add_to_bank(root / "bank", prompt, name="digits")
    (root / "results").mkdir()
    (root / "results" / "results.json").write_text(json.dumps([{"task": "digits", "method": "vpt-deep", "seed": 0,
                                                                  "test_acc": 0.5}]))
    (root / "notes.txt").write_text("not an image, not a folder")
    (root / "empty").mkdir()
    return {"root": str(root), "task": str(task), "prompt": str(prompt), "bank": str(root / "bank"),
            "results": str(root / "results"), "file": str(root / "notes.txt"), "empty": str(root / "empty"),
            "images": str(task / "images" / "test"), "out": str(root / "out"), "missing": str(root / "no" / "such")}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def test_every_value_option_has_a_bad_case():
    missing = [f"{sub} {option}" for sub, options in OPTIONS.items() for option in options
               if (sub, option) not in BAD_FOR and option not in BAD]
    assert not missing, f"options without a bad-value case: {missing}"
    assert len(cases()) >= 60
    assert {"train", "eval", "attack", "predict", "export", "sweep", "transfer", "zoo build"} <= set(OPTIONS)


@pytest.mark.parametrize("sub, option, bad", cases(), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_a_bad_value_is_one_error_line_and_writes_nothing(sub, option, bad, workspace, capsys, monkeypatch):
    root = Path(workspace["root"])
    monkeypatch.chdir(root)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = [token.format(**workspace) for token in with_bad_value(sub, option, bad)]
    before = snapshot(root)
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2, f"{argv} exited {stopped.value.code}: {err}"
    assert [line for line in err.splitlines() if line.startswith("error:")].__len__() == 1, err
    assert "Traceback" not in err, err
    assert snapshot(root) == before, f"{argv} wrote files"


def test_an_unusually_large_eps_is_one_warning_line_and_the_attack_runs(workspace, capsys, monkeypatch):
    from vprompt.robust.evaluation import warn_large_eps

    warn_large_eps.cache_clear()  # warned once per process: an earlier test may have used the same setting
    monkeypatch.chdir(workspace["root"])
    main(["attack", "--prompt", workspace["prompt"], "--data", workspace["task"], "--attack", "pgd", "--eps", "20/255",
          "--steps", "1", "--images", "4"])
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "unusually large" in warnings[0], err


def test_pretrained_weights_without_the_network_or_a_cache_say_what_to_do(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache" / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache" / "hub"))
    with pytest.raises(SystemExit) as stopped:
        main(["params", "--model", "vit_tiny_patch16_224", "--pretrained"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "Traceback" not in err
    assert err.startswith("error: --pretrained needs timm's weights") and "--weights" in err


def test_a_bug_keeps_its_traceback_and_asks_for_a_report(capsys, monkeypatch):
    def broken(self) -> None:
        raise ZeroDivisionError("a bug of ours")

    monkeypatch.setattr("vprompt.cli.Params.run", broken)
    with pytest.raises(SystemExit) as stopped:
        main(["params", *MODEL])
    err = capsys.readouterr().err
    assert stopped.value.code == 1
    assert "Traceback" in err and "ZeroDivisionError: a bug of ours" in err and "please report it" in err
    assert not any(line.startswith("error:") for line in err.splitlines())


def test_a_parse_error_in_a_terminal_encoding_is_one_line_too():
    """tyro draws its errors in UTF-8 boxes when stdout is UTF-8 (a terminal, a pipe), in ASCII
    under pytest's capture; the console script must flatten both."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "vprompt.cli", "train", "--out", "x", "--epochs", "ten"],
                            capture_output=True, text=True, encoding="utf-8", env={"PYTHONIOENCODING": "utf-8",
                                                                                  "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: vprompt train needs --data, --model (see vprompt train --help)"]


def test_a_reader_that_stops_early_is_not_an_error():
    """`vprompt models --json | head -1`: the closed pipe ends the command quietly."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-m", "vprompt.cli", "models", "--json"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    child.stdout.close()  # before the child writes: its first write meets a closed pipe
    stderr = child.stderr.read()
    child.wait(timeout=60)
    assert "error" not in stderr and "Traceback" not in stderr, stderr


def test_timm_hub_and_folder_names_pass_the_early_name_check():
    """timm reads an hf-hub: or local-dir: model's config only when it builds it, so the parse-time
    check must let those through, and still refuse an unknown prefix."""
    from vprompt.backbones import check_model_name
    from vprompt.errors import ConfigError

    check_model_name("hf-hub:timm/vit_tiny_patch16_224.augreg_in21k")
    check_model_name("local-dir:/some/folder")
    with pytest.raises(ConfigError, match="unknown timm model 'foo:bar'"):
        check_model_name("foo:bar")
