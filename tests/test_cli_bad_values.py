"""Every option of every subcommand, given a bad value through the real entry point: exit status 2,
exactly one ``error:`` line that names the option or its value, no traceback, and nothing written.

The subcommands and their value-taking options are read from the real ``--help`` output, so a
new option without a bad-value case here fails :func:`test_every_value_option_has_a_bad_case`.
Each subcommand's valid command line (``VALID``) is checked to parse on its own
(:func:`test_each_valid_command_line_parses`), so a case cannot pass on a stale line's error.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest
import torch

from conftest import TINY_VIT
from vprompt.cli import COMMANDS, main, parse
from vprompt.cli_reference import leaf_commands
from vprompt.data import write_synthetic_suite
from vprompt.data.filelist import task_info

MODEL = ["--model", "vit_tiny_patch16_224", "--init-seed", "0", "--model-arg", *(f"{k}={v}" for k, v in TINY_VIT.items())]
OPTION = re.compile(r"^(?:│ | {2})(--[a-z0-9-]+) (?=[\[{A-Z])", re.M)
POSITIONALS = re.compile(r"positional arguments(.*?)(?:\n\W*options\W*\n|\Z)", re.S)


def value_options(text: str) -> list[str]:
    """``--name`` of every option that takes a value, and ``POS0``, ``POS1``… for positionals."""
    block = POSITIONALS.search(text)
    positionals = re.findall(r"^(?:│ | {2})(\S+)", block.group(1), re.M) if block else []
    return OPTION.findall(text) + [f"POS{i}" for i in range(len(positionals))]


@functools.cache
def help_by_command() -> dict[str, str]:
    """Every leaf subcommand's real ``--help`` text: walked once, when a test (or the parametrisation
    below) first asks, not when this module is imported."""
    return {" ".join(path): text for path, text in leaf_commands().items()}


@functools.cache
def options_by_command() -> dict[str, list[str]]:
    return {sub: value_options(text) for sub, text in help_by_command().items()}

# Valid arguments per subcommand (options, positionals), so that a case fails on its bad value only.
VALID: dict[str, tuple[list[str], list[str]]] = {
    "demo": (["--out", "{out}", "--epochs", "1", "--tasks", "digits"], []),
    "train": (["--data", "{task}", "--out", "{out}", *MODEL, "--epochs", "1"], []),
    "eval": (["--prompt", "{prompt}", "--data", "{task}"], []),
    "attack": (["--prompt", "{prompt}", "--data", "{task}", "--images", "4"], []),
    "predict": (["--prompt", "{prompt}", "--data", "{task}", "--out", "{out}.csv"], []),
    "export": (["--prompt", "{prompt}", "--out", "{out}.pt", "--format", "torchscript"], []),
    "params": (MODEL, []),
    "presets": ([], []),
    "data synth": ([], ["{out}"]),
    "data check": ([], ["{task}"]),
    "sweep": (["--data", "{task}", "--out", "{out}", *MODEL, "--ray", "none", "--seeds", "0", "--base-lrs", "1",
               "--weight-decays", "0", "--epochs", "1", "--no-progress"], []),
    "transfer": (["--bank", "{bank}", "--target", "{task}", "--out", "{out}"], []),
    "bank list": ([], ["{bank}"]),
    "bank add": ([], ["{out}", "{prompt}"]),
    "report": (["--out", "{out}"], ["{results}"]),
    "reproduce vapt": (["--out", "{out}", "--quick", *MODEL], []),  # --model: so --weights' cases reach the file
    "reproduce pbl": (["--out", "{out}", "--quick"], []),
    "reproduce robust-tokens": (["--out", "{out}", "--quick"], []),
    "reproduce hgprompt": (["--out", "{out}", "--quick", *MODEL], []),
    "reproduce baselines": (["--out", "{out}", "--quick", *MODEL], []),
    "zoo build": (["--out", "{out}", "--work", "{out}-work", "--tiny"], ["fractal-resnet"]),
}

NOT_A_FOLDER = ["{file}/sub"]  # a path that cannot be created: its parent is a file
BAD: dict[str, list[list[str]]] = {
    "--out": [NOT_A_FOLDER], "--work": [NOT_A_FOLDER], "--records": [NOT_A_FOLDER],
    "--data": [["{missing}"]], "--prompt": [["{missing}"], ["{file}"]], "--target": [["{missing}"]],
    "--bank": [["{missing}"]],
    "--split": [["train9000"]], "--train-split": [["train9000"]], "--eval-split": [["train9000"]],
    "--model": [["no_such_model_v9"]], "--model-arg": [["img_size"], ["img_size=abc"], ["qkv_bias=maybe"]], "--weights": [["{missing}"], ["{file}"]],
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
    "--timing-steps": [["0"]],
    "--standard": [["zoo:nosuch"]], "--robust": [["zoo:nosuch"]], "--standard-weights": [["{missing}"]],
    "--robust-weights": [["{missing}"]],
    "--source-method": [["vp"]], "--source-epochs": [["0"]], "--tune-epochs": [["0"]],
    "--image-column": [["img"]], "--label-column": [["fine_label"]],  # on a task that is not hf:
    "--preset": [["nosuch/preset/name"]], "--source": [["nowhere"]],
    "--config": [["{missing}"]], "--report-to": [["neptune"]],
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


# The field name of each positional, as the error lines name it (tyro's --help shows only a metavar).
POSITIONAL_NAMES = {
    ("predict", "POS0"): "images", ("data synth", "POS0"): "out", ("data check", "POS0"): "path",
    ("bank list", "POS0"): "bank", ("bank add", "POS0"): "bank", ("bank add", "POS1"): "prompt",
    ("report", "POS0"): "results", ("zoo build", "POS0"): "names",
}
# Cases whose bad path is refused for what it is given with, not for the path itself.
PATH_NOT_NAMED = {("predict", "POS0")}  # IMAGES together with --data
# What a command line that is wrong for another reason than the bad value says.
NOT_ABOUT_THE_VALUE = re.compile(r"unrecognized|unknown (?:option|argument)|required|needs --", re.I)


def cases() -> list[tuple[str, str, list[str]]]:
    return [(sub, option, bad) for sub, options in options_by_command().items() for option in options
            for bad in BAD_FOR.get((sub, option), BAD.get(option, []))]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The bad-value cases, one test id each: the --help walk runs at collection, not at import."""
    if metafunc.definition.name == "test_a_bad_value_is_one_error_line_and_writes_nothing":
        metafunc.parametrize("sub, option, bad", cases(), ids=lambda v: v if isinstance(v, str) else " ".join(v))


