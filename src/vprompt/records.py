"""Run records: a results table's evidence, one small JSON file per finished run, kept in the repository.

Why: the tables behind the docs take CPU-hours, more than one session on two cores, and run folders
do not survive a change of machine. A recipe given a records folder (``--records``) reads a finished
run's record back instead of rerunning it and writes a record for every run it finishes, so a table
grows across machines and days and is rebuilt from what is committed. A record holds the run's
settings (what makes it this run: data, backbone weights, method, schedule, seed), its metrics, the
precision it trained in, the machine (CPU flags, GPU) and the vprompt version and commit. A folder
holds one precision: a run that would add another is refused before it starts (fp32 keeps every
machine comparable).
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vprompt import zoo
from vprompt.backbones import BackboneSpec
from vprompt.checkpoint import write_json
from vprompt.errors import ConfigError
from vprompt.hardware import available_cpus, cpu_has_amx_bf16, cpu_has_avx512_bf16, resolve_precision
from vprompt.progress import say
from vprompt.version import VERSION

RECORD_FORMAT = 1


def precision_name(mixed_precision: str) -> str:
    """How a record names the precision ``mixed_precision`` resolves to here: fp32, bf16 or fp16."""
    resolved = resolve_precision(mixed_precision)
    return "fp32" if resolved == "no" else resolved


def canonical(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings as a record keeps them: plain JSON (paths as text), and a whole-number float as
    the int it equals, so ``--base-lrs 50`` and a default of ``50.0`` name the same run."""
    def plain(value: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, list):
            return [plain(item) for item in value]
        return value

    return plain(json.loads(json.dumps(settings, default=str)))


def settings_digest(settings: dict[str, Any]) -> str:
    """A short digest of the settings (key order ignored): the record's file name."""
    text = json.dumps(canonical(settings), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (first 16 hex digits): weights and split lists are named by content,
    so a rebuilt zoo model or a regenerated suite never reads the old records back."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def backbone_identity(spec: BackboneSpec) -> dict[str, Any]:
    """The spec, plus the digest of the weights file behind a zoo name or a checkpoint (which then
    replaces the checkpoint's path: another machine keeps it elsewhere)."""
    identity = spec.to_dict()
    weights: str | None = spec.checkpoint
    if zoo.is_zoo_name(spec.name):
        weights = zoo.find_card(spec.name)["weights"]
    if weights and Path(weights).is_file():
        identity["weights_sha256"] = file_digest(Path(weights))
        identity.pop("checkpoint", None)
    return identity


def task_identity(task: str, splits: tuple[str, ...]) -> dict[str, Any]:
    """The task's name and, for a VTAB-1k-layout folder, the digests of the split lists a run reads
    (their labels differ between suite seeds) and of its ``task.json`` (a synthetic suite's seed and
    image size); other data specs (torchvision, Hugging Face, FGVC, image folders) are named as
    given, with no digest of their content."""
    from vprompt.data.filelist import SPLITS, TASK_FILE, split_file

    folder = Path(task)
    if not (folder.is_dir() and set(splits) <= set(SPLITS)):
        return {"task": task}
    lists = {f"{split}_sha256": split_file(folder, split) for split in splits}
    if (folder / TASK_FILE).is_file():
        lists["task_json_sha256"] = folder / TASK_FILE
    if not all(path.is_file() for path in lists.values()):
        return {"task": task}
    return {"task": folder.name} | {key: file_digest(path) for key, path in lists.items()}


@functools.cache
def source_commit() -> str | None:
    """The git commit of the source tree vprompt runs from (with ``+dirty`` when ``src`` or
    ``benchmarks`` has changes), or None outside a checkout: a record says which code made it."""
    root = Path(__file__).resolve().parents[2]
    if root / "src" / "vprompt" != Path(__file__).resolve().parent:  # an installed copy, not a checkout
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "src",
                                "benchmarks"], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


