"""Splits a dataset does not ship, drawn from its training data the same way every time.

Image folders and Hugging Face datasets often come without a test or a validation split. The
missing one is carved out of the training data, class by class, by a seeded draw: ``test`` takes
[`TEST_SHARE`][vprompt.data.holdout.TEST_SHARE] of each class, then ``val`` takes
[`VAL_SHARE`][vprompt.data.holdout.VAL_SHARE] of what is left, so data with neither is split
70 / 10 / 20 (train / val / test). The draw is recorded in every result row
([`holdout_note`][vprompt.data.holdout.holdout_note]).
"""

from __future__ import annotations

import random
import zlib
from typing import TypeVar

TEST_SHARE = 0.2
"""Of each class's training items, the share drawn for ``test`` when there is no test split."""
VAL_SHARE = 0.125
"""Of each class's remaining training items, the share drawn for ``val`` when there is no val split."""
SPLIT_SEED = 0
"""The draw is seeded, so the same data always splits the same way."""

Item = TypeVar("Item")


def draw(samples: list[tuple[Item, int]], share: float, split: str) -> tuple[list[tuple[Item, int]],
                                                                             list[tuple[Item, int]]]:
    """``(item, label)`` samples split into (kept, drawn): ``share`` of each class, at least one
    item where the class has two or more, by a draw seeded from the split's name. Both parts
    keep the samples' sorted order."""
    kept: list[tuple[Item, int]] = []
    taken: list[tuple[Item, int]] = []
    rng = random.Random(zlib.crc32(f"{SPLIT_SEED}:{split}".encode()))
    for label in sorted({label for _, label in samples}):
        members = [s for s in samples if s[1] == label]
        rng.shuffle(members)
        count = max(1, round(share * len(members))) if len(members) > 1 else 0
        taken += sorted(members[:count])
        kept += sorted(members[count:])
    return kept, taken


def draw_missing(samples: dict[str, list[tuple[Item, int]]]) -> tuple[str, ...]:
    """Fill in ``test`` and ``val`` from ``samples["train"]`` where they are missing (in place);
    returns the splits drawn."""
    drawn = tuple(split for split in ("test", "val") if split not in samples)
    for split in drawn:
        share = TEST_SHARE if split == "test" else VAL_SHARE
        samples["train"], samples[split] = draw(samples["train"], share, split)
    return drawn


def split_sizes(samples: dict[str, list]) -> str:
    """``train N, val N, test N``, for result rows."""
    return ", ".join(f"{split} {len(samples[split])}" for split in ("train", "val", "test"))


def holdout_note(drawn: tuple[str, ...]) -> str:
    """How the ``drawn`` splits were made, for result rows ("" when none was)."""
    if not drawn:
        return ""
    return (f"; {' and '.join(drawn)} drawn per class from the training data (test {TEST_SHARE:g}, "
            f"then val {VAL_SHARE:g} of the rest, seed {SPLIT_SEED})")