def mentions(line: str, word: str, flags: int = 0) -> bool:
    """``word`` in ``line`` as a whole word: ``epochs`` is not in ``search_epochs``, ``0.5`` not in ``0.55``."""
    return re.search(rf"(?<![\w/.-]){re.escape(word)}(?![\w/-]|\.\w)", line, flags) is not None


def names_the_offender(line: str, sub: str, option: str, bad: list[str]) -> bool:
    """Whether ``line`` names the option (``--base-lr`` or its field ``base_lr``; a positional by its
    field name) or the bad value (a number only quoted, ``'5'``; ``KEY=VALUE`` and ``zoo:NAME`` by
    all their words)."""
    if option.startswith("--"):
        if mentions(line, option) or mentions(line, option[2:].replace("-", "_")):
            return True
    elif mentions(line, POSITIONAL_NAMES[sub, option], re.I):
        return True
    for value in filter(None, bad):
        if re.fullmatch(r"[-+]?[\d.]+", value):
            if f"'{value}'" in line:
                return True
            continue
        parts = [part for part in re.split(r"[=:]", value) if part and not re.fullmatch(r"[-+]?[\d.]+", part)]
        if mentions(line, value) or (parts and all(mentions(line, part) for part in parts)):
            return True
    return False


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
    model = create_model(BackboneSpec("vit_tiny_patch16_224", kwargs=TINY_VIT, init_seed=0), "vpt-deep", info.num_classes,
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
    options = options_by_command()
    missing = [f"{sub} {option}" for sub, options in options.items() for option in options
               if (sub, option) not in BAD_FOR and option not in BAD]
    assert not missing, f"options without a bad-value case: {missing}"
    assert len(cases()) >= 60
    assert {"train", "eval", "attack", "predict", "export", "sweep", "transfer", "zoo build"} <= set(options)
    # every subcommand with a case has a valid command line, checked to parse on its own below
    assert {sub for sub, _, _ in cases()} <= set(VALID), set(options) - set(VALID)
    assert set(VALID) <= set(options), f"VALID names a subcommand --help does not list: {set(VALID) - set(options)}"
    positionals = {(sub, option) for sub, option, _ in cases() if option.startswith("POS")}
    assert positionals <= set(POSITIONAL_NAMES), positionals - set(POSITIONAL_NAMES)


def leaf(command):
    """The subcommand a group (``data``, ``bank``, ``reproduce``, ``zoo``) holds, else ``command``."""
    while hasattr(command, "command"):
        command = command.command
    return command


@pytest.mark.parametrize("sub", list(VALID))
def test_each_valid_command_line_parses(sub, workspace, monkeypatch, capsys):
    """The line every bad-value case starts from is accepted as it stands, and parses to ``sub``'s own
    command with the values given: each case's error comes from its bad value, not from a stale line."""
    root = Path(workspace["root"])
    monkeypatch.chdir(root)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    options, positionals = VALID[sub]
    argv = [token.format(**workspace) for token in [*sub.split(), *options, *positionals]]
    before = snapshot(root)
    command = leaf(parse(argv))  # raises ConfigError (a one-line parse error) when the line is wrong
    assert "error:" not in capsys.readouterr().err
    assert snapshot(root) == before, f"parsing {argv} wrote files"
    assert callable(getattr(command, "run", None)), command
    # the same subcommand was parsed (not a prefix of it): a command is the class COMMANDS names for
    # it; a group's subcommand is the one whose first docstring line its --help shows
    words = sub.split()
    if len(words) == 1:
        assert type(command) is next(c for c in COMMANDS if c.name == sub).load(), (sub, type(command))
        return
    help_text = help_by_command()[sub]
    first_line = (type(command).__doc__ or "").strip().splitlines()[0]
    assert first_line and " ".join(first_line.split()) in " ".join(help_text.split()), (sub, type(command))


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
    line = next(line for line in err.splitlines() if line.startswith("error:"))
    assert names_the_offender(line, sub, option, [token.format(**workspace) for token in bad]), (
        f"{argv}: the error does not name {option} or its value: {line}")
    assert not NOT_ABOUT_THE_VALUE.search(line), f"{argv}: the command line is wrong for another reason: {line}"
    if "{" in bad[0] and (sub, option) not in PATH_NOT_NAMED:  # a bad path: the error says which one
        path = bad[0].format(**workspace)
        assert mentions(line, path) or (Path(path).suffix and mentions(line, Path(path).name)), (
            f"{argv}: the error does not name the path {path}: {line}")
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


def test_pretrained_weights_without_the_network_or_a_cache_say_what_to_do(capsys, monkeypatch, tmp_path, workspace):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache" / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache" / "hub"))
    with pytest.raises(SystemExit) as stopped:  # train needs the weights (params counts on the meta device, without)
        main(["train", "--data", workspace["task"], "--out", str(tmp_path / "run"), "--model", "vit_tiny_patch16_224",
              "--pretrained"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "Traceback" not in err
    assert err.startswith("error: --pretrained needs timm's weights") and "--weights" in err


def test_a_bug_keeps_its_traceback_and_asks_for_a_report(capsys, monkeypatch):
    def broken(self) -> None:
        raise ZeroDivisionError("a bug of ours")

    monkeypatch.setattr("vprompt.cli.run.Params.run", broken)
    with pytest.raises(SystemExit) as stopped:
        main(["params", *MODEL])
    err = capsys.readouterr().err
    assert stopped.value.code == 1
    assert "Traceback" in err and "ZeroDivisionError: a bug of ours" in err and "please report it" in err
    assert not any(line.startswith("error:") for line in err.splitlines())


@pytest.mark.slow  # the installed command in a new process
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


@pytest.mark.slow  # end to end: a command in a fresh process
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
