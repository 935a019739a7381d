"""The offline model zoo: source models shipped as package data, looked up by ``zoo:NAME``.

Each model is two files side by side: ``NAME.safetensors`` (the weights) and ``NAME.json`` (its
card: the timm architecture and overrides, the recipe and seed, source / clean / robust accuracy,
build time). The cards are data, so listing the zoo never loads a network. Extra folders of
models (e.g. your own builds) can be added with the ``VPROMPT_ZOO_PATH`` environment variable
(folders separated by ``os.pathsep``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vprompt.errors import ConfigError
from vprompt.names import ZOO_PREFIX as PREFIX

PACKAGE_DIR = Path(__file__).parent
CARD_KEYS = ("name", "arch", "kwargs", "num_classes")


def zoo_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("VPROMPT_ZOO_PATH", "").split(os.pathsep) if p]
    return [PACKAGE_DIR, *extra]


def is_zoo_name(name: str) -> bool:
    return name.startswith(PREFIX)


def list_cards() -> list[dict[str, Any]]:
    """Every card found, first folder first; a name in a later folder never shadows an earlier one."""
    cards: dict[str, dict[str, Any]] = {}
    for folder in zoo_dirs():
        for path in sorted(folder.glob("*.json")):
            card = read_card(path)
            cards.setdefault(card["name"], card | {"weights": str(path.with_suffix(".safetensors"))})
    return list(cards.values())


def read_card(path: Path) -> dict[str, Any]:
    try:
        card = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"zoo card {path} is unreadable: {exc}") from exc
    missing = [key for key in CARD_KEYS if key not in card]
    if missing:
        raise ConfigError(f"zoo card {path} lacks {', '.join(missing)}")
    return card


def find_card(name: str) -> dict[str, Any]:
    """The card of ``zoo:NAME`` (or plain NAME), with the path of its weights."""
    bare = name.removeprefix(PREFIX)
    cards = {card["name"]: card for card in list_cards()}
    if bare not in cards:
        available = ", ".join(sorted(cards)) or "none yet: build them with `vprompt zoo build`"
        raise ConfigError(f"unknown zoo model '{bare}'; available: {available}")
    card = cards[bare]
    if not Path(card["weights"]).is_file():
        raise ConfigError(f"zoo model '{bare}' has a card but no weights file {card['weights']}")
    return card
