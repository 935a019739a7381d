"""`vprompt transfer` (multi-source prompt transfer) and `vprompt bank` (its sources)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Union

import tyro
from tyro.conf import Positional, subcommand

from vprompt.cli.args import TASK_KINDS, ColumnArgs, ConfigFile, Group, Progress, PromptWeights, refuse_preset, refuse_single_seed
from vprompt.transfer import TransferConfig, check_methods, transfer_method_names
from vprompt.validation import Existing, NonEmpty, Validated, Writable, at_least, at_most


def transfer_choices() -> str:
    """The --methods help, from the registry each time a parser is built."""
    return f"Any of: {' '.join(transfer_method_names())}."


@dataclass
class Transfer(Validated):
    bank: Annotated[Path, Existing()]
    """Prompt bank folder (`vprompt bank add`); its prompts are the sources and fix the backbone."""
    target: Annotated[str, tyro.conf.arg(help=f"Target task: {TASK_KINDS}.")]
    out: Annotated[Path, Writable()]
    """Folder for source_scores.json, METHOD/seedS runs and results.json."""
    config_file: ConfigFile = None
    """A config.yaml written by an earlier run (or by hand): its settings, then the flags given here, which win."""
    methods: Annotated[list[str], NonEmpty(), tyro.conf.arg(help=transfer_choices())] = field(
        default_factory=lambda: ["hgprompt"])
    sources: list[str] = field(default_factory=list)
    """Bank entries to use (default: all); entries trained on the target task itself are always left out."""
    seeds: Annotated[list[Annotated[int, at_least(0)]], NonEmpty()] = field(default_factory=lambda: [0])
    """Seeds of the target runs (--seed does not apply here)."""
    config: TransferConfig = field(default_factory=TransferConfig)
    columns: ColumnArgs = field(default_factory=ColumnArgs)
    rank_only: bool = False
    """Only rank the sources by H-score on the target training set (K forward passes) and stop."""
    progress: Progress = True
    backbone_weights: PromptWeights = field(default_factory=PromptWeights)

    def __post_init__(self) -> None:
        super().__post_init__()
        refuse_preset(self.config.tune, "transfer")
        check_methods(self.methods)

    def run(self) -> None:
        from vprompt.bank import list_bank, select_entries
        from vprompt.cli.config_file import write_config
        from vprompt.report import markdown_table
        from vprompt.transfer import rank_sources, transfer_to

        refuse_single_seed(self.config.tune)
        entries = select_entries(list_bank(self.bank), self.sources or None)
        if self.rank_only:
            ranking = rank_sources(entries, self.columns.on(self.target), self.config, self.out, self.progress,
                                   self.backbone_weights.weights)
            print(markdown_table(ranking, ["source", "h_score", "probe_test_acc"]))
            return
        target = self.columns.on(self.target)
        rows = transfer_to(entries, target, self.methods, self.seeds, self.config, self.out, self.progress,
                           self.backbone_weights.weights)
        write_config(self, self.out)
        print(markdown_table(rows, ["target", "method", "seed", "test_acc", "weights"]))
        print(f"results: {self.out / 'results.json'}")


@dataclass
class BankAdd(Validated):
    """File a trained prompt (a checkpoint folder or a training run's folder) in a prompt bank."""

    bank: Positional[Annotated[Path, Writable()]]
    """Prompt bank folder (created when new)."""
    prompt: Positional[str]
    """A prompt checkpoint folder, the folder of a `vprompt train` run, or hf://ORG/NAME[@REVISION]."""
    name: Annotated[str, NonEmpty()] | None = None
    """Entry name (default: the task, else the name of the folder given)."""
    task: Annotated[str, NonEmpty()] | None = None
    """The task the prompt was trained on (default: the entry name)."""
    accuracy: Annotated[float, at_least(0), at_most(1)] | None = None
    """Its accuracy on that task (default: the run's last evaluated accuracy)."""
    replace: bool = False
    """Overwrite an entry of the same name."""

    def run(self) -> None:
        from vprompt.bank import add_to_bank

        entry = add_to_bank(self.bank, self.prompt, self.name, self.task, self.accuracy, self.replace)
        print(f"added '{entry.name}' to {self.bank}: {json.dumps(entry.card)}")


@dataclass
class BankList(Validated):
    """Print the cards of a prompt bank."""

    bank: Positional[Annotated[Path, Existing()]]
    """Prompt bank folder."""
    json: bool = False
    """Print the cards as JSON."""

    def run(self) -> None:
        from vprompt.bank import list_bank
        from vprompt.report import markdown_table

        cards = [entry.card for entry in list_bank(self.bank)]
        if self.json:
            print(json.dumps(cards, indent=2))
        elif not cards:
            print(f"{self.bank} holds no prompts yet")
        else:
            print(markdown_table(cards, ["name", "task", "method", "prompt_len", "backbone", "num_classes", "accuracy"]))


@dataclass
class Bank(Group):
    command: Union[Annotated[BankList, subcommand("list")], Annotated[BankAdd, subcommand("add")]]
