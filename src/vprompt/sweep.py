"""The tuning protocol of VPT and VAPT, run locally or on a Ray cluster, resumable.

For every task × method: each grid point (base_lr × weight_decay × prompt length) is trained on
the task's tuning split (train800 for VTAB-1k) and scored on its validation split (val200); the
best point is retrained on the final-training split (train800val200) with every seed, and the
last-epoch test accuracy is reported (a grid of one point skips the tuning runs). Every run is a pure description (``Run``) with its own
folder: a finished run is read back instead of scheduled, an interrupted one resumes from its
last checkpoint, so a sweep killed at any moment continues where it stopped. All grid runs of all
tasks and methods are independent and go out at once; then all seed runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import socket
import statistics
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

from vprompt.backbones import BackboneSpec
from vprompt.data.registry import open_task
from vprompt.errors import ConfigError
from vprompt.failures import one_line
from vprompt.methods import get_method
from vprompt.progress import Tally, each, say
from vprompt.hardware import resolve_precision
from vprompt.records import RunRecords, backbone_identity, canonical, say_summary, task_identity
from vprompt.report import markdown_table, mean_of_group_means, mean_std, spread_text
from vprompt.runs import train_on_task
from vprompt.checkpoint import FINAL, latest_checkpoint, write_json
from vprompt.train import SPEED_ONLY, TrainConfig
from vprompt.validation import NonEmpty, Validated, above, at_least



@dataclass
class Protocol(Validated):
    """The grid, the seeds and the fixed training settings (defaults: the VTAB-1k protocol)."""

    base_lrs: Annotated[list[Annotated[float, above(0)]], NonEmpty()] = field(
        default_factory=lambda: [50, 25, 10, 5, 2.5, 1, 0.5, 0.25, 0.1, 0.05])
    weight_decays: Annotated[list[Annotated[float, at_least(0)]], NonEmpty()] = field(
        default_factory=lambda: [0.01, 1e-3, 1e-4, 0.0])
    prompt_lens: Annotated[list[Annotated[int, at_least(1)]], NonEmpty()] | None = None
    """Prompt lengths to search for prompted methods (None: the method's own option)."""
    seeds: Annotated[list[Annotated[int, at_least(0)]], NonEmpty()] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    train: TrainConfig = field(default_factory=TrainConfig)
    """Settings shared by every run; base_lr, weight_decay and seed are set by the protocol."""


@dataclass(frozen=True)
class Run:
    """One training run: everything a worker needs, and nothing it must share."""

    task: str
    backbone: BackboneSpec
    method: str
    options: dict[str, Any]
    config: TrainConfig
    out_dir: Path
    train_split: str
    eval_split: str


RUN_FILE = "run.json"
"""In every run folder: what run it holds (its settings and precision), so it is never read back as another."""
NOT_LEARNED = ("mixed_precision", *SPEED_ONLY)
"""TrainConfig fields left out of a run's settings: how fast it goes and where it reports, and the
precision, which a run folder and a records folder keep on their own."""


def learned_settings(config: TrainConfig) -> dict[str, Any]:
    """The TrainConfig fields that change what a run learns."""
    return {key: value for key, value in asdict(config).items() if key not in NOT_LEARNED}


def run_settings(run: Run) -> dict[str, Any]:
    """What makes ``run`` this run, for its record: data, backbone weights, method, schedule, splits."""
    return {"data": task_identity(run.task, (run.train_split, run.eval_split)),
            "backbone": backbone_identity(run.backbone), "method": run.method, "options": run.options,
            "train": learned_settings(run.config), "train_split": run.train_split, "eval_split": run.eval_split}


def claim_folder(folder: Path, settings: dict[str, Any]) -> None:
    """Write what ``folder`` holds (``RUN_FILE``) before anything in it is trained or read back; a
    folder that holds work of other settings is refused, since reading it back would pass its
    results off as these settings'."""
    settings = canonical(settings)
    recorded = folder / RUN_FILE
    if recorded.is_file() and json.loads(recorded.read_text()) != settings:
        raise ConfigError(f"{folder} holds a run with other settings (data, backbone, method, training or "
                          "precision); choose another --out or remove it")
    folder.mkdir(parents=True, exist_ok=True)
    write_json(recorded, settings)


def claim_run_dir(run: Run) -> None:
    """Claim ``run``'s folder for its settings and the precision it trains in here."""
    claim_folder(run.out_dir, run_settings(run) | {"precision": resolve_precision(run.config.mixed_precision)})


def finished_accuracy(run: Run) -> float | None:
    """The last-epoch accuracy of a run that finished (None if it did not), once its folder is
    claimed for it; a finished run of another precision is refused."""
    metrics = run.out_dir / "metrics.json"
    if not ((run.out_dir / FINAL).is_dir() and metrics.is_file()):
        return None
    claim_run_dir(run)
    last, precision = json.loads(metrics.read_text())[-1], resolve_precision(run.config.mixed_precision)
    if last.get("precision", "no") != precision:
        raise ConfigError(f"{run.out_dir} was trained in {last['precision']}, this run would train in "
                          f"{precision}: choose another --out or remove it")
    return last["eval_acc"]


def execute(run: Run) -> float:
    """Train ``run`` (resuming a broken one) and return its last-epoch accuracy on ``eval_split``."""
    done = finished_accuracy(run)
    if done is not None:
        return done
    claim_run_dir(run)
    row = train_on_task(run.task, run.backbone, run.method, run.options, run.config, run.out_dir,
                        run.train_split, run.eval_split, resume=latest_checkpoint(run.out_dir) is not None,
                        progress=False, eval_every=run.config.epochs)
    return row["eval_acc"]


Finished = Callable[[int, float], None]
"""Told the index (in the runs handed over) and the accuracy of each run as it finishes."""


class LocalExecutor:
    """Runs one after another in this process."""

    def map(self, runs: Sequence[Run], progress: bool, finished: Finished | None = None) -> list[float]:
        results = []
        for index, run in enumerate(each(runs, "runs", progress, run_name)):
            results.append(execute(run))
            if finished is not None:
                finished(index, results[-1])
        return results


class RayExecutor:
    """Runs as Ray tasks: on a Ray instance started on this machine (``address="local"``), or on
    the cluster at ``address`` (``auto`` for the one ``ray start`` made here)."""

    def __init__(self, address: str = "local", cpus_per_run: float = 1.0, gpus_per_run: float = 0.0,
                 num_cpus: int | None = None, timeout: float = 30.0) -> None:
        import ray

        if not ray.is_initialized():
            if address == "local":
                start_local_ray(ray, num_cpus)
            else:
                connect_ray(ray, address, timeout)
        self.ray = ray
        self.remote = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=1)(_execute_on_worker)
        self.threads = max(1, int(cpus_per_run))

    def map(self, runs: Sequence[Run], progress: bool, finished: Finished | None = None) -> list[float]:
        pending = {self.remote.remote(run, self.threads): i for i, run in enumerate(runs)}
        results: list[float] = [0.0] * len(runs)
        tally = Tally(len(runs), "runs (ray)", progress)
        try:
            while pending:
                done, _ = self.ray.wait(list(pending), num_returns=1)
                index = pending.pop(done[0])
                results[index] = self.ray.get(done[0])
                if finished is not None:
                    finished(index, results[index])
                tally.done(run_name(runs[index]))
        finally:
            tally.close()
        return results


