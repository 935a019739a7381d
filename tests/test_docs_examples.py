"""Every code block on the quickstart and method pages runs, in order, in an empty folder.

Python blocks share one namespace per page, like a notebook. Shell blocks run command by command:
``vprompt ...`` through the real entry point in this process (saving an interpreter start per
command), anything else through bash. A block that fails fails the test with its page and line.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
from pathlib import Path

import datasets
import pytest

from vprompt.cli import main

pytestmark = pytest.mark.slow  # every documentation example, run

DOCS = Path(__file__).parents[1] / "docs"
EXECUTED = ["quickstart.md", "own-data.md", "own-model.md", *sorted(p.relative_to(DOCS).as_posix() for p in (DOCS / "methods").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)


def code_blocks(page: Path) -> list[tuple[str, str, int]]:
    """(language, code, line) of every fenced block, in page order."""
    text = page.read_text(encoding="utf-8")
    return [(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def shell_commands(code: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [line for line in (" ".join(shlex.split(raw, comments=True)) for raw in joined.splitlines()) if line]


def run_vprompt(command: str) -> None:
    """``vprompt ARGS`` through the entry point; any exit status but 0 is a failure."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            main(shlex.split(command)[1:])
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise AssertionError(f"`{command}` exited with {exc.code}\n{out.getvalue()}") from None


def run_page(page: str, folder: Path) -> int:
    """Run every block of ``page`` inside ``folder``; returns how many blocks ran."""
    namespace: dict = {"__name__": "__docs__"}
    blocks = code_blocks(DOCS / page)
    for language, code, line in blocks:
        where = f"{page}:{line}"
        if language == "python":
            exec(compile(code, where, "exec"), namespace)  # noqa: S102  (the page is ours)
        elif language == "bash":
            for command in shell_commands(code):
                if command.startswith("vprompt "):
                    run_vprompt(command)
                else:
                    done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=folder,
                                          capture_output=True, text=True)
                    assert done.returncode == 0, f"{where}: `{command}` failed\n{done.stderr}"
        else:
            raise AssertionError(f"{where}: a ```{language or '(no language)'} block on an executed page; "
                                 "use python or bash, or move it to a page that is not executed")
    return len(blocks)


@pytest.mark.parametrize("page", EXECUTED)
def test_every_block_on_the_page_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / ".hf-cache"))  # not the user's
    monkeypatch.setenv("COLUMNS", "100")
    assert run_page(page, tmp_path) > 0, f"{page} has no code block to run"


def test_the_pages_that_must_run_are_all_there():
    assert {"quickstart.md", "own-data.md", "own-model.md", "methods/token-prompts.md", "methods/vapt.md", "methods/pixel-vp.md",
            "methods/adversarial.md", "methods/transfer.md"} <= set(EXECUTED)


def test_a_failing_block_fails_with_its_page_and_line(tmp_path, monkeypatch):
    monkeypatch.setattr("test_docs_examples.DOCS", tmp_path)
    (tmp_path / "broken.md").write_text("text\n\n```bash\nvprompt train --epochs 0\n```\n\n```python\n1 / 0\n```\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AssertionError, match="exited with 2"):
        run_page("broken.md", tmp_path)
    (tmp_path / "broken.md").write_text("```python\nx = 1\n```\n\n```python\nassert x == 2\n```\n")
    with pytest.raises(AssertionError):
        run_page("broken.md", tmp_path)


def test_shell_commands_join_continuations_and_drop_comments():
    assert shell_commands("vprompt a \\\n    --b 1   # note\n\n# only a comment\nls -l\n") == ["vprompt a --b 1", "ls -l"]
