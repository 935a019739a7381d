"""The numbers a reproduction's results.md states, recomputed here from its result rows.

Not a test module: the recipe tests call these to check that each answer line, table cell and count
says what the rows say, not only that the line is there. Every figure is compared with the value
the rows give, to the rounding it is printed with (``0.102`` for anything in [0.1015, 0.1025]).
"""

from __future__ import annotations

import re
import statistics
from typing import Any

NUMBER = r"[-+]?\d+\.\d+"
SCORE = rf"({NUMBER})( ± <?{NUMBER}| \(n = \d+(?:, equal)?\))"  # mean, then ± std or the seed count
Rows = list[dict[str, Any]]


def close(printed: str, value: float) -> bool:
    """Whether ``printed`` is ``value`` rounded to the decimals it is printed with."""
    decimals = len(printed.split(".")[1])
    return abs(float(printed) - value) <= 0.5 * 10 ** -decimals + 1e-9


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def over_seeds(rows: Rows, metric: str) -> tuple[float, float]:
    """Mean and sample std over seeds of each seed's mean over the tasks in ``rows``."""
    seeds = sorted({r["seed"] for r in rows})
    assert seeds, "no rows to average"
    return mean_std([statistics.mean(r[metric] for r in rows if r["seed"] == seed) for seed in seeds])


def assert_score(mean: str, spread: str, rows: Rows, metric: str, where: str) -> None:
    """``mean`` and what follows it: `` ± std``, `` ± <0.001`` (a spread below the last digit), or
    `` (n = 1)`` / `` (n = 3, equal)`` (one seed, or seeds that agree exactly)."""
    true_mean, true_std = over_seeds(rows, metric)
    assert_spread(mean, spread, true_mean, true_std, len({r["seed"] for r in rows}), f"{where} ({metric})")


def assert_spread(mean: str, spread: str, true_mean: float, true_std: float, seeds: int, where: str) -> None:
    """A printed mean and spread against the mean and sample std of ``seeds`` values."""
    assert close(mean, true_mean), f"{where}: prints {mean}, the rows give {true_mean:.5f}"
    if spread.startswith(" ± <"):
        assert seeds > 1 and 0 < true_std < float(spread[4:]) / 2 + 1e-12, (where, spread, true_std)
    elif spread.startswith(" ± "):
        assert seeds > 1 and close(spread[3:], true_std), f"{where}: prints ± {spread[3:]}, the rows give {true_std:.5f}"
    else:
        count = int(re.search(r"\d+", spread).group())
        assert count == seeds and ("equal" in spread) == (seeds > 1) and (seeds == 1 or true_std == 0), (
            where, spread, seeds, true_std)


def markdown_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """(header, rows of cells) of every markdown table in ``text``."""
    tables, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|")):
            block = []
            for following in lines[i:]:
                if not following.startswith("|"):
                    break
                block.append([cell.strip() for cell in following.strip().strip("|").split("|")])
            tables.append((block[0], block[2:]))
    return tables


def table_with(text: str, header: list[str]) -> list[list[str]]:
    found = [rows for head, rows in markdown_tables(text) if head == header]
    assert len(found) == 1, f"expected one table headed {header}, found {len(found)}"
    return found[0]


# --- reproduce pbl / robust-tokens ------------------------------------------------------------------

ROBUST_METRICS = {"clean": "clean_acc", "PGD": "robust_acc_pgd", "AutoAttack": "robust_acc_aa"}
INHERITED = re.compile(rf"- \(1\) Inherited robustness: (.+?)'s AutoAttack accuracy is {SCORE} on the robust "
                       rf"source vs {SCORE} on the standard one \(PGD {SCORE} vs {SCORE}\)\.")
TRADE_OFF = re.compile(rf"- \(2\) Trade-off: (.+?)'s clean accuracy is {SCORE} on the robust source vs {SCORE} "
                       r"on the standard one\.")
CHANGE = re.compile(rf"- \((\w+)\) (\S+) on the (\w+) source, paired by seed: clean {SCORE}, AutoAttack {SCORE}, "
                    rf"PGD {SCORE} against (\S+)\.")


