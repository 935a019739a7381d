"""Command lines from files and presets: `train`, `sweep` and `transfer` write their settings to
``OUT/config.yaml``, one key per command-line flag; ``--config FILE`` reads such a file back, and
``--preset NAME`` (train) stands for a published preset's flags.

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
PRESET_FLAG = "--preset"
FIELD = "config_file"
"""The field of a command that takes ``--config`` (shown in its help; never written to the file)."""
NOT_SETTINGS = (FIELD, "resume", "progress")
"""Fields that say how to run, not what: a rerun from the file decides them afresh."""


def flag(name: str) -> str:
    """A field's command-line name (tyro's): ``base_lr`` → ``base-lr``."""
    return name.replace("_", "-")


def command_defaults(cls: type, instance: Any = None) -> dict[str, Any]:
    """Every flag of a command class with its default, nested dataclasses flattened as the CLI
    flattens them (a nested default built by a factory gives that instance's values)."""
    hints = typing.get_type_hints(cls)
    found: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in NOT_SETTINGS:
            continue
        if instance is not None:
            default = getattr(instance, field.name)
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = None if field.default is dataclasses.MISSING else field.default
        if dataclasses.is_dataclass(hints[field.name]):
            found |= command_defaults(hints[field.name], default)
        else:
            found[flag(field.name)] = default
    return found


def settings(command: Any) -> dict[str, Any]:
    """A parsed command's settings, one per flag, as YAML holds them (paths as text)."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(command):
        value = getattr(command, field.name)
        if dataclasses.is_dataclass(value):
            values |= settings(value)
        elif field.name not in NOT_SETTINGS:
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
    defaults = command_defaults(cls)
    args: list[str] = []
    for key, value in read_settings(path).items():
        name = flag(str(key))
        if name not in defaults:
            raise ConfigError(f"{path}: unknown key '{key}' (the keys are {cls.__name__}'s flags: see --help)")
        args += flag_args(name, value, defaults[name], path)
    return args


def flag_args(name: str, value: Any, default: Any, path: Path) -> list[str]:
    """``--name value`` as the parser takes it: a bool as its switch (a file can only turn a switch
    away from its default, as the command line can), a list as its items, null as None."""
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


def flag_value(args: list[str], name: str) -> str | None:
    """The value of the last ``name VALUE`` or ``name=VALUE`` in ``args`` (the one the parser keeps)."""
    found = None
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            found = args[index + 1]
        elif arg.startswith(name + "="):
            found = arg.partition("=")[2]
    return found


def expand_config(args: list[str], cls: type) -> list[str]:
    """``args`` with ``--config FILE``'s flags placed first, so flags given on the command line win
    (``--config FILE`` itself stays, for the command's own field)."""
    path = flag_value(args, CONFIG_FLAG)
    return args if path is None else [*config_args(Path(path), cls), *args]


def expand_preset(args: list[str]) -> list[str]:
    """``args`` with ``--preset NAME``'s flags placed first, so flags given on the command line (or
    read from a config file) win; ``--preset NAME`` itself stays, and the run records it."""
    from vprompt.presets import get_preset

    name = flag_value(args, PRESET_FLAG)
    return args if name is None else [*get_preset(name).flags(flag_value(args, "--method")), *args]


def expand(args: list[str], cls: type, presets: bool) -> list[str]:
    """A command's arguments with its config file's and its preset's flags in front. A preset and
    a config file on one command line would mix two sets of settings, so that is refused."""
    if presets and flag_value(args, PRESET_FLAG) is not None and flag_value(args, CONFIG_FLAG) is not None:
        raise ConfigError(f"{PRESET_FLAG} and {CONFIG_FLAG} together would mix two sets of settings: put "
                          f"'preset: NAME' in the file, or give the preset without {CONFIG_FLAG}")
    if any(field.name == FIELD for field in dataclasses.fields(cls)):
        args = expand_config(args, cls)
    return expand_preset(args) if presets else args
