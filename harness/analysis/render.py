"""Text from analysis frames: tables in every output format, the document around them, and
the display strings (percent, durations, counts) that the frames deliberately leave out.

`render` turns any DataFrame into markdown, github, latex, html (through tabulate) or csv
(through pandas); `Doc` adds headings, paragraphs and lists in the same format so a report
reads natively in each. Nothing here computes a statistic: the numbers come from
harness.analysis.tables and harness.analysis.sweep. (About 410 lines, not split: every
format_* function shares the same small display helpers at the bottom.)
"""

from __future__ import annotations

import html
import math
import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from harness.analysis.paper import CountCheck
from harness.analysis.tables import provenance
from harness.errors import UserError, printable

FORMATS = ("markdown", "github", "latex", "html", "csv")
_TABULATE_FORMATS = {"markdown": "pipe", "github": "github", "latex": "latex", "html": "html"}


def render(df: pd.DataFrame, fmt: str = "markdown") -> str:
    """`df` as text: markdown (pipe), github, latex, html (tabulate) or csv (pandas).

    Values are shown as given (strings are not re-parsed as numbers); the index is dropped.
    Every string cell is escaped for the format (`table_cell`): names come from rows that
    anyone sharing a results folder may have written.
    """
    check_format(fmt)
    if fmt == "csv":
        return df.map(lambda v: csv_cell(v) if isinstance(v, str) else v).to_csv(index=False)
    # NaN would print as "nan"; None prints as the empty missing value.
    cells = df.astype(object).where(df.notna(), None)
    rows = [tuple(table_cell(v, fmt) for v in r) for r in cells.itertuples(index=False, name=None)]
    headers = [str(table_cell(str(c), fmt)) for c in df.columns]
    tablefmt = _TABULATE_FORMATS[fmt]
    if fmt == "latex":
        tablefmt = "latex_raw"  # escaped by table_cell, so that ±, Δ and × can become math
    return tabulate(
        rows,
        headers=headers,
        tablefmt=tablefmt,
        disable_numparse=True,
        missingval="",
        colalign=[_align(df[c]) for c in df.columns] if len(df.columns) else None,
    )


_NUMBERISH = r"^[+\-−]?[\d.,]+(?:\s|%|×|$)"


def _align(column: pd.Series) -> str:
    """Right-align columns whose every non-empty cell reads as a number ("94.3%", "1,200")."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return "right"
    text = column.dropna().astype(str)
    text = text[(text.str.len() > 0) & (text != "–")]
    if text.empty or not text.str.match(_NUMBERISH).all():
        return "left"
    return "right"


def check_format(fmt: str) -> None:
    """`UserError` naming --format unless `fmt` is one of FORMATS."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not known; choose one of {', '.join(FORMATS)}")


WRAP = 100  # characters of a prose line in markdown
# What starts a block in markdown: a heading, a list item, a quote, a table row.
_MARKDOWN_BLOCK = re.compile(r"^(?:#|[-+*>|] |\d+[.)] )")


class Doc:
    """Headings, paragraphs and lists in the output format, so sections read natively."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.parts: list[str] = []

    def text(self, s: str) -> str:
        if self.fmt == "latex":
            return latex_escape(s)
        if self.fmt == "html":
            return html.escape(printable(s))
        return markdown_text(s)

    def heading(self, level: int, title: str) -> None:
        t = self.text(title)
        if self.fmt == "latex":
            cmd = ["section", "subsection", "subsubsection"][min(level, 3) - 1]
            self.parts.append(f"\\{cmd}*{{{t}}}")
        elif self.fmt == "html":
            self.parts.append(f"<h{level}>{t}</h{level}>")
        else:
            self.parts.append(f"{'#' * level} {t}")

    def para(self, s: str) -> None:
        t = self.text(s)
        if self.fmt == "html":
            self.parts.append(f"<p>{t}</p>")
        else:
            self.parts.append(self._wrap(t))

    def raw(self, markup: str) -> None:
        """Markup already in the output format (and escaped for it), added as it is."""
        self.parts.append(markup)

    def _wrap(self, s: str, indent: str = "") -> str:
        """Prose as lines of at most WRAP characters in markdown (a reader's terminal; the
        rendered paragraph is the same): a long word stays whole, and no line may start
        with what markdown would read as a heading, list item or quote."""
        if self.fmt not in ("markdown", "github"):
            return s
        lines = textwrap.wrap(
            s,
            WRAP,
            subsequent_indent=indent,
            break_long_words=False,
            break_on_hyphens=False,
        )
        out: list[str] = []
        for line in lines:
            if out and (out[-1].strip() == "-" or _MARKDOWN_BLOCK.match(line.strip())):
                out[-1] += " " + line.strip()
            else:
                out.append(line)
        return "\n".join(out)

    def items(self, lines: Sequence[str], raw: bool = False) -> None:
        if not lines:
            return
        items = [line if raw else self.text(line) for line in lines]
        if self.fmt == "latex":
            body = "\n".join(f"  \\item {i}" for i in items)
            self.parts.append(f"\\begin{{itemize}}\n{body}\n\\end{{itemize}}")
        elif self.fmt == "html":
            self.parts.append("<ul>\n" + "\n".join(f"<li>{i}</li>" for i in items) + "\n</ul>")
        else:
            # Raw items are markup (a figure's link): wrapping would break them.
            self.parts.append(
                "\n".join(f"- {i}" if raw else self._wrap(f"- {i}", indent="  ") for i in items)
            )

    def table(self, df: pd.DataFrame) -> None:
        text = render(df, self.fmt).rstrip("\n")
        # A wide table scrolls in its own box instead of widening the page.
        if self.fmt == "html":
            text = f'<div class="table-wrap">\n{text}\n</div>'
        self.parts.append(text)

    def __str__(self) -> str:
        return "\n\n".join(self.parts) + "\n"


# The escaping of text the report did not write (names, hosts, errors from rows) per format;
# each starts from `printable`, so no format passes a control character through.


def table_cell(value: object, fmt: str) -> object:
    """A table cell as a tabulate `fmt` shows it: strings escaped (None, missing, kept); csv
    cells are `csv_cell`'s."""
    if value is None:
        return None
    if fmt == "latex":
        return latex_escape(str(value))
    if not isinstance(value, str):
        return value
    if fmt in ("markdown", "github"):
        return markdown_text(value, cell=True)
    return printable(value)  # html: tabulate escapes & < > itself


