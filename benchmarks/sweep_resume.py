"""A sweep killed mid-way resumes without redoing finished runs (`vprompt sweep`, Ray on this machine).

Writes a synthetic suite, starts ``vprompt sweep --ray local`` as a subprocess, kills its whole
process group (SIGKILL: no clean-up, like a lost node) once a given share of the runs has finished,
then starts the same command again and lets it finish. Reported: how many runs had finished
before the kill, how many runs the second invocation trained (finished runs must be 0 of them:
their metrics files are untouched), the wall time of an uninterrupted sweep and of kill + resume,
and whether the resumed sweep's results equal the uninterrupted one's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import base_parser, markdown_table, write_outputs

TINY_VIT = ["--model", "vit_tiny_patch16_224", "--model-arg", "img_size=32", "patch_size=8", "embed_dim=64",
            "depth=2", "num_heads=2"]


def sweep_command(suite: Path, out: Path, quick: bool) -> list[str]:
    tasks = ["digits", "objects"] if quick else ["digits", "objects", "count"]
    return [sys.executable, "-m", "vprompt.cli", "sweep", "--data", *(str(suite / t) for t in tasks),
            "--out", str(out), *TINY_VIT, "--methods", "linear", "vpt-shallow", "--base-lrs", "0.05", "0.005",
            "--weight-decays", "0.0", "--seeds", "0", "1", "--epochs", "2", "--batch-size", "100",
            "--optimizer", "adamw", "--warmup-epochs", "0", "--ray", "local"]


def finished_runs(out: Path) -> dict[Path, int]:
    """Finished runs (a final prompt beside metrics.json) and their metrics files' mtimes."""
    return {m: m.stat().st_mtime_ns for m in out.glob("runs/*/*/**/metrics.json") if (m.parent / "prompt").is_dir()}


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--kill-at", type=float, default=0.5, help="share of all runs finished before the kill")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sweep_resume_"))
    suite = work / "suite"
    subprocess.run([sys.executable, "-m", "vprompt.cli", "data", "synth", str(suite), "--image-size", "32",
                    "--test-size", "200", "--tasks", "digits", "objects", "count"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reference = work / "uninterrupted"
    whole = timed(sweep_command(suite, reference, args.quick))
    total = len(finished_runs(reference))

    out = work / "killed"
    started = time.perf_counter()
    process = subprocess.Popen(sweep_command(suite, out, args.quick), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    while len(finished_runs(out)) < args.kill_at * total and process.poll() is None:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before = finished_runs(out)
    resumed = timed(sweep_command(suite, out, args.quick))
    after = finished_runs(out)
    redone = sum(after[m] != stamp for m, stamp in before.items())
    same = json.loads((out / "results.json").read_text()) == json.loads((reference / "results.json").read_text())
    row = {"runs": total, "finished_before_kill": len(before), "trained_after_restart": len(after) - len(before),
           "finished_runs_redone": redone, "uninterrupted_s": round(whole, 1),
           "killed_plus_resumed_s": round(time.perf_counter() - started, 1), "resume_s": round(resumed, 1),
           "results_equal_uninterrupted": same, "executor": "ray (local instance)"}
    shutil.rmtree(work)
    columns = [(key, lambda r, k=key: str(r[k])) for key in row]
    write_outputs([row], markdown_table([row], columns), args.out, args.quick)


if __name__ == "__main__":
    main()