def run_name(run: Run) -> str:
    """A run as a progress line names it: its folder, which says task, method and settings."""
    return str(run.out_dir)


NO_CLUSTER_HINT = ("is 'ray start --head' running there? a cluster with token authentication needs its token "
                   "here too (~/.ray/auth_token from the head, or RAY_AUTH_TOKEN); --ray local starts one on this "
                   "machine, --ray none runs without Ray")


def start_local_ray(ray: Any, num_cpus: int | None) -> None:
    """A Ray instance on this machine; whatever stops it from starting becomes one line."""
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as exc:
        raise ConfigError(f"could not start a local Ray instance: {one_line(exc)}; "
                          "pass --ray none to run without Ray") from exc


def host_port(address: str) -> tuple[str, int] | None:
    """HOST and PORT of ``[SCHEME://]HOST:PORT`` (None for ``auto`` and other non-network addresses)."""
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def connect_ray(ray: Any, address: str, timeout: float) -> None:
    """Join the Ray cluster at ``address`` or fail in one line within about ``timeout`` seconds:
    left alone, ray.init keeps retrying an address where no cluster answers for minutes."""
    target = host_port(address)
    if target is not None:
        try:
            socket.create_connection(target, timeout=timeout).close()
        except TimeoutError:
            raise no_cluster(address, f" within {timeout:g} s") from None
        except OSError as exc:
            raise no_cluster(address, f": {exc.strerror or one_line(exc)}") from None
    use_ray_token()
    worker_log = logging.getLogger("ray._private.worker")
    worker_log.addFilter(not_in_main_thread_warning)  # the price of the thread below, not news to the user
    try:
        with ray_native_lines() as native:
            finished = call_within(lambda: ray.init(address=address, log_to_driver=False, configure_logging=False),
                                   timeout)
    except Exception as exc:
        raise ConfigError(f"could not connect to the Ray cluster at {address}: {one_line(exc)} "
                          f"({NO_CLUSTER_HINT})") from exc
    finally:
        worker_log.removeFilter(not_in_main_thread_warning)
    if not finished and "Unauthenticated" in native.getvalue():
        raise ConfigError(f"the Ray cluster at {address} uses token authentication and refused this machine's token "
                          "(none, or another): copy ~/.ray/auth_token from the head node here, or set "
                          "RAY_AUTH_TOKEN to its content")
    if not finished:
        raise no_cluster(address, f" within {timeout:g} s")


