"""Text from analysis frames: tables in every output format, the document around them, and
the display strings (percent, durations, counts) that the frames deliberately leave out.

`render` turns any DataFrame into markdown, github, latex, html (through tabulate) or csv
(through pandas); `Doc` adds headings, paragraphs and lists in the same format so a report
reads natively in each. The frames' display strings (percent, intervals, durations) are
harness.analysis.display's; nothing here computes a statistic.
"""

from __future__ import annotations

import html
import re
import textwrap
from collections.abc import Sequence

import pandas as pd
from tabulate import tabulate

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
