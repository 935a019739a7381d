"""Runs as files: `train`, `sweep` and `transfer` write their settings to ``OUT/config.yaml``, one
key per command-line flag, and ``--config FILE`` reads such a file back.

The file's settings are placed before the flags on the command line, so a flag given there wins:
``vprompt train --config runs/a/config.yaml --out runs/b --seed 1`` reruns ``a`` with another seed
into ``b``. A key that is no flag of the command is one line naming it; a value of the wrong type
is refused by the command's own parser, which names the flag (the key).
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

from vprompt.errors import ConfigError

CONFIG_FILE = "config.yaml"
CONFIG_FLAG = "--config"
FIELD = "config_file"
"""The field of a command that takes ``--config`` (shown in its help; never written to the file)."""


def flag(name: str) -> str:
    """A field's command-line name (tyro's): ``base_lr`` → ``base-lr``."""
    return name.replace("_", "-")


def command_fields(cls: type) -> dict[str, dataclasses.Field]:
    """Every flag of a command class by name, nested dataclasses flattened as the CLI flattens them."""
    hints = typing.get_type_hints(cls)
    found: dict[str, dataclasses.Field] = {}
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind):
            found |= command_fields(kind)
        elif field.name != FIELD:
            found[flag(field.name)] = field
    return found


def settings(command: Any) -> dict[str, Any]:
    """A parsed command's settings, one per flag, as YAML holds them (paths as text)."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(command):
        value = getattr(command, field.name)
        if dataclasses.is_dataclass(value):
            values |= settings(value)
        elif field.name != FIELD:
            values[flag(field.name)] = plain(value)
    return values


def plain(value: Any) -> Any:
    """``value`` as YAML-safe data: paths as text, tuples as lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def write_config(command: Any, folder: Path) -> Path:
    """``folder/config.yaml``: the settings ``--config`` reads back."""
    import yaml

    from vprompt.checkpoint import write_atomic

    path = Path(folder) / CONFIG_FILE
    text = yaml.safe_dump(settings(command), sort_keys=False, allow_unicode=True)
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def read_settings(path: Path) -> dict[str, Any]:
    """A config file's mapping; a file that is not one is a ConfigError naming it."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read {CONFIG_FLAG} file {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings (flag: value), not {type(data).__name__}")
    return data


def config_args(path: Path, cls: type) -> list[str]:
    """The command-line flags a config file stands for."""
    fields = command_fields(cls)
    args: list[str] = []
    for key, value in read_settings(path).items():
        name = flag(str(key))
        if name not in fields:
            raise ConfigError(f"{path}: unknown key '{key}' (the keys are {cls.__name__}'s flags: see --help)")
        args += flag_args(name, value, fields[name], path)
    return args


def flag_args(name: str, value: Any, field: dataclasses.Field, path: Path) -> list[str]:
    """``--name value`` as the parser takes it: a bool as its switch, a list as its items, null as None."""
    default = field.default if field.default is not dataclasses.MISSING else None
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: '{name}' takes true or false, not {value!r}")
        if value == default:
            return []
        return [f"--{name}"] if value else [f"--no-{name}"]
    if value is None and default is None:
        return []
    if isinstance(value, list):
        return [f"--{name}", *(str(v) for v in value)] if value else []
    if isinstance(value, dict):
        raise ConfigError(f"{path}: '{name}' takes a value or a list, not a mapping")
    return [f"--{name}", "None" if value is None else str(value)]


def expand_config(args: list[str], cls: type) -> list[str]:
    """``args`` with ``--config FILE``'s flags placed first, so flags given on the command line win
    (``--config FILE`` itself stays, for the command's own field)."""
    for index, arg in enumerate(args):
        if arg == CONFIG_FLAG and index + 1 < len(args):
            return [*config_args(Path(args[index + 1]), cls), *args]
        if arg.startswith(CONFIG_FLAG + "="):
            return [*config_args(Path(arg.partition("=")[2]), cls), *args]
    return args
