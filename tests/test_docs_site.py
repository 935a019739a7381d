"""The documentation site's generated parts and the README: what they promise, checked.

- the CLI reference is the real ``--help`` of every subcommand (compared with the installed
  ``vprompt`` in a subprocess for a sample, and complete for all);
- every results table has a place on the Results page, and an unknown one fails the build;
- every method's option table lists every field of its config;
- the README stays short, its links resolve, and every figure in it is in a results file;
- the offline check finds a CDN font.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from vprompt.cli_reference import WIDTH, command_tree, leaf_commands
from vprompt.cli_reference import markdown as cli_markdown
from vprompt.methods import make_config, method_names

ROOT = Path(__file__).parents[1]
TOOLS = ROOT / "docs" / "_tools"


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pages = load_tool("generated_pages")
check_offline = load_tool("check_offline")


def test_cli_reference_has_every_command_with_its_help():
    page = cli_markdown()
    tree = command_tree()
    assert {"train", "eval", "attack", "sweep", "transfer", "predict", "export"} <= {p[0] for p in leaf_commands()}
    assert ("data", "synth") in tree and ("zoo", "build") in tree and ("reproduce", "pbl") in tree
    for path, text in tree.items():
        assert f"## `{' '.join(('vprompt', *path))}`" in page
        assert text.rstrip("\n") in page


@pytest.mark.slow  # the installed command in a new process, three times
@pytest.mark.parametrize("path", [(), ("train",), ("data", "synth")])
def test_cli_reference_equals_the_installed_commands_help(path):
    env = {**os.environ, "COLUMNS": str(WIDTH)}
    done = subprocess.run([Path(sys.executable).parent / "vprompt", *path, "--help"], capture_output=True, text=True,
                          env=env, check=True)
    assert done.stdout == command_tree(path)[path]


def test_results_page_includes_every_table_and_refuses_an_unlisted_one(tmp_path):
    results = ROOT / "docs" / "results"
    page = pages.results_page(results)
    for name in (p.relative_to(results).as_posix() for p in results.rglob("*.md")):
        first_row = next(line for line in (results / name).read_text().splitlines() if line.startswith("|"))
        assert first_row in page, name
    (tmp_path / "new_benchmark.md").write_text("| a |\n|---|\n| 1 |\n")
    with pytest.raises(ValueError, match="new_benchmark.md"):
        pages.results_page(tmp_path)


@pytest.mark.parametrize("method", [m for m in method_names() if fields(make_config(m))])
def test_option_table_lists_every_field_with_its_docstring(method):
    table = pages.options_table(method)
    rows = [line for line in table.splitlines()[2:]]
    assert [re.match(r"\| `(\w+)`", row).group(1) for row in rows] == [f.name for f in fields(make_config(method))]
    assert all(not row.endswith("|  |") for row in rows), "a field without a docstring under it"


def test_markers_are_replaced_in_the_pages():
    text = pages.on_page_markdown("<!-- vprompt:options vapt -->\n<!-- vprompt:zoo-table -->\n<!-- vprompt:models-table -->",
                                  None, None, None)
    assert "<!--" not in text and "`kernel`" in text and "zoo:fractal-vit" in text and "VisionTransformer" in text


def test_readme_is_short_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    links = re.findall(r"\]\(([^)]+)\)", readme)
    assert len(links) > 10
    for link in links:
        assert not link.startswith(("http:", "https:")), f"{link}: link into the repository instead"
        assert (ROOT / link.split("#")[0]).exists(), f"README links to {link}, which does not exist"


def test_every_figure_in_the_readme_is_in_a_results_file():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    results = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "docs" / "results").rglob("*")
                        if p.suffix in (".md", ".json"))
    figures = set(re.findall(r"(?<![\w./])\d+\.\d{2,}(?![\w.])", readme))
    assert len(figures) >= 5
    assert sorted(f for f in figures if f not in results) == []
    # as a whole number: "0.62" is not in "0.625" or "10.62" (a sentence's full stop may follow it)
    assert sorted(f for f in figures if not stated_as_a_number(f, results)) == []


def stated_as_a_number(figure: str, text: str) -> bool:
    """Whether ``figure`` stands in ``text`` as a number of its own, not as part of a longer one."""
    return re.search(rf"(?<![\w.]){re.escape(figure)}(?!\w|\.\d)", text) is not None


def test_a_figure_matches_only_itself():
    text = "accuracy 0.625, gain +0.41 and 10.62% (see 1.0.63); final: 0.93."
    assert [f for f in ("0.625", "0.41", "0.93") if stated_as_a_number(f, text)] == ["0.625", "0.41", "0.93"]
    assert [f for f in ("0.62", "0.6", "0.4", "0.9", "10.6", "0.63", "5.0") if stated_as_a_number(f, text)] == []


def test_offline_check_finds_a_remote_font_and_passes_local_assets(tmp_path):
    (tmp_path / "index.html").write_text('<link rel="stylesheet" href="assets/main.css">'
                                         '<a href="https://example.org">a link is fine</a>')
    assert check_offline.remote_fetches(tmp_path) == []
    (tmp_path / "font.css").write_text("@import url('https://fonts.googleapis.com/css?family=Roboto');")
    assert check_offline.remote_fetches(tmp_path) == ["font.css: https://fonts.googleapis.com/css?family=Roboto"]
