"""Progress of long work in one of two forms: tqdm's bar for a terminal, or, with progress off
(``--no-progress``, for logs), one line per finished item on the ``vprompt.progress`` logger.

A bar written to a log file is a smear of carriage returns, and no bar at all leaves a recipe of
several hours silent; a line per finished run says how far it got and how fast. The library only
logs (Python's ``logging``: silent unless configured); the command line prints the lines."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Literal, TypeVar

from tqdm.auto import tqdm

LOG = logging.getLogger("vprompt.progress")
Item = TypeVar("Item")


class Tally:
    """Items of one piece of work as they finish: a bar, or a log line each."""

    def __init__(self, total: int, desc: str, progress: bool) -> None:
        self.total, self.desc, self.log = total, desc, not progress
        self.bar = tqdm(total=total, desc=desc, disable=not progress)
        self.finished = 0
        self.started = time.perf_counter()

    def done(self, name: str) -> None:
        """One more item finished; ``name`` says which."""
        self.finished += 1
        self.bar.update()
        if self.log:
            LOG.info("[%s] %d/%d done: %s (%.0f s so far)", self.desc, self.finished, self.total, name,
                     time.perf_counter() - self.started)

    def close(self) -> None:
        self.bar.close()


def each(items: Sequence[Item], desc: str, progress: bool, name: Callable[[Item], str] = str) -> Iterator[Item]:
    """``items`` one by one, counted as finished when the next is asked for (or the loop ends)."""
    tally = Tally(len(items), desc, progress)
    try:
        for item in items:
            yield item
            tally.done(name(item))
    finally:
        tally.close()


class PrintHandler(logging.Handler):
    """Prints a record to the ``sys.stdout`` (or ``sys.stderr``) of the moment (a handler holding a
    stream would keep writing to one that was since replaced, as tests and notebooks do)."""

    def __init__(self, stream: Literal["stdout", "stderr"]) -> None:
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=getattr(sys, self.stream), flush=True)


def print_progress_lines(logger: logging.Logger = LOG, stream: Literal["stdout", "stderr"] = "stdout") -> None:
    """Print ``logger``'s lines, ``vprompt.progress``'s by default (the command line's choice; once per
    process). ``stderr`` where stdout carries a result (``vprompt train`` prints its row as JSON)."""
    if not any(isinstance(handler, PrintHandler) for handler in logger.handlers):
        logger.addHandler(PrintHandler(stream))
        logger.setLevel(logging.INFO)
        logger.propagate = False


def say(line: str, progress: bool) -> None:
    """A line about the work: printed in the bar form, logged in the log form."""
    if progress:
        tqdm.write(line)
    else:
        LOG.info(line)
