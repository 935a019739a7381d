"""The command-line reference, read from the real ``--help`` of every subcommand.

The documentation site's CLI page and the tests both come from here, so the reference cannot
drift from what ``vprompt SUBCOMMAND --help`` prints: it *is* that output, at a fixed width.
"""

from __future__ import annotations

import contextlib
import io
import os
import re

from vprompt.cli import main

WIDTH = 86  # columns of the rendered help: the option boxes fit the page on a 1280-pixel screen
SUBCOMMANDS = re.compile(r"^usage: vprompt[^\n{]*\{([\w,-]+)\}", re.M)


@contextlib.contextmanager
def fixed_width(columns: int = WIDTH):
    """Render help at ``columns`` whatever the terminal is, so the reference is reproducible."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(columns)
    try:
        yield
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


def help_text(path: tuple[str, ...], columns: int = WIDTH) -> str:
    """What ``vprompt *path --help`` prints, at ``columns`` columns.

    Args:
        path: the subcommand words, e.g. ``("data", "synth")``; ``()`` for the top level.
        columns: the terminal width to render at.

    Returns:
        The help text, exactly as the entry point writes it to stdout.
    """
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # a UTF-8 stream, as a terminal's: tyro draws boxes
    with fixed_width(columns), contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*path, "--help"])
    out.flush()
    return out.buffer.getvalue().decode("utf-8")


def command_tree(path: tuple[str, ...] = (), columns: int = WIDTH) -> dict[tuple[str, ...], str]:
    """Every command reachable from ``path``, groups and leaves, mapped to its help text.

    Args:
        path: where to start walking (``()``: the whole command line).
        columns: the terminal width to render at.

    Returns:
        ``{("data",): ..., ("data", "synth"): ..., ...}`` in the order ``--help`` lists them,
        each group before its subcommands.
    """
    text = help_text(path, columns)
    tree = {path: text}
    listed = SUBCOMMANDS.search(text)
    if listed and re.search(r"^\W*subcommands\W*$", text, re.M):
        for name in listed.group(1).split(","):
            tree |= command_tree((*path, name), columns)
    return tree


def leaf_commands(columns: int = WIDTH) -> dict[tuple[str, ...], str]:
    """The commands that run something (no subcommands of their own), with their help text."""
    tree = command_tree(columns=columns)
    return {path: text for path, text in tree.items()
            if path and not any(other[:len(path)] == path and other != path for other in tree)}


def markdown(columns: int = WIDTH) -> str:
    """The CLI reference page: one section per command, its ``--help`` verbatim in a text block."""
    lines = ["# Command line", "",
             "Generated from the real `--help` of every subcommand when the site is built "
             f"(at {columns} columns), so it always matches the installed `vprompt`.", ""]
    for path, text in command_tree(columns=columns).items():
        title = " ".join(("vprompt", *path))
        lines += [f"## `{title}`", "", "```text", text.rstrip("\n"), "```", ""]
    return "\n".join(lines)
