"""Splits decoded once into memory: the same items as from disk (augmentation included), only
within the budget, the same errors, and training that computes exactly what it did from disk."""

from __future__ import annotations

import importlib

import pytest
import torch

from vprompt.data import FileListDataset, InMemoryDataset, TaskDataset, in_memory, memory, write_synthetic_suite
from vprompt.data.registry import open_task
from vprompt.errors import DataError
from vprompt.model import create_model
from vprompt.train import TrainConfig, train

from conftest import tiny_vit_spec
from test_data_filelist import small_task  # noqa: F401  (a fixture)
from test_data_sources import make_fgvc


def items(dataset, seed: int = 0) -> list[tuple[torch.Tensor, int]]:
    torch.manual_seed(seed)
    return [dataset[i] for i in range(len(dataset))]


def assert_same_items(a, b) -> None:
    assert len(a) == len(b)
    for (x, y), (u, v) in zip(a, b):
        assert y == v and x.dtype == u.dtype == torch.float32 and torch.equal(x, u)


@pytest.mark.parametrize("workers", [0, 2])
def test_cached_vtab_items_equal_items_read_from_disk_flips_included(small_task, workers, monkeypatch):  # noqa: F811
    monkeypatch.setattr(memory, "SERIAL_DECODE_SECONDS", 0)  # the workers asked for, even for 6 tiny images
    disk = FileListDataset(small_task, "train800val200", (8, 10), check_size=False, train_augment=True)
    cached = in_memory(disk, budget_mb=1, workers=workers)
    assert isinstance(cached, InMemoryDataset)
    assert cached.pixels.dtype == torch.uint8 and cached.pixels.shape == (6, 3, 8, 10)
    assert cached.nbytes == 6 * 3 * 8 * 10
    assert cached.task is disk.task and cached.split == "train800val200"
    for seed in (0, 1):  # augmentation still runs per epoch: another seed, other flips, same in both
        assert_same_items(items(disk, seed), items(cached, seed))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(items(cached, 0), items(cached, 1)))


def test_cached_fgvc_items_keep_their_random_crops(tmp_path):
    source = open_task(f"fgvc:{make_fgvc(tmp_path / 'CUB_200_2011')}")
    disk = source.dataset("train", (12, 12), train=True)
    cached = in_memory(disk, budget_mb=1)
    assert isinstance(cached, InMemoryDataset) and cached.pixels.shape[-2:] == (14, 14)  # 256/224 of 12
    assert_same_items(items(disk, 3), items(cached, 3))


def test_a_split_over_the_budget_or_a_zero_budget_stays_on_disk(small_task):  # noqa: F811
    disk = FileListDataset(small_task, "train800val200", 64, check_size=False)
    assert in_memory(disk, budget_mb=6 * 3 * 64 * 64 / 2**20 * 0.99) is disk
    assert in_memory(disk, budget_mb=0) is disk
    assert isinstance(in_memory(disk, budget_mb=6 * 3 * 64 * 64 / 2**20), InMemoryDataset)


def test_a_corrupt_image_fails_while_decoding_with_the_disk_message(small_task):  # noqa: F811
    (small_task / "img/3.png").write_bytes(b"this is not an image at all")
    disk = FileListDataset(small_task, "train800", 8, check_size=False)
    with pytest.raises(DataError, match=r"cannot read image .*img/3\.png listed in train800\.txt:4: "):
        in_memory(disk, budget_mb=1)


def test_training_from_memory_computes_what_training_from_disk_does(tmp_path, monkeypatch):
    loop = importlib.import_module("vprompt.train")  # the module, not the function vprompt exports
    held = []
    monkeypatch.setattr(loop, "in_memory", lambda *args: held.append(in_memory(*args)) or held[-1])
    task = write_synthetic_suite(tmp_path / "suite", tasks=["objects"], image_size=16, progress=False)[0]
    source = open_task(task)
    results = {}
    for budget in (0, 64):
        torch.manual_seed(0)
        model = create_model(tiny_vit_spec(), "vpt-deep", source.info.num_classes, prompt_len=2, prompt_dropout=0.1)
        train_set = source.dataset("train800", 16, train=True)
        eval_set = source.dataset("val200", 16)
        config = TrainConfig(epochs=2, batch_size=100, warmup_epochs=0, workers=0, cache_mb=budget)
        result = train(model, train_set, tmp_path / f"run{budget}", config, eval_set=eval_set, progress=False)
        results[budget] = ([{k: v for k, v in row.items() if k != "seconds"} for row in result.metrics],
                           model.trainable_state())
    assert [type(d).__name__ for d in held] == ["FileListDataset"] * 2 + ["InMemoryDataset"] * 2
    (rows_disk, state_disk), (rows_memory, state_memory) = results[0], results[64]
    assert rows_disk == rows_memory
    assert all(torch.equal(state_disk[k], state_memory[k]) for k in state_disk)


class Ragged(TaskDataset):
    """Items of two sizes: 70 of 8 x 8 pixels, then one 9 x 8 (in the second batch of 64)."""

    def __len__(self) -> int:
        return 71

    def decode(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.zeros(3, 9 if index == 70 else 8, 8, dtype=torch.uint8), index % 2


@pytest.mark.parametrize("workers", [0, 2])
def test_a_split_of_several_image_sizes_stays_on_disk(workers, monkeypatch):
    monkeypatch.setattr(memory, "SERIAL_DECODE_SECONDS", 0)
    ragged = Ragged()
    assert in_memory(ragged, budget_mb=1, workers=workers) is ragged