def check_robustness_report(text: str, rows: Rows, labels: dict[str, str],
                            comparisons: list[tuple[str, str, list[str]]]) -> None:
    """Every answer line, the AutoAttack ≤ PGD line and both tables of a ``reproduce pbl`` /
    ``reproduce robust-tokens`` results.md against ``rows``.

    Args:
        labels: method → how questions (1) and (2) name it; one pair of lines per method run on both sources.
        comparisons: (question number, base method, methods compared with it): one line per
            compared method and source that has rows of both.
    """
    def of(kind: str, method: str) -> Rows:
        return [r for r in rows if r["source_kind"] == kind and r["method"] == method]

    kinds = ("robust", "standard")
    method_of = {label: method for method, label in labels.items()}
    seen = []
    for line in (line for line in text.splitlines() if line.startswith("- (")):
        if match := INHERITED.fullmatch(line):
            method = method_of[match[1]]
            assert_score(match[2], match[3], of("robust", method), "robust_acc_aa", line)
            assert_score(match[4], match[5], of("standard", method), "robust_acc_aa", line)
            assert_score(match[6], match[7], of("robust", method), "robust_acc_pgd", line)
            assert_score(match[8], match[9], of("standard", method), "robust_acc_pgd", line)
            seen.append(("1", method))
        elif match := TRADE_OFF.fullmatch(line):
            method = method_of[match[1]]
            assert_score(match[2], match[3], of("robust", method), "clean_acc", line)
            assert_score(match[4], match[5], of("standard", method), "clean_acc", line)
            seen.append(("2", method))
        elif match := CHANGE.fullmatch(line):
            number, method, kind, *printed, base = match.groups()
            for k, metric in enumerate(("clean_acc", "robust_acc_aa", "robust_acc_pgd")):
                seeds = sorted({r["seed"] for r in of(kind, method)})
                changes = [over_seeds([r for r in of(kind, method) if r["seed"] == s], metric)[0]
                           - over_seeds([r for r in of(kind, base) if r["seed"] == s], metric)[0] for s in seeds]
                assert_spread(printed[2 * k], printed[2 * k + 1], *mean_std(changes), len(seeds), f"{line}: {metric}")
            seen.append((number, method, kind, base))
        else:
            raise AssertionError(f"an answer line of no known form: {line}")
    expected = [(number, method) for number in ("1", "2") for method in labels
                if all(of(kind, method) for kind in kinds)]
    expected += [(number, method, kind, base) for number, base, methods in comparisons for method in methods
                 for kind in kinds if of(kind, method) and of(kind, base)]
    assert sorted(seen) == sorted(expected), f"answer lines {sorted(seen)}, expected {sorted(expected)}"

    violations = [r for r in rows if r["robust_acc_aa"] > r["robust_acc_pgd"]]
    if violations:
        assert f"AutoAttack > PGD on {len(violations)} of {len(rows)} rows: " in text, (
            f"{len(violations)} of {len(rows)} rows have AutoAttack > PGD: the report must say so")
    else:
        assert "AutoAttack ≤ PGD on every row." in text and "AutoAttack > PGD" not in text, (
            "AutoAttack ≤ PGD on every row, and the report must say just that")

    for keys in (("source", "method"), ("source", "method", "task")):
        header = [*keys, *ROBUST_METRICS]
        lines = table_with(text, header)
        groups = {tuple(r["source_kind" if k == "source" else k] for k in keys) for r in rows}
        assert sorted(tuple(line[:len(keys)]) for line in lines) == sorted(groups), header
        for line in lines:
            picked = [r for r in rows if tuple(r["source_kind" if k == "source" else k] for k in keys)
                      == tuple(line[:len(keys)])]
            for cell, metric in zip(line[len(keys):], ROBUST_METRICS.values()):
                mean, std = re.fullmatch(SCORE, cell).groups()
                assert_score(mean, std, picked, metric, f"{header} row {line}")


# --- reproduce hgprompt -----------------------------------------------------------------------------

WINS = re.compile(r"Targets where HGPrompt's mean beats the baseline's: (.*)\.")
PAIRED = re.compile(r"HGPrompt − the best baseline \((\S+), .*?\), mean over targets paired by seed: (.*)\.")


