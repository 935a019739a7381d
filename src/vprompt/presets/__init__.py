"""Settings to start from: published per-task settings, kept as data with their source.

Each JSON file in this package is one source: who published the settings (cited), the backbone
and recipe they were found with, and per method and task the learning rate, weight decay and
prompt length the source picked, beside the accuracy it reports. A preset is named
``SOURCE/METHOD/TASK`` (``petl-vision/vpt-deep/cifar``); ``vprompt presets`` lists them and
``vprompt train --preset NAME`` starts from one (``vprompt.cli.config_file`` turns it into flags).

A source's learning rate is either ``base`` (vprompt's base_lr, for a batch of 256) or
``applied`` (the rate the optimizer saw), converted here to base_lr = lr × 256 / batch size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from vprompt.errors import ConfigError

@dataclass(frozen=True)
class Source:
    """Where a family of presets comes from, and what its numbers mean."""

    name: str
    citation: str
    url: str
    commit: str | None
    backbone: str
    accuracy: str
    """What the reported accuracy is (split, epoch, seeds)."""
    search: str
    """The grid the source searched to pick each setting."""
    not_reproduced: str | None
    """What of the source's recipe vprompt's trainer does differently."""


@dataclass(frozen=True)
class Preset:
    """One method's settings for one task, as a source published them."""

    source: Source
    method: str
    task: str
    train: dict[str, Any]
    """TrainConfig fields: optimizer, base_lr, weight_decay, epochs, batch_size, warmup_epochs."""
    options: dict[str, Any]
    """Method options: prompt_len, prompt_dropout where the source used them."""
    accuracy: float | None
    """What the source reports for this setting (a fraction), see ``source.accuracy``."""

    @property
    def name(self) -> str:
        return f"{self.source.name}/{self.method}/{self.task}"

    def flags(self, method: str | None = None) -> list[str]:
        """The preset as `vprompt train` flags; for another ``method`` than its own, without its
        method options (another method may not take them)."""
        options = self.options if method in (None, self.method) else {}
        settings = {"method": self.method, **self.train, **options}
        return [item for key, value in settings.items() for item in (f"--{key.replace('_', '-')}", str(value))]

    def mismatches(self, method: str, task: str) -> list[str]:
        """One line for each way a run differs from what this preset was found for (method, task)."""
        found = [("method", self.method, method), ("task", self.task, task)]
        return [f"preset {self.name} was found for {what} {theirs}; this run's {what} is {ours}"
                for what, theirs, ours in found if theirs != ours]


def read_source(data: dict[str, Any]) -> list[Preset]:
    """The presets of one source file."""
    source = Source(data["source"], data["citation"], data["url"], data.get("commit"), data["backbone"],
                    data["accuracy"], data["search"], data.get("not_reproduced"))
    recipe = data["recipe"]
    scale = 256 / recipe["batch_size"] if data["lr"] == "applied" else 1.0
    presets = []
    for method, block in data["methods"].items():
        for task, entry in block["tasks"].items():
            train = {**recipe, "base_lr": round(entry["lr"] * scale, 10), "weight_decay": entry["weight_decay"]}
            options = {**block["options"], **({"prompt_len": entry["prompt_len"]} if "prompt_len" in entry else {})}
            presets.append(Preset(source, method, task, train, options, entry.get("accuracy")))
    return presets


@cache
def all_presets() -> dict[str, Preset]:
    """Every preset shipped with vprompt, by name."""
    files = sorted(f for f in resources.files(__package__).iterdir() if f.name.endswith(".json"))
    return {p.name: p for f in files for p in read_source(json.loads(f.read_text(encoding="utf-8")))}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name is one line pointing at `vprompt presets`."""
    presets = all_presets()
    if name in presets:
        return presets[name]
    near = [p for p in presets if p.startswith(name.rstrip("/") + "/") or p.endswith("/" + name)][:5]
    hint = f"; did you mean {', '.join(near)}?" if near else "; `vprompt presets` lists them"
    raise ConfigError(f"unknown preset {name!r} (names are SOURCE/METHOD/TASK){hint}")
