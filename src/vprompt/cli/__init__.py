"""The `vprompt` command line: each command is a typed dataclass whose ``run`` calls the library.

[`COMMANDS`][vprompt.cli.COMMANDS] is the one list of commands: a name, the module and class
that parse it, and the line `vprompt --help` shows. Only the module of the command given is
imported, so `vprompt --help` starts without torch's model zoo (timm) or any recipe. Errors
meant for the user ([`VpromptError`][vprompt.VpromptError]) are printed as one line and exit with
status 2; an interrupted run says how to resume.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys
import traceback
import warnings
from dataclasses import dataclass, make_dataclass
from typing import Annotated, Any, Union

import tyro
from tyro.conf import subcommand

from vprompt.errors import ConfigError, VpromptNotice, VpromptWarning
from vprompt.failures import BUG_REPORT, parse_error_line, user_message
from vprompt.progress import print_progress_lines

DESCRIPTION = "vprompt: visual prompting for frozen vision models."
TYRO_CONFIG = (tyro.conf.OmitSubcommandPrefixes, tyro.conf.OmitArgPrefixes, tyro.conf.FlagCreatePairsOff)


@dataclass(frozen=True)
class Command:
    """One `vprompt` command: its name, where its options are defined, and what it does."""

    name: str
    target: str
    """``module:Class`` of the dataclass that parses the command and runs it."""
    summary: str
    """The line `vprompt --help` shows, and the description of `vprompt NAME --help`."""
    presets: bool = False
    """Takes ``--preset NAME``, whose flags are read before the command line's."""

    def load(self) -> type:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


COMMANDS: tuple[Command, ...] = (
    Command("demo", "vprompt.cli.demo:Demo",
            "Offline tour: synthetic suite, then linear / VPT-shallow / VPT-deep on a small ViT; prints a table."),
    Command("train", "vprompt.cli.run:Train",
            "Train one method on one task and save its prompt; --preset starts from published settings.", presets=True),
    Command("eval", "vprompt.cli.run:Eval",
            "Accuracy of a saved prompt on one split of a task folder; with --attack, robust accuracy too."),
    Command("attack", "vprompt.cli.run:Attack",
            "Clean, PGD and AutoAttack accuracy of a saved prompt; the adversary perturbs the target image before "
            "it is prompted."),
    Command("predict", "vprompt.cli.run:Predict",
            "Top-k classes of a trained prompt for your own images (files, folders, globs) or a task split."),
    Command("export", "vprompt.cli.run:Export",
            "A trained prompt as one standalone file (TorchScript or ONNX): [0, 1] images in, logits out, without "
            "vprompt or timm; a JSON sidecar holds class names, input size and fingerprints."),
    Command("params", "vprompt.cli.run:Params", "Trainable parameters of a model × method: prompt, head and total."),
    Command("presets", "vprompt.cli.presets:Presets",
            "Settings to start from: published per-task lr, weight decay and prompt length, with their source and "
            "reported accuracy (`vprompt train --preset NAME`)."),
    Command("models", "vprompt.cli.models:Models",
            "The compatibility matrix: timm model families, example names, the methods that run on each."),
    Command("data", "vprompt.cli.data:Data", "Dataset tools: write the synthetic suite, check a prepared folder."),
    Command("sweep", "vprompt.cli.sweep:Sweep",
            "The tuning protocol over tasks × methods: grid (base_lr × weight decay × prompt length) on the tuning "
            "split, pick on validation, retrain × seeds, last-epoch test mean ± std; locally or on Ray. Resumable: "
            "rerun the same command after a crash and finished runs are read back."),
    Command("transfer", "vprompt.cli.transfer:Transfer",
            "Multi-source prompt transfer: tune a target task from the bank's prompts (HGPrompt and baselines). "
            "Resumable: rerun the same command and finished runs are read back."),
    Command("bank", "vprompt.cli.transfer:Bank",
            "The prompt bank: trained prompts with cards, the sources of `vprompt transfer`."),
    Command("report", "vprompt.cli.sweep:Report",
            "Our results beside the papers' numbers (both averaging conventions, seed spread), with a plot."),
    Command("reproduce", "vprompt.cli.reproduce:Reproduce", "Paper recipes: `vprompt reproduce list` shows them."),
    Command("zoo", "vprompt.cli.zoo:Zoo", "The offline source-model zoo: list the cards, or build the models."),
)
"""Every command, in the order `vprompt --help` lists them."""


def command_menu() -> Any:
    """The top level as tyro sees it: one empty subcommand per command, so `vprompt --help` and a
    missing or unknown command print tyro's own help and errors without importing any command."""
    stubs = [Annotated[make_dataclass(f"Command{i}", []), subcommand(c.name, description=c.summary)]
             for i, c in enumerate(COMMANDS)]
    return Union[tuple(stubs)]  # type: ignore[return-value]


def tyro_cli(target: Any, args: list[str], prog: str, description: str) -> Any:
    """tyro's parse of ``args``; its boxed parse errors become one line, --help still prints to
    stdout and exits 0."""
    rendered = io.StringIO()
    try:
        with contextlib.redirect_stderr(rendered):
            parsed = tyro.cli(target, args=args, prog=prog, description=description, config=TYRO_CONFIG)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise ConfigError(parse_error_line(rendered.getvalue())) from None
        sys.stderr.write(rendered.getvalue())
        raise
    except BaseException:
        sys.stderr.write(rendered.getvalue())  # warnings printed while the config was built
        raise
    sys.stderr.write(rendered.getvalue())
    return parsed


def parse(argv: list[str] | None) -> Any:
    """The command the arguments describe, parsed by its own class (only its module is imported)."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = next((c for c in COMMANDS if args and args[0] == c.name), None)
    if command is None:  # --help, nothing, or an unknown command: tyro prints the help or the error
        tyro_cli(command_menu(), args, "vprompt", DESCRIPTION)
        raise ConfigError(f"name a command: {', '.join(c.name for c in COMMANDS)}")
    from vprompt.cli.config_file import expand

    target = command.load()
    rest = expand(args[1:], target, command.presets)
    return tyro_cli(target, rest, f"vprompt {command.name}", command.summary)


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our warnings as one ``warning:`` line and notices as one ``note:`` line; everyone else's as Python prints them."""
    if issubclass(category, VpromptWarning):
        print(f"warning: {message}", file=sys.stderr)
    elif issubclass(category, VpromptNotice):
        print(f"note: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: list[str] | None = None) -> None:
    """Parse, run, and turn every failure the user can fix into one ``error:`` line and exit 2
    (see ``vprompt.failures``); anything else is a bug and keeps its traceback."""
    warnings.showwarning = show_warning
    print_progress_lines()  # --no-progress: a line per finished run instead of a bar
    try:
        parse(argv).run()
    except KeyboardInterrupt:
        print("\ninterrupted; a training run continues from its last checkpoint with --resume", file=sys.stderr)
        raise SystemExit(130) from None
    except BrokenPipeError:  # `vprompt ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        raise SystemExit(1) from None
    except Exception as exc:  # noqa: BLE001  (the one place that decides what the user reads)
        message = user_message(exc)
        if message is None:
            traceback.print_exc()
            print(f"\n{BUG_REPORT}", file=sys.stderr)
            raise SystemExit(1) from None
        print_error(message)
        raise SystemExit(2) from None


def print_error(message: str) -> None:
    """``error: message`` on a line of its own, below any progress bar tqdm is drawing."""
    from tqdm import tqdm

    tqdm.write(f"error: {message}", file=sys.stderr)
