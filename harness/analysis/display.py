"""Analysis frames as display strings: percent accuracies, intervals, durations, counts.

Each `format_*` turns one table of harness.analysis.tables, seeds or sweep into the strings
a report shows (the frames themselves keep numbers: the statistics are computed there, never
here); `figure_links` and `provenance_lines` are the report's lines around them. Every
format shares the small display helpers at the bottom. Rendering a frame in an output format
is harness.analysis.render's.
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis.paper import CountCheck
from harness.analysis.render import latex_escape
from harness.analysis.tables import provenance


def format_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as display strings: percent accuracies, readable times, paper columns."""
    acc = [
        _pct(m) if (n < 2 or not np.isfinite(s)) else f"{100 * m:.2f} ± {100 * s:.2f}%"
        for m, s, n in zip(
            summary["test_acc_mean"], summary["test_acc_std"], summary["seeds"], strict=True
        )
    ]
    return pd.DataFrame(
        {
            "experiment": summary["experiment"],
            "schedule": summary["schedule"],
            "optimizer": summary["optimizer"],
            "model": summary["model"],
            "seeds": summary["seeds"].astype(str),
            "updates": [count_text(u) for u in summary["updates"]],
            "paper updates": summary["paper_updates"].fillna("").astype(str),
            "updates vs paper": [
                _check_mark(ok, r)
                for ok, r in zip(summary["updates_ok"], summary["updates_rule"], strict=True)
            ],
            "test acc": acc,
            # One seed has no range: "–", not a misleading "90.56–90.56%".
            "seed range": [
                _range(lo, hi) if n >= 2 else "–"
                for lo, hi, n in zip(
                    summary["test_acc_min"],
                    summary["test_acc_max"],
                    summary["test_acc_n"],
                    strict=True,
                )
            ],
            "n": summary["test_acc_n"].astype(str),
            "paper acc": [_pct(p) if finite(p) else "" for p in summary["paper_test_acc"]],
            "paper runs": [_runs(r) for r in summary["paper_test_acc_runs"]],
            "Δ vs paper": [f"{d:+.2f} pp" if finite(d) else "" for d in summary["diff_pp"]],
            "wall clock": [_duration(s) for s in summary["wall_clock_s"]],
            "images/s": [count_text(x) for x in summary["images_per_s"]],
            "device": summary["devices"],
            "data": [_short_digests(str(d)) for d in summary["data"]],
            "status": summary["status"],
        }
    )


def format_equivalence(eq: pd.DataFrame) -> pd.DataFrame:
    """The equivalence table as display strings: accuracy gaps in percentage points."""
    pp = _pp

    def loss(x: float) -> str:
        return f"{x:.3g}" if finite(x) else "–"

    return pd.DataFrame(
        {
            "experiment": eq["experiment"],
            "optimizer": eq["optimizer"],
            "model": eq["model"],
            "schedule": eq["schedule"],
            "vs": eq["reference"],
            "epochs": eq["epochs_compared"].astype(str),
            # No "|" in headers: it would split a markdown column.
            "acc gap after 1st milestone": [pp(x) for x in eq["acc_gap_after_m1"]],
            "loss gap after 1st milestone": [loss(x) for x in eq["loss_gap_after_m1"]],
            "acc gap, last 10%": [pp(x) for x in eq["acc_gap_last10"]],
            "loss gap, last 10%": [loss(x) for x in eq["loss_gap_last10"]],
            "updates ratio": [f"{x:.3g}×" if finite(x) else "–" for x in eq["update_ratio"]],
            "Δ final acc": [_signed_pp(x) for x in eq["final_acc_gap"]],
            "seed range": [pp(x) for x in eq["seed_range"]],
            "pooled std": [pp(x) for x in eq["pooled_std"]],
            "seeds": eq["seeds"].astype(str),
            "spread (a description)": eq["verdict"],
            "pairs": eq["pairs"].astype(str),
            "margin": [_pp(x) for x in eq["margin"]],
            "90% CI of paired Δ": [
                _interval(lo, hi) for lo, hi in zip(eq["ci_low"], eq["ci_high"], strict=True)
            ],
            "paired TOST": eq["tost"],
            "seeds needed": [_seeds(x) for x in eq["seeds_needed"]],
        }
    )


def format_verdicts(groups: pd.DataFrame) -> pd.DataFrame:
    """Per (experiment, optimizer, model): the largest gaps beside the seed spread, and the
    verdict (frames from harness.analysis.seeds.group_verdicts)."""
    pp = _pp

    return pd.DataFrame(
        {
            "experiment": groups["experiment"],
            "optimizer": groups["optimizer"],
            "model": groups["model"],
            "vs": groups["reference"],
            # The test first: a reader sees the verdicts without scrolling a wide table.
            "paired TOST": groups["tost"],
            "spread (a description)": groups["verdict"],
            "largest Δ final acc": [
                f"{_signed_pp(x)} ({s})" if finite(x) else "–"
                for x, s in zip(
                    groups["final_acc_gap"], groups["largest_gap_schedule"], strict=True
                )
            ],
            "largest acc gap after 1st milestone": [pp(x) for x in groups["acc_gap_after_m1"]],
            "largest acc gap, last 10%": [pp(x) for x in groups["acc_gap_last10"]],
            "seed range": [pp(x) for x in groups["seed_range"]],
            "pooled std": [pp(x) for x in groups["pooled_std"]],
            "fewest seeds": groups["seeds"].astype(str),
            "margin": [pp(x) for x in groups["margin"]],
            "seeds needed": [_seeds(x) for x in groups["seeds_needed"]],
        }
    )