@contextlib.contextmanager
def ray_native_lines() -> Iterator[io.StringIO]:
    """Keep what Ray's C++ core writes to the process's stderr while connecting (a line per retry)
    off the user's screen, for the caller to read; ``RAY_BACKEND_LOG_LEVEL`` set by the user (who
    asks for Ray's own lines) leaves stderr alone."""
    kept = io.StringIO()
    if os.environ.get("RAY_BACKEND_LOG_LEVEL"):
        yield kept
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as lines:
        os.dup2(lines.fileno(), 2)
        try:
            yield kept
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            lines.seek(0)
            kept.write(lines.read().decode(errors="replace"))


RAY_TOKEN_FILE = Path.home() / ".ray" / "auth_token"
"""Where ``ray start --head`` keeps the cluster's token (Ray's default token path)."""


def use_ray_token() -> None:
    """Have the driver present the cluster's token, as Ray does for an address it finds itself but
    not for one it is given: ``ray start --head`` turns token authentication on and writes the token
    to ``~/.ray/auth_token`` (or ``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH`` name it). An explicit
    ``RAY_AUTH_MODE`` is left as the user set it."""
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return
    if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or RAY_TOKEN_FILE.is_file()):
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    try:  # Ray reads its config once per process: refresh it, as Ray's own token setup does
        from ray._raylet import Config

        Config.initialize("")
    except ImportError:  # a Ray without token authentication: nothing to refresh
        pass


def no_cluster(address: str, why: str) -> ConfigError:
    """The one line for an address where no cluster answered, with what to try instead."""
    return ConfigError(f"no Ray cluster answered at {address}{why} ({NO_CLUSTER_HINT})")


def not_in_main_thread_warning(record: logging.LogRecord) -> bool:
    """False for ray.init's warning that, off the main thread, it sets no SIGTERM handler."""
    return "SIGTERM handler is not set" not in record.getMessage()


