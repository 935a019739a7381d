"""Every kind of box tyro draws for a bad command line becomes one ``error:`` line that keeps what the
box says: each case renders tyro's own box first, checks its kind, then the line vprompt prints."""

from __future__ import annotations

import contextlib
import io

import pytest
import tyro

from vprompt.cli import COMMANDS, TYRO_CONFIG, main

TINY = ["--model", "vit_tiny_patch16_224"]
CASES = {
    # kind of box: (command line, what the line must say)
    "Unrecognized options": (["sweep", "--data", "x", "--out", "y", *TINY, "--bogus-flag"],
                             ["Unrecognized options: --bogus-flag"]),
    "misplaced": (["reproduce", "--quick", "vapt"],
                  ["--quick (applied to vprompt reproduce)", "ordering can matter", "Perhaps you meant: --quick"]),
    "Required options": (["train", "--data", "x", *TINY], ["vprompt train needs --out"]),
    "Missing argument": (["train", "--data", "x", "--out", "y", *TINY, "--epochs"],
                         ["Missing value for argument '--epochs'"]),
    "Invalid choice": (["train", "--data", "x", "--out", "y", *TINY, "--optimizer", "adam"],
                       ["invalid choice 'adam' for argument '--optimizer'", "'sgd', 'adamw'"]),
    "Value error": (["train", "--data", "x", "--out", "y", *TINY, "--epochs", "ten"],
                    ["Error parsing --epochs", "'ten'"]),
}


def tyro_box(argv: list[str]) -> str:
    """What tyro itself prints for ``argv`` (the box vprompt flattens)."""
    command = next(c for c in COMMANDS if c.name == argv[0])
    rendered = io.StringIO()
    with contextlib.redirect_stderr(rendered), pytest.raises(SystemExit):
        tyro.cli(command.load(), args=argv[1:], prog=f"vprompt {argv[0]}", config=TYRO_CONFIG)
    return rendered.getvalue()


@pytest.mark.parametrize("kind", CASES)
def test_each_box_becomes_one_line_that_keeps_what_it_says(kind, capsys):
    argv, expected = CASES[kind]
    box = tyro_box(argv)
    assert ("misplaced options" if kind == "misplaced" else kind) in box.splitlines()[0] + box
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    for fragment in expected:
        assert fragment in err, (fragment, err, box)
    assert f"(see vprompt {argv[0]} --help)" in err
    assert "Arguments, matter" not in err and "helptext" not in err  # no sentence torn into words, no help text


DRAWS_PROGRESS = ["train", "predict", "transfer", "sweep", "demo", "data synth", "data check", "zoo build",
                  "reproduce vapt", "reproduce pbl", "reproduce robust-tokens", "reproduce hgprompt",
                  "reproduce baselines"]


def test_every_command_that_draws_progress_bars_takes_no_progress():
    from vprompt.cli_reference import leaf_commands

    helps = {" ".join(path): text for path, text in leaf_commands().items()}
    assert [c for c in DRAWS_PROGRESS if "--no-progress" not in helps[c]] == []
