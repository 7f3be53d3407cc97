"""The report: summary, equivalence, figures and provenance of results folders, per suite.

This module owns the document around the sections: the title, the claims, a heading per
suite, the unreadable files and the closing rules. Each suite's sections are registered in
harness.analysis.sections (a new one is a function and one entry there); the numbers come
from harness.analysis.tables and the topic modules, the text formats from
harness.analysis.render, and the figures from harness.analysis.figures (imported only when
figures are asked for, since matplotlib is slow to import).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Collection, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path

import pandas as pd

from harness.analysis.claims import claims_rule, claims_table, format_claims
from harness.analysis.page import page
from harness.analysis.recipes import RecipeClashWarning
from harness.analysis.render import Doc, check_format, render
from harness.analysis.sections import Part, Report, write_suite
from harness.analysis.tables import Results, load_results, summary_table
from harness.config.schema import PreregistrationSpec
from harness.fsio import shown

# check_format is part of this module's interface: the CLI checks --format before work.
__all__ = ["build_report", "check_format"]


def build_report(
    dirs: Sequence[Path | str],
    fmt: str = "markdown",
    figures_dir: Path | None = None,
    links_relative_to: Path | None = None,
    cells: Collection[str] | None = None,
    scope: str | None = None,
    preregistrations: Mapping[str, PreregistrationSpec] | None = None,
    claim_cells: Mapping[str, Collection[str]] | None = None,
) -> str:
    """The whole report for results folders `dirs`, as text in `fmt`.

    Per suite: the summary table, the equivalence table, figure links (written to
    `figures_dir` when given; markdown image links for markdown/github, plain paths
    otherwise, relative to `links_relative_to` when given) and provenance.
    Files that could not be read are listed at the end (and warned about).
    `fmt="csv"` returns the summary table alone (fractions, every suite) so that the output
    stays one parseable CSV. `UserError` on an unknown format or unusable folders.

    `cells` (a suite's cell ids; `scope` names the suite file) keeps only those cells' rows,
    so rows of other recipes can stay in the folders and out of the tables. Rows of several
    recipes under one label are shown apart and warned about (`RecipeClashWarning`), one
    line each. `preregistrations` (suite name -> its `report.preregistration`, from the suite
    files given) puts each suite's claims table first, decided by its stated tests, on the
    rows of its cells: those `claim_cells[suite]` names (the suite file's cell ids, so a cell
    it shares with another suite counts wherever its row was written), else the rows written
    under the suite's name.
    """
    check_format(fmt)
    results = load_results(dirs, cells=cells)
    for clash in results.clashes:
        warnings.warn(RecipeClashWarning(_clash_hint(clash.line())), stacklevel=2)
    summary = summary_table(results)
    if fmt == "csv":
        return render(summary, "csv")
    with ExitStack() as stack:
        if fmt == "html" and figures_dir is None:
            # The page carries its figures inline, so they are drawn even without a folder.
            figures_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        return _document(
            results,
            summary,
            fmt,
            figures_dir,
            links_relative_to,
            scope,
            preregistrations or {},
            claim_cells or {},
        )


def _document(
    results: Results,
    summary: pd.DataFrame,
    fmt: str,
    figures_dir: Path | None,
    links_relative_to: Path | None,
    scope: str | None,
    preregistrations: Mapping[str, PreregistrationSpec],
    claim_cells: Mapping[str, Collection[str]],
) -> str:
    """The report in reading order: the claims, then per suite the sections registered in
    `harness.analysis.sections.SECTIONS` that apply to it; how each number is computed last,
    once."""
    suites = sorted(results.runs["suite"].astype(str).unique())
    doc = Doc(fmt)
    report = Report(results, summary, doc, figures_dir, links_relative_to)
    doc.heading(1, TITLE)
    doc.para(
        "Results folders: "
        + ", ".join(str(d) for d in results.dirs)
        + f". {_plural(results.runs['cell_id'].nunique(), 'cell')}. Per suite, the verdicts "
        "come first, then the tables they rest on; how each number is computed is under "
        f"'{METHOD}' at the end."
    )
    if scope is not None:
        left_out = int(results.left_out)
        doc.para(
            f"Only the cells that {scope} defines now; {_plural(left_out, 'row')} of other "
            f"cells in these folders {'is' if left_out == 1 else 'are'} left out."
        )
    for name, pre in sorted(preregistrations.items()):
        runs = results.runs
        if name in claim_cells:
            runs = runs[runs["cell_id"].isin(set(claim_cells[name]))]
        else:
            runs = runs[runs["suite"].astype(str) == name]
        doc.heading(2, f"The paper's claims: suite {name}")
        doc.table(format_claims(claims_table(runs, pre)))
        report.method[f"The paper's claims ({name})"] = claims_rule(pre)
    for suite in suites:
        doc.heading(2, f"Suite {suite}")
        write_suite(Part(report, suite))
    if results.skipped:
        doc.heading(2, "Unreadable files (skipped)")
        doc.items([f"{shown(s.path)}: {s.reason}" for s in results.skipped])
    doc.heading(2, METHOD)
    for name, rule in report.method.items():
        doc.heading(3, name)
        doc.para(rule)
    if fmt != "html":
        return str(doc)
    return page(f"{TITLE} ({', '.join(suites)})", str(doc))


TITLE = "Don't Decay the Learning Rate, Increase the Batch Size: results"
METHOD = "How to read this report"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _clash_hint(line: str) -> str:
    return f"{line}; `harness report SUITE` shows only the suite's current cells"