@functools.cache  # the same for every record a process writes
def machine() -> dict[str, Any]:
    """What ran it: CPU model, cores, bf16 flags (AMX makes ``auto`` train in bf16), and the GPU if any."""
    import torch

    info: dict[str, Any] = {"cpu": cpu_model(), "cores": available_cpus(), "amx_bf16": cpu_has_amx_bf16(),
                            "avx512_bf16": cpu_has_avx512_bf16()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def cpu_model() -> str:
    """The CPU's model name (Linux), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass
class RunRecords:
    """The records folder of one table, at the one precision its runs train in.

    Args:
        folder: Where the records live (``docs/results/<table>/runs`` for a committed table).
        precision: fp32, bf16 or fp16 (``precision_name``); records of another are refused.
    """

    folder: Path
    precision: str
    reused: int = field(default=0, init=False)
    """Runs read back so far."""
    added: int = field(default=0, init=False)
    """Runs recorded so far."""

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        others = sorted({record["precision"] for record in self.records()} - {self.precision})
        if others:
            raise ConfigError(f"{self.folder} holds {', '.join(others)} records and this run trains in "
                              f"{self.precision}: a table uses one precision (VPROMPT_AUTO_PRECISION=no makes auto fp32; "
                              f"or give another --records folder)")

    @property
    def mixed_precision(self) -> str:
        """The folder's precision as ``TrainConfig.mixed_precision`` names it: the runs are pinned to it,
        so a worker whose ``auto`` resolves otherwise (another machine, a Ray task without a GPU) cannot
        record another."""
        return "no" if self.precision == "fp32" else self.precision

    def records(self) -> list[dict[str, Any]]:
        """Every record in the folder, in file-name order."""
        if not self.folder.is_dir():
            return []
        return [json.loads(path.read_text()) for path in sorted(self.folder.glob("*.json"))]

    def path(self, settings: dict[str, Any]) -> Path:
        return self.folder / f"{settings_digest(settings)}.json"

    def find(self, settings: dict[str, Any]) -> dict[str, Any] | None:
        """The metrics of the run with exactly these settings, or None if none is recorded.

        Args:
            settings: What makes the run this run (JSON-serialisable).

        Returns:
            The recorded metrics, or None.
        """
        path = self.path(settings)
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        if record.get("format") != RECORD_FORMAT or record["settings"] != canonical(settings):
            raise ConfigError(f"{path} records other settings than its name says (or another format): "
                              "remove it and rerun")
        self.reused += 1
        return record["metrics"]

    def add(self, settings: dict[str, Any], metrics: dict[str, Any], seconds: float | None = None) -> Path:
        """Write the record of a finished run.

        Args:
            settings: What makes the run this run.
            metrics: What it measured.
            seconds: Its wall-clock time, if known.

        Returns:
            The record's path.
        """
        path = self.path(settings)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(path, {"format": RECORD_FORMAT, "settings": canonical(settings), "metrics": metrics,
                          "precision": self.precision, "seconds": None if seconds is None else round(seconds, 1),
                          "machine": machine(), "vprompt": VERSION, "commit": source_commit(),
                          "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        self.added += 1
        return path

    def reuse_or_run(self, settings: dict[str, Any], run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The recorded metrics of these settings, or ``run()``'s, recorded once it returns.

        Args:
            settings: What makes the run this run.
            run: Computes the metrics when no record has them.

        Returns:
            The metrics.
        """
        found = self.find(settings)
        if found is not None:
            return found
        started = time.perf_counter()
        metrics = run()
        self.add(settings, metrics, time.perf_counter() - started)
        return metrics

    def summary(self) -> str:
        """One line for the end of a recipe: how many runs were read back and how many recorded."""
        return f"[records] {self.reused} runs read back from {self.folder}, {self.added} new recorded"


def recorded_or_run(records: RunRecords | None, settings: dict[str, Any],
                    run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``records.reuse_or_run(settings, run)``, or just ``run()`` where no records folder was given."""
    return run() if records is None else records.reuse_or_run(settings, run)


def say_summary(records: RunRecords | None, progress: bool) -> None:
    """End a recipe with the records' summary line; nothing where no records folder was given."""
    if records is not None:
        say(records.summary(), progress)


def open_records(folder: Path | str | None, mixed_precision: str) -> RunRecords | None:
    """The records of ``folder`` at the precision ``mixed_precision`` resolves to, or None without one."""
    return None if folder is None else RunRecords(Path(folder), precision_name(mixed_precision))
