"""Imports run downward: the recipes sit above the library, and only the CLI and other recipes use them;
`vprompt --help` imports no command, no recipe and no timm."""

from __future__ import annotations

import ast
from pathlib import Path

import vprompt

PACKAGE = Path(vprompt.__file__).parent
RECIPES = "vprompt.recipes"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, package: str) -> set[str]:
    """Every module a source file in ``package`` imports, at the top or inside a function, relative
    imports resolved; ``from A import B`` counts as both A and A.B (B may be a submodule)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            parent = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            base = ".".join(parent + ([node.module] if node.module else []))
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return found


def recipe_imports(path: Path) -> list[str]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return sorted(m for m in imported_modules(path.read_text(), package) if is_recipe(m))


def is_recipe(name: str) -> bool:
    return name == RECIPES or name.startswith(RECIPES + ".")


def is_cli(name: str) -> bool:
    return name == "vprompt.cli" or name.startswith("vprompt.cli.")


def test_only_the_cli_and_the_recipes_import_the_recipes():
    below = [path for path in PACKAGE.rglob("*.py") if not is_recipe(module_name(path))
             and not is_cli(module_name(path))]
    assert len(below) > 20
    assert {module_name(path): found for path in below if (found := recipe_imports(path))} == {}


def test_the_scan_sees_imports_inside_functions_and_relative_ones():
    source = ("def late():\n    from ..recipes.run import task_dirs\n    import vprompt.recipes.demo\n"
              "class C:\n    def m(self):\n        from vprompt import recipes\n")
    assert {m for m in imported_modules(source, "vprompt.data") if is_recipe(m)} == {
        "vprompt.recipes", "vprompt.recipes.run", "vprompt.recipes.run.task_dirs", "vprompt.recipes.demo"}
    assert "vprompt.data.filelist" in imported_modules("from .filelist import TaskInfo", "vprompt.data")


def test_the_top_level_help_imports_no_command_no_recipe_and_no_timm():
    """Each command's module is imported only when that command runs: the help of the whole command
    line costs no model library, timm or torchvision (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = ("import sys, contextlib, io\nfrom vprompt.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n    main(['--help'])\n"
            "print(sorted(m for m in sys.modules if m in ('timm', 'torchvision') or m.startswith(('timm.', "
            "'torchvision.', 'vprompt.recipes', 'vprompt.cli.'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
