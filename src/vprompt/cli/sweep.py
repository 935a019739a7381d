"""`vprompt sweep` (the tuning protocol) and `vprompt report` (results beside the papers')."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

import tyro
from tyro.conf import Positional

from vprompt.cli.args import (TASK_KINDS, BackboneArgs, ColumnArgs, ConfigFile, Progress, RayArgs, parse_key_values,
                              refuse_preset, refuse_single_seed)
from vprompt.errors import ConfigError
from vprompt.methods import DEFAULT_METHOD, make_config
from vprompt.sweep import Protocol
from vprompt.train import TrainConfig
from vprompt.validation import Existing, NonEmpty, Validated, Writable, above, at_least

GRID = Protocol()
"""The VTAB-1k protocol's grid and seeds, the sweep's defaults."""


@dataclass
class Sweep(Validated):
    data: Annotated[list[str], NonEmpty(), tyro.conf.arg(help=f"Tasks (or a folder of task folders), each {TASK_KINDS}.")]
    out: Annotated[Path, Writable()]
    """Sweep folder: runs/TASK/METHOD/{grid/POINT,seedS}, results.json, results.md."""
    backbone: BackboneArgs
    config_file: ConfigFile = None
    """A config.yaml written by an earlier run (or by hand): its settings, then the flags given here, which win."""
    methods: Annotated[list[str], NonEmpty()] = field(default_factory=lambda: [DEFAULT_METHOD])
    method_arg: list[str] = field(default_factory=list)
    """Options for every method as KEY=VALUE (e.g. prompt_dropout=0.1)."""
    base_lrs: Annotated[list[Annotated[float, above(0)]], NonEmpty()] = field(default_factory=lambda: list(GRID.base_lrs))
    weight_decays: Annotated[list[Annotated[float, at_least(0)]], NonEmpty()] = field(
        default_factory=lambda: list(GRID.weight_decays))
    prompt_lens: list[Annotated[int, at_least(1)]] = field(default_factory=list)
    """Prompt lengths searched for prompted methods (VPT: 1 5 10 50 100 200); empty: the method default."""
    seeds: Annotated[list[Annotated[int, at_least(0)]], NonEmpty()] = field(default_factory=lambda: list(GRID.seeds))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=100, batch_size=64, warmup_epochs=10))
    """Shared training settings (base_lr, weight_decay and seed come from the grid)."""
    runner: RayArgs = field(default_factory=RayArgs)
    download: bool = False
    """Fetch torchvision sets and Hugging Face datasets that are not on disk (once, before the runs start)."""
    columns: ColumnArgs = field(default_factory=ColumnArgs)
    """Image and label columns of every Hugging Face dataset in --data."""
    records: Annotated[Path, Writable()] | None = None
    """Folder of run records, e.g. one kept in git: a run recorded there is read back instead of
    rerun, every finished run is recorded, so a sweep continues on another machine."""
    progress: Progress = True

    def __post_init__(self) -> None:
        super().__post_init__()
        refuse_preset(self.train, "sweep")
        for method in self.methods:
            make_config(method, **self.options)

    @cached_property
    def options(self) -> dict[str, Any]:
        """--method-arg, parsed once."""
        return parse_key_values(self.method_arg)

    def run(self) -> None:
        from vprompt.cli.config_file import write_config
        from vprompt.records import open_records
        from vprompt.sweep import run_sweep

        refuse_single_seed(self.train)
        protocol = Protocol(self.base_lrs, self.weight_decays, self.prompt_lens or None, self.seeds, self.train)
        executor = self.runner.executor()
        tasks = [self.columns.on(task) for task in self.data]
        run_sweep(tasks, {m: dict(self.options) for m in self.methods}, self.backbone.spec(), protocol, self.out,
                  executor, self.progress, download=self.download,
                  records=open_records(self.records, self.train.mixed_precision))
        write_config(self, self.out)
        print((self.out / "results.md").read_text())
        print(f"results: {self.out / 'results.json'}")


@dataclass
class Report(Validated):
    results: Positional[list[Annotated[Path, Existing()]]] = field(default_factory=list)
    """Results folders (or results.json files) of sweeps and reproductions."""
    out: Annotated[Path, Writable()] | None = None
    """Where report.md, report.json and report.png go (default: the first results folder)."""
    papers: bool = False
    """Print the quoted paper numbers (the data vprompt compares with) and stop."""

    def run(self) -> None:
        from vprompt.compare import papers_table, write_report

        if self.papers:
            print(papers_table())
            return
        if not self.results:
            raise ConfigError("name at least one results folder (or pass --papers)")
        out = self.out or (self.results[0] if self.results[0].is_dir() else self.results[0].parent)
        print(write_report(self.results, out))
        print(f"report: {out / 'report.md'}, plot: {out / 'report.png'}")
