"""The paper's own words, read as checkable claims: update counts and per-run accuracies.

The paper rarely gives an exact update count; it says "~80000", "just over 14000", "under
6500". A suite stores those words verbatim (`PaperFigure.updates`, copied into each run row's
`paper_updates`), and this module turns them into a `CountClaim`: an interval with its rule
written out, so the report can put ✓ or ✗ beside each measured count and say what it
checked. Words it cannot read give None, shown as "not checked": a new phrasing in a suite
must never crash a report.

Rules (X the number in the words, n the count; case and a trailing "updates" ignored):

| words | claim | why |
| --- | --- | --- |
| "~X", "about X", "around X", "approximately X", "≈X" | 0.95·X ≤ n ≤ 1.05·X | a round figure |
| "just under X", "just below X" | 0.95·X ≤ n < X | "just": within 5 % |
| "just over X", "just above X" | X < n ≤ 1.05·X | |
| "under X", "below X", "less than X", "fewer than X" | 0.8·X ≤ n < X | (1) |
| "over X", "above X", "more than X" | X < n ≤ 1.25·X | (1), mirrored |
| "X" | n = X | an exact count |

(1) The paper quotes the next round number above a count ("under 2500" for 2160), so a bare
"under X" is still a claim about size: a count far below X (say X/2) would have been quoted
as a smaller number, and a check that accepted it would check nothing. 20 % is the widest
gap between a count and its round figure in the paper (2160 vs "under 2500": 14 %), with room.
These are the readings tests/test_schedule.py uses for the planned counts.

Per-run accuracies: where the paper gives each run's accuracy, the suite's `source` quotes
them ("Sec 5.3, Fig 6 (78.7% and 77.8%)"), and the run row carries that `paper_source`. The
run record has no column for them yet, so `run_accuracies` reads them back from that text:
the simplest honest route until a column exists. `PaperFigure.test_acc_runs` holds the same
values typed, and a test keeps the two in agreement for every shipped suite.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

# Relative widths of the intervals; see the module docstring for why each is what it is.
ABOUT = 0.05
JUST = 0.05
BARE = 0.20
COUNT_RULES = (  # the table above in one sentence, for the report
    "~X: within ±5% of X; just under X: [0.95·X, X); just over X: (X, 1.05·X]; under/below "
    "X: [0.8·X, X); over/above X: (X, 1.25·X]; a bare X: exactly X"
)

_NUMBER = r"(?P<number>\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)\s*(?P<k>k)?"
_PHRASES: tuple[tuple[str, str], ...] = (
    # (kind, regex of the words before the number); the longer phrases first.
    ("about", r"~|≈|\\sim|about|around|approximately|roughly"),
    ("just_under", r"just\s+(?:under|below)"),
    ("just_over", r"just\s+(?:over|above)"),
    ("under", r"under|below|less\s+than|fewer\s+than"),
    ("over", r"over|above|more\s+than"),
    ("exact", r""),
)
_CLAIM = re.compile(
    r"^\s*(?:(?P<phrase>"
    + "|".join(f"(?P<{k}>{p})" for k, p in _PHRASES if p)
    + r")\s*)?"
    + _NUMBER
    + r"\s*(?:(?:parameter\s+)?updates)?\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class CountClaim:
    """A claim about an update count: low ≤ n ≤ high, with either end open when `*_open`."""

    words: str  # the paper's words, verbatim
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def holds(self, count: float) -> bool:
        """Whether `count` satisfies the claim (a missing or non-finite count never does)."""
        if not math.isfinite(count):
            return False
        above = count > self.low if self.low_open else count >= self.low
        below = count < self.high if self.high_open else count <= self.high
        return above and below

    @property
    def rule(self) -> str:
        """The interval in words, e.g. "76,000 ≤ n ≤ 84,000"."""
        if self.low == self.high:
            return f"n = {_num(self.low)}"
        lo = "<" if self.low_open else "≤"
        hi = "<" if self.high_open else "≤"
        return f"{_num(self.low)} {lo} n {hi} {_num(self.high)}"


def parse_count_claim(words: object) -> CountClaim | None:
    """The claim the paper's `words` make about a count, or None where they are not read."""
    if not isinstance(words, str):
        return None
    match = _CLAIM.match(words)
    if match is None:
        return None
    x = float(match["number"].replace(",", "")) * (1000 if match["k"] else 1)
    kind = next((k for k, _ in _PHRASES if k != "exact" and match[k] is not None), "exact")
    if kind == "about":
        return CountClaim(words, x * (1 - ABOUT), x * (1 + ABOUT))
    if kind == "just_under":
        return CountClaim(words, x * (1 - JUST), x, high_open=True)
    if kind == "just_over":
        return CountClaim(words, x, x * (1 + JUST), low_open=True)
    if kind == "under":
        return CountClaim(words, x * (1 - BARE), x, high_open=True)
    if kind == "over":
        return CountClaim(words, x, x / (1 - BARE), low_open=True)  # X = 0.8·n, mirrored
    return CountClaim(words, x, x)


@dataclass(frozen=True)
class CountCheck:
    """The verdict on some measured counts against the paper's words."""

    ok: bool | None  # None: no words, words not read, or no finite count
    rule: str  # the interval checked, "not checked", or "" without paper words

    @property
    def mark(self) -> str:
        """ "✓ RULE", "✗ RULE", or the reason it was not checked."""
        if self.ok is None:
            return self.rule
        return f"{'✓' if self.ok else '✗'} {self.rule}"


def check_counts(words: object, counts: list[float]) -> CountCheck:
    """Whether every one of `counts` (e.g. each seed's updates) satisfies the paper's words."""
    if words is None or (isinstance(words, float) and math.isnan(words)) or words == "":
        return CountCheck(None, "")
    claim = parse_count_claim(words)
    finite = [c for c in counts if math.isfinite(c)]
    if claim is None or not finite:
        return CountCheck(None, "not checked")
    return CountCheck(all(claim.holds(c) for c in finite), claim.rule)


_RUNS = re.compile(r"\(\s*(\d+(?:\.\d+)?)\s*%((?:\s*(?:,|and)\s*\d+(?:\.\d+)?\s*%)+)\s*\)")


def run_accuracies(source: object) -> tuple[float, ...] | None:
    """Per-run accuracies (fractions) quoted in a paper source, e.g. "(78.7% and 77.8%)".

    None when `source` quotes no list of two or more percentages in parentheses.
    """
    if not isinstance(source, str):
        return None
    match = _RUNS.search(source)
    if match is None:
        return None
    rest = re.findall(r"\d+(?:\.\d+)?", match[2])
    return tuple(round(float(p) / 100, 6) for p in (match[1], *rest))


def paper_columns(
    words: pd.Series, counts: Iterable[list[float]], sources: pd.Series
) -> pd.DataFrame:
    """The summary's paper columns, aligned with `words`' index.

    updates_ok (True, False, or None when not checked), updates_rule (`CountCheck.rule`) and
    paper_test_acc_runs (`run_accuracies` of each source, or None).
    """
    checks = [check_counts(w, c) for w, c in zip(words, counts, strict=True)]
    return pd.DataFrame(
        {
            "updates_ok": pd.Series([c.ok for c in checks], dtype=object, index=words.index),
            "updates_rule": [c.rule for c in checks],
            "paper_test_acc_runs": pd.Series(
                [run_accuracies(s) for s in sources], dtype=object, index=words.index
            ),
        },
        index=words.index,
    )


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x - round(x)) < 1e-9 else f"{x:,.1f}"
