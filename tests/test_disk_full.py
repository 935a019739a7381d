"""A full disk while checkpointing: one line naming the file, the previous checkpoint intact,
nothing half-written left behind, and --resume finishes exactly like a run that never failed."""

from __future__ import annotations

import errno
import importlib
import os
import pathlib
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import torch

from conftest import tiny_vit_spec
from test_cli import MODEL, run_cli
from test_train import separable_task, trainable
from vprompt.data import write_synthetic_suite
from vprompt.errors import CheckpointError
from vprompt.model import create_model, load_prompt
from vprompt.checkpoint import CHECKPOINTS, FINAL, LATEST, latest_checkpoint
from vprompt.train import TrainConfig, train

CONFIG = TrainConfig(epochs=3, batch_size=16, warmup_epochs=1, base_lr=2.0, weight_decay=0.0)
METHOD = ("vpt-deep", {"prompt_len": 2, "prompt_dropout": 0.1})
WRITERS = ("write_bytes", "write_text")  # every checkpoint file goes through one of these


@contextmanager
def writes_watched(fail_at: int | None = None) -> Iterator[list[Path]]:
    """Records the path of every Path.write_bytes/write_text; the ``fail_at``-th (0-based) writes
    half its data, then fails as a full disk does."""
    written: list[Path] = []
    with pytest.MonkeyPatch.context() as patch:
        for name in WRITERS:
            original = getattr(pathlib.Path, name)

            def write(path: Path, data, *args, _original=original, **kwargs):
                written.append(path)
                if len(written) - 1 == fail_at:
                    _original(path, data[:len(data) // 2], *args, **kwargs)
                    raise OSError(errno.ENOSPC, "No space left on device")
                return _original(path, data, *args, **kwargs)

            patch.setattr(pathlib.Path, name, write)
        yield written


def run(out: Path, resume: bool = False, seed: int = 0):
    """A fresh process's model (its own init must not matter on resume), trained into ``out``."""
    torch.manual_seed(seed)
    model = create_model(tiny_vit_spec(), METHOD[0], 2, **METHOD[1])
    result = train(model, separable_task(32), out, CONFIG, resume=resume, progress=False)
    return model, result


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict[str, torch.Tensor], list[Path]]:
    """The uninterrupted run's trainable tensors and the files it wrote, in order (relative to its folder)."""
    out = tmp_path_factory.mktemp("straight")
    with writes_watched() as written:
        model, _ = run(out)
    return trainable(model), [path.relative_to(out) for path in written]


def phase_writes(written: list[Path], phase: str) -> range:
    """Indices of the writes of epoch 2's checkpoint (up to its ``latest`` pointer), or of the final prompt."""
    pointers = [i for i, path in enumerate(written) if path.name == LATEST + ".tmp"]
    assert len(pointers) == CONFIG.epochs
    return range(pointers[0] + 1, pointers[1] + 1) if phase == "checkpoint" else range(pointers[-1] + 1, len(written))


@pytest.mark.parametrize("phase, kept_epoch", [("checkpoint", 1), ("final", CONFIG.epochs)])
def test_a_full_disk_at_any_write_keeps_the_last_checkpoint_and_resume_finishes_exactly(
        tmp_path, reference, phase, kept_epoch):
    expected, written = reference
    indices = phase_writes(written, phase)
    assert len(indices) >= 3  # weights, metadata, model card at the least
    for k in indices:
        out = tmp_path / f"write{k}"
        with writes_watched(fail_at=k), pytest.raises(CheckpointError) as caught:
            run(out)
        message = str(caught.value)
        target = out / written[k].with_name(written[k].name.removesuffix(".tmp"))
        assert "\n" not in message
        assert message.startswith(f"could not write {target}: No space left on device; ")
        kept = latest_checkpoint(out)
        assert kept.name == f"epoch-{kept_epoch:04d}" and f"epoch {kept_epoch} ({kept}), is intact" in message
        assert "--resume" in message
        load_prompt(kept)  # intact and loadable
        assert sorted(p.name for p in (out / CHECKPOINTS).iterdir()) == [kept.name, LATEST]
        assert not (out / FINAL).exists() and not list(out.rglob("*.tmp"))

        resumed, result = run(out, resume=True, seed=99)
        assert [row["epoch"] for row in result.metrics] == list(range(1, CONFIG.epochs + 1))
        got = trainable(resumed)
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[name], expected[name]) for name in expected), f"write {k}: {written[k]}"
        final = trainable(load_prompt(out / FINAL))
        assert all(torch.equal(final[name], expected[name]) for name in expected)


@pytest.fixture
def tiny_filesystem(tmp_path) -> Iterator[Path]:
    """A 1 MiB tmpfs (root only; skipped where mounting is not allowed), always unmounted."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def fill(directory: Path) -> Path:
    """A ballast file that takes every free byte of ``directory``'s filesystem."""
    ballast = directory / "ballast"
    with open(ballast, "wb", buffering=0) as file:
        for chunk in (1 << 16, 1 << 12, 1):
            try:
                while file.write(b"\0" * chunk):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return ballast


@pytest.mark.slow  # end to end, seconds: the fast tier stays under its budget
def test_a_really_full_disk_through_the_cli_is_one_line_and_resume_finishes(capsys, monkeypatch, tmp_path,
                                                                             tiny_filesystem):
    loop = importlib.import_module("vprompt.train")  # the module: vprompt.train is also the function
    task = write_synthetic_suite(tmp_path / "suite", tasks=["digits"], image_size=16, test_size=40,
                                 progress=False)[0]
    out = tiny_filesystem / "run"
    ballast: list[Path] = []
    save_checkpoint = loop.save_checkpoint

    def fill_after_epoch_1(*args, **kwargs):
        save_checkpoint(*args, **kwargs)
        if not ballast:
            ballast.append(fill(tiny_filesystem))

    monkeypatch.setattr(loop, "save_checkpoint", fill_after_epoch_1)
    command = ["train", "--data", str(task), "--out", str(out), *MODEL, "--method", "vpt-shallow",
               "--prompt-len", "2", "--batch-size", "200", "--epochs", "2", "--warmup-epochs", "0", "--no-progress"]
    code, _, err = run_cli(capsys, *command)
    assert code == 2
    epochs, error = err.splitlines()[:-1], err.splitlines()[-1]  # --no-progress: a line per epoch, then the error
    assert [line.split("]")[0] for line in epochs] == ["[epoch 1/2", "[epoch 2/2"]
    assert error.startswith("error: could not write ") and "Traceback" not in err
    assert "No space left on device" in err and "epoch 1 (" in err and "--resume" in err
    assert latest_checkpoint(out).name == "epoch-0001" and not list(out.rglob("*.tmp"))

    ballast[0].unlink()  # space freed
    code, printed, err = run_cli(capsys, *command, "--resume")
    assert code == 0, err
    assert (out / FINAL).is_dir() and latest_checkpoint(out).name == "epoch-0002"