def markdown_text(s: str, cell: bool = False) -> str:
    """`s` as markdown text: no raw HTML (``<script>``, ``<img onerror>``), no math (``$``,
    which GitHub renders) and, in a table `cell`, no column break (``|``, escaped with its
    backslash escapes)."""
    s = printable(s)
    if cell:
        s = s.replace("\\", "\\\\").replace("|", "\\|")
    return s.replace("$", "\\$").replace("<", "&lt;").replace(">", "&gt;")


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as a formula


def csv_cell(s: str) -> str:
    """`s` as a CSV cell a spreadsheet shows as text: one starting like a formula (``=``,
    ``+``, ``-``, ``@``, tab, CR) gets a leading ``'``, as OWASP's CSV-injection advice says;
    a plain number ("-0.25") is left as it is."""
    if s.startswith(_FORMULA_START) and not _is_number(s):
        s = "'" + s
    return printable(s)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def latex_escape(s: str) -> str:
    """`s` as LaTeX text; ±, Δ and × become math so that tables keep their symbols."""
    s = printable(s)
    out = []
    table = {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
        "±": r"$\pm$",
        "≤": r"$\leq$",
        "<": r"$<$",
        ">": r"$>$",
        "✓": r"$\checkmark$",  # amssymb, which most documents load
        "✗": r"$\times$",
        "Δ": r"$\Delta$",
        "×": r"$\times$",
        "–": "--",
        "−": "-",
    }
    for ch in s:
        out.append(table.get(ch, ch))
    return "".join(out)


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
            "updates": [_count(u) for u in summary["updates"]],
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
            "paper acc": [_pct(p) if _finite(p) else "" for p in summary["paper_test_acc"]],
            "paper runs": [_runs(r) for r in summary["paper_test_acc_runs"]],
            "Δ vs paper": [f"{d:+.2f} pp" if _finite(d) else "" for d in summary["diff_pp"]],
            "wall clock": [_duration(s) for s in summary["wall_clock_s"]],
            "images/s": [_count(x) for x in summary["images_per_s"]],
            "device": summary["devices"],
            "data": [_short_digests(str(d)) for d in summary["data"]],
            "status": summary["status"],
        }
    )


def format_equivalence(eq: pd.DataFrame) -> pd.DataFrame:
    """The equivalence table as display strings: accuracy gaps in percentage points."""
    pp = _pp

    def loss(x: float) -> str:
        return f"{x:.3g}" if _finite(x) else "–"

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
            "updates ratio": [f"{x:.3g}×" if _finite(x) else "–" for x in eq["update_ratio"]],
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


