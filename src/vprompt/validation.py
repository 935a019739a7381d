"""Config dataclasses that check their own fields when they are built.

A bad value must stop at the boundary with one line naming the field, the value and what was
expected, not as a TypeError deep inside a model build or an IndexError after an epoch of work.
The type hints already say most of it (``int``, ``Literal[...]``, ``float | None``); bounds are
added with ``Annotated``, which tyro ignores, so the CLI and the Python API check the same rules:

    epochs: Annotated[int, at_least(1)] = 100

Every dataclass that derives from ``Validated`` runs the check in ``__post_init__`` (also
after ``dataclasses.replace``); a subclass with its own ``__post_init__`` calls ``super()``'s first.
"""

from __future__ import annotations

import collections.abc
import math
import os
import types
import typing
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal, Union

from vprompt.errors import ConfigError


@dataclass(frozen=True)
class Bound:
    """A numeric bound; ``strict`` excludes the limit itself."""

    limit: float
    above: bool = True
    """True: values must be above (or at) ``limit``; False: below (or at) it."""
    strict: bool = False

    def allows(self, value: float) -> bool:
        if self.above:
            return value > self.limit if self.strict else value >= self.limit
        return value < self.limit if self.strict else value <= self.limit

    def describe(self) -> str:
        sign = (">" if self.strict else "≥") if self.above else ("<" if self.strict else "≤")
        return f"{sign} {self.limit:g}"


def at_least(limit: float) -> Bound:
    return Bound(limit)


def above(limit: float) -> Bound:
    return Bound(limit, strict=True)


def at_most(limit: float) -> Bound:
    return Bound(limit, above=False)


def below(limit: float) -> Bound:
    return Bound(limit, above=False, strict=True)


@dataclass(frozen=True)
class NonEmpty:
    """A list or string with at least one element."""


@dataclass(frozen=True)
class Existing:
    """A path that must exist when the config is built: an input."""

    def problem(self, value: Any) -> str | None:
        return None if Path(value).exists() else "an existing file or folder"


@dataclass(frozen=True)
class Writable:
    """A path vprompt will write: it may not exist yet, but its nearest existing parent must be a
    folder we may write in, so a run does not fail at its first checkpoint, after the work."""

    def problem(self, value: Any) -> str | None:
        path = Path(value).absolute()
        ancestor = next(p for p in (path, *path.parents) if p.exists())
        if ancestor != path and not ancestor.is_dir():
            return f"a path that can be created ({ancestor} is a file)"
        folder = ancestor if ancestor.is_dir() else ancestor.parent
        return None if os.access(folder, os.W_OK) else f"a path in a folder we may write in (not {folder})"


def expected(annotation: Any, value: Any) -> str | None:
    """What ``value`` should have been under ``annotation``, or None when it fits."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        base, *marks = args
        wrong = expected(base, value)
        if wrong is not None:
            return wrong
        return mark_violation(base, marks, value)
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if value is None and len(members) < len(args):
            return None
        wrongs = [expected(member, value) for member in members]
        return None if None in wrongs else " or ".join(wrongs)
    if origin is Literal:
        return None if value in args else "one of " + ", ".join(str(a) for a in args)
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return f"a list of {type_name(args[0]) if args else 'values'}"
        inner = [expected(args[0], item) for item in value] if args else []
        wrong = next((w for w in inner if w is not None), None)
        return None if wrong is None else f"a list in which every item is {wrong}"
    return plain_type_violation(annotation, value)


def plain_type_violation(annotation: Any, value: Any) -> str | None:
    """int, float, bool, str and paths; any other type (nested configs, dicts) checks itself."""
    if annotation is bool:
        return None if isinstance(value, bool) else "true or false"
    if annotation is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else "a finite number"
    if annotation is str:
        return None if isinstance(value, str) else "a string"
    if isinstance(annotation, type) and issubclass(annotation, os.PathLike):
        return None if isinstance(value, (str, os.PathLike)) else "a path"
    return None


def mark_violation(base: Any, marks: list[Any], value: Any) -> str | None:
    """The first mark of an ``Annotated`` type (bound, non-empty, path) that ``value`` breaks."""
    for mark in marks:
        if isinstance(mark, (Existing, Writable)) and value is not None:
            if (problem := mark.problem(value)) is not None:
                return problem
        if isinstance(mark, NonEmpty) and value is not None and len(value) == 0:
            return "a list of at least one item" if isinstance(value, (list, tuple)) else "a non-empty string"
        if isinstance(mark, Bound) and isinstance(value, (int, float)) and not mark.allows(value):
            bounds = [m.describe() for m in marks if isinstance(m, Bound)]
            kind = "an integer" if base is int else "a number"
            return f"{kind} {' and '.join(bounds)}"
    return None


def type_name(annotation: Any) -> str:
    names = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
    base = typing.get_args(annotation)[0] if typing.get_origin(annotation) is Annotated else annotation
    return names.get(base, getattr(base, "__name__", str(base)))


@lru_cache(maxsize=None)
def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def check_fields(config: Any) -> None:
    """Raise ``ConfigError`` for the first field of a dataclass whose value breaks its type."""
    hints = field_types(type(config))
    for f in fields(config):
        value = getattr(config, f.name)
        wrong = expected(hints[f.name], value)
        if wrong is not None:
            shown = f"'{value}'" if isinstance(value, PurePath) else repr(value)
            raise ConfigError(f"{f.name} must be {wrong}, got {shown}")


def check_members(name: str, values: list[str], allowed: tuple[str, ...] | list[str]) -> None:
    """Choices of a list option that its type (``list[str]``) cannot express."""
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ConfigError(f"{name} must be from {', '.join(allowed)}; unknown: {', '.join(unknown)}")


class Validated:
    """Mixin for config dataclasses: fields are checked against their types when built."""

    def __post_init__(self) -> None:
        """Refuse a field whose value breaks its type or bounds, with a ConfigError naming it."""
        check_fields(self)
