"""`vprompt presets`: the settings `vprompt train --preset NAME` starts from."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass
class Presets:
    method: str | None = None
    """Only this method's presets (e.g. vpt-deep)."""
    task: str | None = None
    """Only the presets found on this task (e.g. cifar)."""
    source: str | None = None
    """Only this source's presets (petl-vision, vprompt-demo)."""
    json: bool = False
    """Print every preset's flags and reported accuracy as JSON."""

    def run(self) -> None:
        from vprompt.errors import ConfigError
        from vprompt.presets import all_presets
        from vprompt.report import preset_markdown

        wanted = {"method": self.method, "task": self.task, "source": self.source}
        chosen = [p for p in all_presets().values()
                  if all(value is None or value == (p.source.name if key == "source" else getattr(p, key))
                         for key, value in wanted.items())]
        if not chosen:
            given = ", ".join(f"--{key} {value}" for key, value in wanted.items() if value is not None)
            raise ConfigError(f"no preset matches {given}")
        if self.json:
            print(json.dumps([{"name": p.name, "flags": p.flags(), "accuracy": p.accuracy} for p in chosen], indent=2))
        else:
            print(preset_markdown(chosen))