def call_within(call: Callable[[], Any], timeout: float) -> bool:
    """Run ``call`` in a daemon thread, re-raising what it raises; False if it has not returned
    after ``timeout`` seconds (it is left behind: a blocked ray.init cannot be cancelled)."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the caller's thread
            raised.append(exc)

    thread = threading.Thread(target=target, name="ray-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if raised:
        raise raised[0]
    return not thread.is_alive()


def _execute_on_worker(run: Run, threads: int) -> float:
    """A Ray task: as many torch threads as CPUs reserved for it, then the run."""
    import torch

    torch.set_num_threads(threads)
    return execute(run)


def make_executor(ray: str, cpus_per_run: float = 1.0, gpus_per_run: float = 0.0,
                  num_cpus: int | None = None, ray_timeout: float = 30.0) -> LocalExecutor | RayExecutor:
    """``none``: in this process; ``local``: a Ray instance on this machine; else a Ray address,
    given up on after ``ray_timeout`` seconds without an answer."""
    if ray == "none":
        return LocalExecutor()
    try:
        import ray as _  # noqa: F401
    except ImportError:
        raise ConfigError("Ray is not installed: pip install 'vprompt[ray]', or pass --ray none") from None
    return RayExecutor(ray, cpus_per_run, gpus_per_run, num_cpus, ray_timeout)


def grid_points(method: str, options: dict[str, Any],
                protocol: Protocol) -> list[tuple[float, float, dict[str, Any], str]]:
    """(base_lr, weight_decay, method options, folder name) of every grid point for ``method``;
    the name carries the prompt length only where it is searched."""
    lens = protocol.prompt_lens if protocol.prompt_lens and get_method(method).takes_prompt_len else [None]
    return [(lr, wd, options if p is None else options | {"prompt_len": p},
             f"lr{lr}_wd{wd}" + ("" if p is None else f"_p{p}"))
            for p in lens for lr in protocol.base_lrs for wd in protocol.weight_decays]


def run_protocol(tasks: Sequence[str], methods: dict[str, dict[str, Any]], backbone: BackboneSpec,
                 protocol: Protocol, out: Path, executor: LocalExecutor | RayExecutor | None = None,
                 progress: bool = True, records: RunRecords | None = None) -> list[dict[str, Any]]:
    """The whole protocol for every task × method; one row per task × method × seed.

    ``methods`` maps each method name to its fixed options. Runs live in
    ``out/runs/TASK/METHOD/{grid/POINT, seedS}``; with ``records``, recorded runs are read back
    and finished ones recorded.
    """
    executor = executor or LocalExecutor()
    finals = tuned_finals(tasks, methods, backbone, protocol, out, executor, progress, records)
    test_accs = run_all([run for _, run in finals], executor, progress, records)
    return [row | {"test_acc": acc} for (row, _), acc in zip(finals, test_accs, strict=True)]


def tuned_finals(tasks: Sequence[str], methods: dict[str, dict[str, Any]], backbone: BackboneSpec,
                 protocol: Protocol, out: Path, executor: LocalExecutor | RayExecutor, progress: bool = True,
                 records: RunRecords | None = None) -> list[tuple[dict[str, Any], Run]]:
    """The protocol's tuning runs (run, or read back), and the final runs they pick, not yet run:
    one (row, run) per task × method × seed, for a caller that does more with each final run."""
    if records is not None:  # every run in the records folder's precision, whatever auto says where it runs
        protocol = replace(protocol, train=replace(protocol.train, mixed_precision=records.mixed_precision))
    sources = {task: open_task(task) for task in tasks}
    grid: dict[tuple[str, str], list[tuple[float, float, dict[str, Any], Run]]] = {}
    for task, source in sources.items():
        for method, options in methods.items():
            folder = out / "runs" / source.info.name / method
            grid[task, method] = [
                (lr, wd, opts, Run(task, backbone, method, opts,
                                   replace(protocol.train, base_lr=lr, weight_decay=wd, seed=protocol.seeds[0]),
                                   folder / "grid" / name, source.protocol.tune_train, source.protocol.tune_val))
                for lr, wd, opts, name in grid_points(method, options, protocol)]
    # a grid of one point has nothing to pick: its tuning run is skipped (val_acc None)
    tuning = [point[3] for points in grid.values() if len(points) > 1 for point in points]
    val_accs = iter(run_all(tuning, executor, progress, records))
    finals: list[tuple[dict[str, Any], Run]] = []
    for (task, method), points in grid.items():
        scored = [(next(val_accs) if len(points) > 1 else None, lr, wd, opts) for lr, wd, opts, _ in points]
        best_val, lr, wd, opts = max(scored, key=lambda s: s[0] or 0.0)  # first best on ties: grid order
        source = sources[task]
        for seed in protocol.seeds:
            row = {"task": source.info.name, "method": method, "seed": seed, "base_lr": lr, "weight_decay": wd,
                   "prompt_len": opts.get("prompt_len"), "val_acc": best_val, "group": source.info.group,
                   "backbone": backbone.name, "image_source": source.image_source}
            finals.append((row, Run(task, backbone, method, opts,
                                    replace(protocol.train, base_lr=lr, weight_decay=wd, seed=seed),
                                    out / "runs" / source.info.name / method / f"seed{seed}",
                                    source.protocol.final_train, source.protocol.test)))
    return finals


def run_all(runs: Sequence[Run], executor: LocalExecutor | RayExecutor, progress: bool,
            records: RunRecords | None = None) -> list[float]:
    """Accuracies of ``runs``: recorded or finished ones read back, only the others handed to
    ``executor``; with ``records``, every run the executor finishes is recorded."""
    known: list[float | None] = []
    for run in runs:
        acc = recorded_accuracy(records, run) if records else None
        if acc is None and (acc := finished_accuracy(run)) is not None and records is not None:
            records.add(run_settings(run), {"acc": acc})  # finished here before records were kept
        known.append(acc)
    todo = [i for i, acc in enumerate(known) if acc is None]
    if len(todo) < len(runs):
        say(f"[sweep] {len(runs) - len(todo)} of {len(runs)} runs already finished: read back", progress)

    def record(index: int, acc: float) -> None:  # as each run finishes: a crash loses no record
        records.add(run_settings(runs[todo[index]]), {"acc": acc})

    finished = executor.map([runs[i] for i in todo], progress, record if records is not None else None)
    for i, acc in zip(todo, finished, strict=True):
        known[i] = acc
    return known


def recorded_accuracy(records: RunRecords, run: Run) -> float | None:
    """The accuracy ``records`` holds for ``run``, or None."""
    found = records.find(run_settings(run))
    return None if found is None else found["acc"]


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation of test accuracy per (task, method)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["method"]), []).append(row["test_acc"])
    summary = []
    for (task, method), accs in groups.items():
        mean, std = mean_std(accs)
        summary.append({"task": task, "method": method, "mean": mean, "std": std, "seeds": len(accs)})
    return summary


def protocol_table(rows: Sequence[dict[str, Any]]) -> str:
    """Mean ± std over seeds per task × method, then both averaging conventions: the mean over
    tasks and the mean of the group means (tasks without a group form one group "other")."""
    summary = summarise(rows)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    groups = {r["task"]: r.get("group") or "other" for r in rows}
    cell = {(s["task"], s["method"]): s for s in summary}
    lines = [{"task": t, "group": groups[t]} | {m: spread_text(cell[t, m]["mean"], cell[t, m]["std"], cell[t, m]["seeds"])
                                                 for m in methods if (t, m) in cell} for t in tasks]
    for group in sorted(set(groups.values())):
        members = [t for t in tasks if groups[t] == group]
        lines.append({"task": f"mean: {group} ({len(members)})"} | {
            m: f"{statistics.mean(cell[t, m]['mean'] for t in members):.3f}" for m in methods})
    task_mean = {m: statistics.mean(cell[t, m]["mean"] for t in tasks) for m in methods}
    group_means = {m: mean_of_group_means({t: cell[t, m]["mean"] for t in tasks}, groups) for m in methods}
    lines.append({"task": "mean of tasks"} | {m: f"{v:.3f}" for m, v in task_mean.items()})
    lines.append({"task": "mean of group means"} | {m: f"{v:.3f}" for m, v in group_means.items()})
    return markdown_table(lines, ["task", "group", *methods])


def protocol_header(protocol: Protocol, backbone: BackboneSpec) -> str:
    lens = f" × prompt length {protocol.prompt_lens}" if protocol.prompt_lens else ""
    one_point = len(protocol.base_lrs) * len(protocol.weight_decays) * len(protocol.prompt_lens or [0]) == 1
    picked = "one setting, no tuning runs" if one_point else "picked on the validation split"
    return (f"Last-epoch test accuracy, mean ± sample std over seeds {protocol.seeds}; grid base_lr "
            f"{protocol.base_lrs} × weight decay {protocol.weight_decays}{lens}, {picked}; "
            f"{protocol.train.epochs} epochs, {protocol.train.optimizer}; backbone {backbone.describe()}. "
            "Averages: the mean over tasks, and the mean of the group means.")


def picked_rates(rows: Sequence[dict[str, Any]]) -> str:
    """Which base rate the validation split picked, per method, counted over tasks (none: one rate)."""
    picks: dict[str, Counter[float]] = {}
    for row in rows:
        if row["seed"] == rows[0]["seed"] and row["val_acc"] is not None:
            picks.setdefault(row["method"], Counter())[row["base_lr"]] += 1
    if not picks:
        return ""
    counts = "; ".join(f"{method} " + ", ".join(f"{rate:g} on {n}" for rate, n in sorted(found.items(), reverse=True))
                       for method, found in picks.items())
    return f" Base rate picked on val200 (tasks): {counts}."


def expand_tasks(specs: Sequence[str]) -> list[str]:
    """``--data`` specs, with a folder of VTAB-layout task folders expanded into its tasks (a task
    folder or an image folder is one task)."""
    from vprompt.data.filelist import has_split_files, task_folders
    from vprompt.data.imagefolder import is_image_folder

    tasks = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir() and not has_split_files(path) and not is_image_folder(path):
            found = [str(p) for p in task_folders(path)]
            if not found:
                raise ConfigError(f"{path} is neither a task folder nor a folder of task folders")
            tasks += found
        else:
            tasks.append(spec)
    return tasks


def run_sweep(tasks: Sequence[str], methods: dict[str, dict[str, Any]], backbone: BackboneSpec,
              protocol: Protocol, out: Path, executor: LocalExecutor | RayExecutor | None = None,
              progress: bool = True, download: bool = False,
              records: RunRecords | None = None) -> list[dict[str, Any]]:
    """``run_protocol``, then ``out/results.json`` (one row per task × method × seed) and
    ``out/results.md`` (the table under both averaging conventions). With ``download``,
    torchvision sets missing on disk are fetched once, here, before any run starts; with
    ``records``, recorded runs are read back and finished ones recorded."""
    from vprompt.report import write_rows

    tasks = expand_tasks(tasks)
    if download:
        for task in tasks:
            open_task(task, download=True)
    rows = run_protocol(tasks, methods, backbone, protocol, out, executor, progress, records)
    say_summary(records, progress)
    write_rows(rows, out / "results.json")
    (out / "results.md").write_text(protocol_header(protocol, backbone) + "\n\n" + protocol_table(rows) + "\n")
    return rows
