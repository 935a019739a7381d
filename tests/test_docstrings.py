"""The API reference is rendered from the docstrings, so every public name must have one that
says what it takes (``Args:``, or a documented field) and what it returns (``Returns:``)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
import textwrap
from pathlib import Path
from types import ModuleType

import vprompt

MODULES = ("vprompt", "vprompt.data", "vprompt.prompts", "vprompt.prompts.ensemble", "vprompt.robust",
           "vprompt.families", "vprompt.families.lean")
SOURCE = Path(vprompt.__file__).parent
API_PAGES = Path(__file__).parents[1] / "docs" / "reference" / "api"


def api() -> list[tuple[str, object]]:
    """``(dotted path, object)`` of every name the API pages render: ``__all__``, or for a module
    without one the functions it defines."""
    found = []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        names = getattr(module, "__all__", None) or [
            name for name, value in vars(module).items()
            if inspect.isfunction(value) and value.__module__ == module_name and not name.startswith("_")]
        found += [(f"{module_name}.{name}", getattr(module, name)) for name in names]
    return found


def ours(function: object) -> bool:
    """Written in our source files (not by ``dataclass``, ``typing`` or torch)."""
    code = getattr(inspect.unwrap(function), "__code__", None)
    return code is not None and Path(code.co_filename).is_relative_to(SOURCE)


def members(cls: type) -> dict[str, object]:
    """The public methods and properties of ``cls`` and of its bases in our code, dunders included."""
    found = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            function = getattr(value, "fget", None) or getattr(value, "__func__", value)
            if name != "__init__" and not re.match(r"_(?!_)", name) and ours(function):
                found[name] = function
    return found


def class_tree(cls: type) -> ast.ClassDef:
    return ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]


def attribute_docs(body: list[ast.stmt]) -> set[str]:
    """Names assigned in ``body`` with a string right after them: attribute docstrings, as griffe reads them."""
    return {target.id for node, after in zip(body, body[1:])
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)}


def constant_documented(module: ModuleType, name: str) -> bool:
    """A module-level constant has a docstring where it is assigned: here or where it is imported from."""
    tree = ast.parse(inspect.getsource(module))
    homes = [module.__name__] + [importlib.util.resolve_name("." * node.level + (node.module or ""), module.__name__)
                                 for node in tree.body if isinstance(node, ast.ImportFrom)
                                 and name in {alias.name for alias in node.names}]
    return any(name in attribute_docs(ast.parse(inspect.getsource(importlib.import_module(home))).body)
               for home in homes)


def docstring(value: object) -> str | None:
    """Its own docstring: not ``dataclass``'s generated one, nor (``inspect.getdoc``) a base class's."""
    return ast.get_docstring(class_tree(value)) if inspect.isclass(value) else inspect.cleandoc(value.__doc__ or "")


def section(doc: str, *titles: str) -> set[str] | None:
    """The names a Google-style section (``Args:``) documents, or None when there is none."""
    lines = inspect.cleandoc(doc).splitlines()
    start = next((i for i, line in enumerate(lines) if line in [f"{title}:" for title in titles]), None)
    if start is None:
        return None
    names = set()
    for line in lines[start + 1:]:
        if line and not line.startswith(" "):
            break
        if entry := re.match(r" {4}\**(\w+)[^:]*:", line):
            names.add(entry[1])
    return names


def parameters(value: object) -> list[str]:
    """The arguments a caller passes: a class's are those of its ``__init__`` if we wrote one (or
    ``dataclass`` did)."""
    if inspect.isclass(value):
        init = next(vars(k)["__init__"] for k in value.__mro__ if "__init__" in vars(k))
        if not getattr(init, "__module__", "").startswith("vprompt"):
            return []
        value = init
    return [name for name in inspect.signature(value).parameters if name not in ("self", "cls")]


def undocumented(names: list[tuple[str, object]]) -> list[str]:
    """The names, and the members of the classes among them, that have no docstring."""
    missing = []
    for path, value in names:
        module, _, name = path.rpartition(".")
        if not (inspect.isclass(value) or inspect.isroutine(value)):
            missing += [] if constant_documented(importlib.import_module(module), name) else [path]
            continue
        missing += [] if docstring(value) else [path]
        if inspect.isclass(value):
            missing += [f"{path}.{member}" for member, function in members(value).items()
                        if not docstring(function)]
    return missing


def argument_problems(names: list[tuple[str, object]]) -> list[str]:
    """Arguments a docstring leaves out or names wrongly, and return values it does not describe."""
    problems = []
    for path, value in names:
        if not (inspect.isclass(value) or inspect.isroutine(value)) or not (doc := docstring(value)):
            continue
        wanted, named = set(parameters(value)), section(doc, "Args") or set()
        if inspect.isclass(value):
            fields = set().union(*(attribute_docs(class_tree(k).body) for k in value.__mro__
                                   if k.__module__.startswith("vprompt.")))
            documented = named | (section(doc, "Attributes") or set()) | fields
        else:
            documented = named
            if inspect.signature(value).return_annotation not in (None, "None") and \
                    section(doc, "Returns", "Yields") is None:
                problems.append(f"{path}: no Returns: section")
        if wanted - documented:
            problems.append(f"{path}: undocumented arguments {sorted(wanted - documented)}")
        if named - wanted:
            problems.append(f"{path}: Args: names {sorted(named - wanted)}, which it does not take")
    return problems


def test_every_public_name_member_and_constant_has_a_docstring():
    assert undocumented(api()) == []


def test_docstrings_document_every_argument_and_the_return_value():
    assert argument_problems(api()) == []


def bare(x: int) -> int:
    return x


def half_documented(x: int, y: int) -> int:
    """Documents ``x`` and a parameter it does not have.

    Args:
        x: documented.
        z (int): not a parameter,
            over two lines.
    """
    return x + y


def test_the_checks_catch_what_they_are_for():
    assert undocumented([("tests.bare", bare)]) == ["tests.bare"]
    assert argument_problems([("tests.half", half_documented)]) == [
        "tests.half: no Returns: section", "tests.half: undocumented arguments ['y']",
        "tests.half: Args: names ['z'], which it does not take"]


def test_a_name_hidden_by_a_submodule_of_the_same_name_is_rendered_where_it_is_defined():
    """griffe reads ``vprompt.train`` as the submodule, not the function ``__init__`` imports over
    it, so ``::: vprompt`` leaves such a name out and its API page must render it by itself."""
    pages = "".join(page.read_text() for page in API_PAGES.glob("*.md"))
    hidden = [path for path, _ in api() if SOURCE.parent.joinpath(*path.split(".")).with_suffix(".py").is_file()]
    assert len(hidden) >= 3
    assert [path for path, value in api() if path in hidden
            and f"::: {value.__module__}.{value.__name__}" not in pages] == []
