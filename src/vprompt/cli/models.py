"""`vprompt models`: the compatibility matrix."""

from __future__ import annotations

import json
from dataclasses import dataclass

from vprompt.errors import ConfigError


@dataclass
class Models:
    json: bool = False
    """Print the matrix as JSON."""
    markdown: bool = False
    """Print the markdown table the README carries."""
    check: bool = False
    """Also run every method on a tiny random-init build of each family (offline, about a minute)."""

    def run(self) -> None:
        from vprompt.families.matrix import checked, matrix, mismatches
        from vprompt.report import matrix_lines, matrix_markdown

        rows = checked(matrix()) if self.check else matrix()
        if self.json:
            print(json.dumps(rows, indent=2))
        else:
            print(matrix_markdown(rows) if self.markdown else "\n".join(matrix_lines(rows)))
        failures = mismatches(rows)
        if failures:
            raise ConfigError(f"{len(failures)} methods behave unlike the matrix says, first: {failures[0]}")
