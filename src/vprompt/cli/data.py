"""`vprompt data`: write the synthetic suite, check a prepared folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Union

from tyro.conf import Positional, subcommand

from vprompt.cli.args import Group, Progress
from vprompt.data.synthetic import synthetic_task_names
from vprompt.validation import NonEmpty, Validated, Writable, at_least


@dataclass
class Synth(Validated):
    """Write the offline synthetic suite in the VTAB-1k file-list layout."""

    out: Positional[Annotated[Path, Writable()]]
    """Folder for the suite: one task folder each, plus suite.json."""
    seed: Annotated[int, at_least(0)] = 0
    """Same seed, same files."""
    image_size: Annotated[int, at_least(16)] = 32
    """Side of the square images, in pixels (at least 16)."""
    test_size: Annotated[int, at_least(1)] = 500
    """Images in each test split (train800 / val200 are fixed by the layout)."""
    tasks: Annotated[list[str], NonEmpty()] | None = None
    """Tasks to write (default: all): objects textures digits cells sprites_location sprites_orientation count."""
    progress: Progress = True

    def __post_init__(self) -> None:
        super().__post_init__()
        synthetic_task_names(self.tasks)

    def run(self) -> None:
        from vprompt.data import write_synthetic_suite

        written = write_synthetic_suite(self.out, seed=self.seed, image_size=self.image_size,
                                        test_size=self.test_size, tasks=self.tasks, progress=self.progress)
        print(f"wrote {len(written)} tasks to {self.out}: {', '.join(p.name for p in written)}")


@dataclass
class Check(Validated):
    """Verify a task folder or a folder of tasks, and say precisely what is wrong."""

    path: Positional[str]
    """A task folder (split files, or an image folder of class sub-folders), a folder of task folders, or
    hf:PATH_OR_NAME[:CONFIG] (a Hugging Face dataset)."""
    progress: Progress = True

    def run(self) -> None:
        from vprompt.data import check_dataset

        report = check_dataset(self.path, progress=self.progress)
        print("\n".join(report.lines()))
        if not report.ok:
            raise SystemExit(1)


@dataclass
class Data(Group):
    command: Union[Annotated[Synth, subcommand("synth")], Annotated[Check, subcommand("check")]]
