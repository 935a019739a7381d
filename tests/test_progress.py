"""Progress in its two forms: with progress off (logs), one line per item once it has finished,
counted and named; the command line prints those lines."""

from __future__ import annotations

import logging

from vprompt.progress import LOG, Tally, each, say


def test_a_line_comes_when_an_item_has_finished_counted_and_named(caplog):
    caplog.set_level(logging.INFO, logger=LOG.name)
    seen = []
    for item in each(["a", "b", "c"], "runs", False, name=str.upper):
        seen.append((item, len(caplog.records)))  # the body runs before its item's line
    assert seen == [("a", 0), ("b", 1), ("c", 2)]
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" (")[0] for line in lines] == ["[runs] 1/3 done: A", "[runs] 2/3 done: B", "[runs] 3/3 done: C"]
    assert all(line.endswith(" s so far)") for line in lines)


def test_an_item_that_fails_is_not_counted_as_done(caplog):
    caplog.set_level(logging.INFO, logger=LOG.name)
    try:
        for item in each([1, 2], "runs", False):
            if item == 2:
                raise RuntimeError
    except RuntimeError:
        pass
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["[runs] 1/2 done: 1"]


def test_the_bar_form_logs_nothing_and_says_lines_on_stdout(caplog, capsys):
    caplog.set_level(logging.INFO, logger=LOG.name)
    assert list(each([1, 2], "runs", True)) == [1, 2]
    tally = Tally(1, "runs (ray)", True)
    tally.done("x")
    tally.close()
    say("[records] 2 runs read back", True)
    assert caplog.records == [] and "[records] 2 runs read back" in capsys.readouterr().out
    say("[records] 3 runs read back", False)
    assert [r.getMessage() for r in caplog.records] == ["[records] 3 runs read back"]
