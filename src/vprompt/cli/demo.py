"""`vprompt demo`: the offline tour."""

from __future__ import annotations

from dataclasses import dataclass, field

from vprompt.cli.args import Progress
from vprompt.recipes.demo import DemoConfig


@dataclass
class Demo:
    config: DemoConfig = field(default_factory=DemoConfig)
    progress: Progress = True

    def run(self) -> None:
        from vprompt.recipes.demo import closing_lines, demo_table, run_demo

        rows = run_demo(self.config, self.progress)
        print(demo_table(rows, self.config))
        print(f"\nresults: {self.config.out / 'results.json'}\n\n{closing_lines()}")