def figure_links(paths: Sequence[Path], fmt: str, relative_to: Path | None) -> list[str]:
    """Links to figure files: markdown images for markdown/github, escaped paths otherwise,
    relative to `relative_to` (the report's folder) when given."""
    links = []
    for path in paths:
        shown = Path(os.path.relpath(path, relative_to)) if relative_to is not None else path
        target = shown.as_posix()
        if fmt in ("markdown", "github"):
            links.append(f"![{path.stem}]({target.replace(' ', '%20')})")
        elif fmt == "html":
            links.append(html.escape(target))
        else:
            links.append(latex_escape(target))
    return links


def provenance_lines(runs: pd.DataFrame) -> list[str]:
    """Where the numbers came from: devices, versions, commits, dates, data caveats."""
    p = provenance(runs)
    if p is None:
        return []
    dirty = {True: " (dirty)", False: "", None: " (dirty flag unknown)"}
    commits = {f"{c}{dirty[d]}": n for (c, d), n in p.commits.items()}
    lines = [
        f"Devices (cells): {_counts(p.devices)}",
        f"Precision: {_counts(p.precision)}",
        f"torch: {_counts(p.torch)}",
        f"Python: {_counts(p.python)}",
        f"harness: {_counts(p.harness)}",
        f"git commits: {_counts(commits)}",
        f"Hosts: {_counts(p.hosts)}",
    ]
    if p.first_started is not None or p.last_finished is not None:
        lines.append(f"Runs from {_when(p.first_started)} to {_when(p.last_finished)}")
    lines.append(f"Status: {_counts(p.statuses)}")
    if p.paper_sources:
        lines.append(f"Paper numbers from: {', '.join(p.paper_sources)}")
    if p.cifar10_copies:
        lines.append(f"CIFAR-10 copy: {_counts(p.cifar10_copies)}")
        if set(p.cifar10_copies) != {"official"}:
            lines.append(
                "Accuracies on a copy other than the official one (e.g. the JPEG-derived, "
                "lossy copy) are comparable between schedules and runs; against the paper's "
                "numbers (official pixels) they carry an unmeasured offset."
            )
    return lines


def _short_digests(s: str) -> str:
    """A full sha256 (64 hex digits, as an arrays dataset's data_source holds) shown by its
    first 12, as git shows a commit; the run rows keep the whole."""
    return re.sub(r"\b(sha256:[0-9a-f]{12})[0-9a-f]{52}\b", r"\1", s)


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} ({n})" for k, n in sorted(counts.items()))


def _when(t: pd.Timestamp | None) -> str:
    return "?" if t is None else t.strftime("%Y-%m-%d %H:%M UTC")


def finite(x: object) -> bool:
    return isinstance(x, int | float | np.number) and bool(np.isfinite(x))


def _signed_pp(x: float) -> str:
    return f"{100 * x:+.2f} pp" if finite(x) else "–"


def _interval(lo: float, hi: float) -> str:
    """A confidence interval of a gap in percentage points: "−0.12 to +0.40 pp"."""
    if not (finite(lo) and finite(hi)):
        return "–"
    return f"{100 * lo:+.2f} to {100 * hi:+.2f} pp"


def _seeds(x: float) -> str:
    """Seeds per schedule a test would need: "12", "> 100,000" (inf), "–" (NaN)."""
    if isinstance(x, int | float | np.number) and math.isinf(x):
        return "> 100,000"
    return f"{x:,.0f}" if finite(x) else "–"


def _range(lo: float, hi: float) -> str:
    return f"{100 * lo:.2f}–{100 * hi:.2f}%" if finite(lo) and finite(hi) else "–"


def _runs(runs: object) -> str:
    """The paper's per-run accuracies, e.g. "78.7%, 77.8%"; "" where it gives none."""
    if not isinstance(runs, tuple | list) or not runs:
        return ""
    return ", ".join(f"{100 * r:.1f}%" for r in runs)


def _check_mark(ok: object, rule: object) -> str:
    """ "✓ 76,000 ≤ n ≤ 84,000", "✗ ...", "not checked", or "" without paper words."""
    known = ok if isinstance(ok, bool | np.bool_) else None
    return CountCheck(None if known is None else bool(known), str(rule or "")).mark


def _pp(x: float) -> str:
    """A fraction as percentage points: 0.0123 -> "1.23 pp"."""
    return f"{100 * x:.2f} pp" if finite(x) else "–"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%" if finite(x) else "–"


def count_text(x: float) -> str:
    if not finite(x):
        return "–"
    return f"{x:,.0f}" if abs(x - round(x)) < 1e-9 or abs(x) >= 100 else f"{x:,.1f}"


def _duration(seconds: float) -> str:
    if not finite(seconds):
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