def format_epochs_lost(lost: pd.DataFrame) -> pd.DataFrame:
    """Appendix A's N_lost per phase (frames of harness.analysis.momentum.epochs_lost_table):
    one cell per schedule, "epochs 0-60: B 3200, m 0.98 → 3.2; ...", and per plan where the
    seeds of a schedule planned differently (an adaptive batch), the schedule naming them."""

    def phases(row: Any) -> str:
        return "; ".join(
            f"{a}-{b}: B {bs}, m {m:g} → {x:.3g}"
            for (a, b), bs, m, x in zip(
                row.phases, row.batch_sizes, row.momenta, row.epochs_lost, strict=True
            )
        )

    def schedule(row: Any, split: bool) -> str:
        if not split:
            return str(row.schedule)
        seeds: tuple[int, ...] = row.seeds
        return f"{row.schedule} (seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))})"

    keys = ["suite", "experiment", "optimizer", "model", "schedule"]
    several = lost.duplicated(keys, keep=False).tolist()  # a schedule with several plans
    return pd.DataFrame(
        {
            "experiment": lost["experiment"],
            "optimizer": lost["optimizer"],
            "model": lost["model"],
            "schedule": [
                schedule(r, split)
                for r, split in zip(lost.itertuples(index=False), several, strict=True)
            ],
            "epochs lost per phase (epochs: B, m → N_lost)": [
                phases(r) for r in lost.itertuples(index=False)
            ],
            "largest N_lost": [f"{max(x):.3g}" if x else "–" for x in lost["epochs_lost"]],
        }
    )


def format_sweep(sweep: pd.DataFrame) -> pd.DataFrame:
    """A batch sweep's cells: steps and epochs to the target, measured B_simple."""

    def num(x: float, fmt: str = ".1f") -> str:
        return format(x, fmt) if _finite(x) else "–"

    return pd.DataFrame(
        {
            "experiment": sweep["experiment"],
            "optimizer": sweep["optimizer"],
            "B": sweep["batch_size"].astype(str),
            "lr": [f"{x:g}" for x in sweep["lr"]],
            "steps to target": [
                ("≤ " if early else "") + num(x, ",.0f") if ok else "not reached"
                for x, ok, early in zip(sweep["steps"], sweep["reached"], sweep["upper_bound"])
            ],
            "epochs to target": [num(x, ".2f") for x in sweep["epochs"]],
            "trained epochs": sweep["trained_epochs"].astype(str),
            "final value": [num(x, ".4g") for x in sweep["final_value"]],
            "B_simple (to target)": [num(x, ".0f") for x in sweep["b_simple"]],
        }
    )


def format_fits(fits: pd.DataFrame) -> pd.DataFrame:
    """A batch sweep's critical batch size from both fits, beside the pooled B_simple."""

    def est(x: float, se: float) -> str:
        return "–" if not _finite(x) else f"{x:.0f} ± {se:.0f}" if _finite(se) else f"{x:.0f}"

    return pd.DataFrame(
        {
            "experiment": fits["experiment"],
            "optimizer": fits["optimizer"],
            "model": fits["model"],
            "seed": fits["seed"].astype(str),
            "target": [f"{m} = {t:g}" for m, t in zip(fits["metric"], fits["target"])],
            "cells fitted": [f"{f} of {c}" for f, c in zip(fits["fitted"], fits["cells"])],
            "B_noise from S(B)": [
                est(x, se) for x, se in zip(fits["b_noise_steps"], fits["b_noise_steps_se"])
            ],
            "S_min": [_count(x) for x in fits["steps_min"]],
            "B_noise from E(B)": [
                est(x, se) for x, se in zip(fits["b_noise_epochs"], fits["b_noise_epochs_se"])
            ],
            "E_min": [f"{x:.2f}" if _finite(x) else "–" for x in fits["epochs_min"]],
            "B_simple measured": [est(x, math.nan) for x in fits["b_simple_pooled"]],
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
                f"{_signed_pp(x)} ({s})" if _finite(x) else "–"
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


def _finite(x: object) -> bool:
    return isinstance(x, int | float | np.number) and bool(np.isfinite(x))


def _signed_pp(x: float) -> str:
    return f"{100 * x:+.2f} pp" if _finite(x) else "–"


def _interval(lo: float, hi: float) -> str:
    """A confidence interval of a gap in percentage points: "−0.12 to +0.40 pp"."""
    if not (_finite(lo) and _finite(hi)):
        return "–"
    return f"{100 * lo:+.2f} to {100 * hi:+.2f} pp"


def _seeds(x: float) -> str:
    """Seeds per schedule a test would need: "12", "> 100,000" (inf), "–" (NaN)."""
    if isinstance(x, int | float | np.number) and math.isinf(x):
        return "> 100,000"
    return f"{x:,.0f}" if _finite(x) else "–"


def _range(lo: float, hi: float) -> str:
    return f"{100 * lo:.2f}–{100 * hi:.2f}%" if _finite(lo) and _finite(hi) else "–"


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
    return f"{100 * x:.2f} pp" if _finite(x) else "–"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%" if _finite(x) else "–"


def _count(x: float) -> str:
    if not _finite(x):
        return "–"
    return f"{x:,.0f}" if abs(x - round(x)) < 1e-9 or abs(x) >= 100 else f"{x:,.1f}"


def _duration(seconds: float) -> str:
    if not _finite(seconds):
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
