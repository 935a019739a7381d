"""Recipe-level helpers shared by the reproductions: which task folders a recipe runs on."""

from __future__ import annotations

from pathlib import Path

from vprompt.data import write_synthetic_suite
from vprompt.data.filelist import task_folders
from vprompt.errors import DataError


def task_dirs(out: Path, data: Path | None, tasks: list[str] | None) -> list[Path]:
    """The task folders a recipe runs on: those in ``data`` (a folder of VTAB-1k-layout task
    folders), or the offline synthetic suite written to ``out/data``; only ``tasks`` if given."""
    if data is None:
        return write_synthetic_suite(out / "data", tasks=tasks, progress=False)
    chosen = [p for p in task_folders(data) if tasks is None or p.name in tasks]
    if not chosen:
        raise DataError(f"no task folders{' named ' + ', '.join(tasks) if tasks else ''} in {data}")
    return chosen