def check_hgprompt_report(text: str, rows: Rows) -> None:
    """The accuracy table (per target, per group, both averages), the line counting HGPrompt's wins
    and the weight-search table of a ``reproduce hgprompt`` results.md against ``rows``."""
    targets = list(dict.fromkeys(r["target"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    group_of = {r["target"]: r.get("group") or "other" for r in rows}
    mean = {(t, m): statistics.mean(r["test_acc"] for r in rows if r["target"] == t and r["method"] == m)
            for t in targets for m in methods}

    lines = {line[0]: line for line in table_with(text, ["task", "group", *methods])}
    groups = sorted(set(group_of.values()))
    assert list(lines) == [*targets, *(f"mean: {g} ({sum(group_of[t] == g for t in targets)})" for g in groups),
                           "mean of tasks", "mean of group means"]
    for target in targets:
        assert lines[target][1] == group_of[target]
        for method, cell in zip(methods, lines[target][2:]):
            picked = [r | {"task": r["target"]} for r in rows if r["target"] == target and r["method"] == method]
            printed_mean, printed_std = re.fullmatch(SCORE, cell).groups()
            assert_score(printed_mean, printed_std, picked, "test_acc", f"{target}/{method}")
    group_mean = {(g, m): statistics.mean(mean[t, m] for t in targets if group_of[t] == g)
                  for g in groups for m in methods}
    expected_rows = {f"mean: {g} ({sum(group_of[t] == g for t in targets)})": {m: group_mean[g, m] for m in methods}
                     for g in groups}
    expected_rows["mean of tasks"] = {m: statistics.mean(mean[t, m] for t in targets) for m in methods}
    expected_rows["mean of group means"] = {m: statistics.mean(group_mean[g, m] for g in groups) for m in methods}
    for name, values in expected_rows.items():
        for method, cell in zip(methods, lines[name][2:]):
            assert close(cell, values[method]), f"{name}/{method}: prints {cell}, the rows give {values[method]:.5f}"

    wins = WINS.search(text)
    assert wins, "no line counting HGPrompt's wins"
    printed = dict(re.fullmatch(r"(\S+) (\d+/\d+)", part).groups() for part in wins[1].split(", "))
    expected = {m: f"{sum(mean[t, 'hgprompt'] > mean[t, m] for t in targets)}/{len(targets)}"
                for m in methods if m != "hgprompt"}
    assert printed == expected, f"wins printed {printed}, the rows give {expected}"

    weighted = [m for m in ("hgprompt", "hgprompt-no-gar") if m in methods]
    search_lines = {line[0]: line for line in table_with(
        text, ["target", "best H-score source", "oracle source",
               *(f"{m}: {column}" for m in weighted for column in ("top source", "batch H first → last epoch"))])}
    assert list(search_lines) == targets
    for target in targets:
        cells = search_lines[target][3:]
        for k, method in enumerate(weighted):
            runs = [r for r in rows if r["target"] == target and r["method"] == method]
            weights = {source: statistics.mean(r["weights"][i] for r in runs)
                       for i, source in enumerate(runs[0]["sources"])}
            top, weight = re.fullmatch(r"(\S+) \((\d+\.\d+)\)", cells[2 * k]).groups()
            assert close(weight, weights[top]) and close(weight, max(weights.values())), (target, method, weights)
            first, last = cells[2 * k + 1].split(" → ")
            assert close(first, statistics.mean(r["search"][0]["h_score"] for r in runs)), (target, method, first)
            assert close(last, statistics.mean(r["search"][-1]["h_score"] for r in runs)), (target, method, last)

    paired = PAIRED.search(text)
    assert paired, "no line pairing HGPrompt with the best baseline by seed"
    baselines = [m for m in methods if m not in ("hgprompt", "hgprompt-no-gar", "oracle")]
    seeds = sorted({r["seed"] for r in rows})

    def seed_mean(method: str, seed: int) -> float:
        return statistics.mean(r["test_acc"] for r in rows if r["method"] == method and r["seed"] == seed)

    best = max(baselines, key=lambda m: statistics.mean(seed_mean(m, s) for s in seeds))
    assert paired[1] == best, f"best baseline printed {paired[1]}, the rows give {best}"
    printed = re.findall(r"seed (\d+) ([+-]\d+\.\d+)", paired[2])
    assert [int(s) for s, _ in printed] == seeds
    for (seed, difference) in printed:
        expected = seed_mean("hgprompt", int(seed)) - seed_mean(best, int(seed))
        assert close(difference.lstrip("+"), expected), (seed, difference, expected)
