"""The report: summary, equivalence, figures and provenance of results folders, per suite.

This module owns only the report's order and wording; the numbers come from
harness.analysis.tables, the text formats from harness.analysis.render, and the figures from
harness.analysis.figures (imported only when figures are asked for, since matplotlib is slow
to import).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Collection, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path

import pandas as pd

from harness.analysis.adaptive import DECISION_RULE, decisions_table, format_decisions
from harness.analysis.claims import claims_rule, claims_table, format_claims
from harness.analysis.momentum import EPOCHS_LOST_RULE, epochs_lost_table
from harness.analysis.page import inline_figure, page
from harness.analysis.paper import COUNT_RULES
from harness.analysis.recipes import RecipeClashWarning
from harness.analysis.render import (
    Doc,
    check_format,
    figure_links,
    format_epochs_lost,
    format_equivalence,
    format_fits,
    format_summary,
    format_sweep,
    format_verdicts,
    provenance_lines,
    render,
)
from harness.analysis.seeds import TOST_RULE, VERDICT_RULE, group_verdicts
from harness.analysis.sweep import SWEEP_RULE, fits_table, sweep_table
from harness.analysis.tables import (
    GROUP,
    Results,
    equivalence_table,
    load_results,
    summary_table,
)
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
    files given) puts each suite's claims table first, decided by its stated tests.
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
            results, summary, fmt, figures_dir, links_relative_to, scope, preregistrations or {}
        )


def _document(
    results: Results,
    summary: pd.DataFrame,
    fmt: str,
    figures_dir: Path | None,
    links_relative_to: Path | None,
    scope: str | None,
    preregistrations: Mapping[str, PreregistrationSpec],
) -> str:
    """The report's sections in reading order: per suite the verdicts first, then the tables
    they rest on, figures and provenance; how each number is computed last, once."""
    equivalence = equivalence_table(results)
    sweeps = sweep_table(results)
    lost = epochs_lost_table(results)
    decided = decisions_table(results)
    suites = sorted(results.runs["suite"].astype(str).unique())
    doc = Doc(fmt)
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
    method: dict[str, str] = {}  # the rules of the sections shown, in order of appearance
    for name, pre in sorted(preregistrations.items()):
        runs = results.runs[results.runs["suite"].astype(str) == name]
        doc.heading(2, f"The paper's claims: suite {name}")
        doc.table(format_claims(claims_table(runs, pre)))
        method[f"The paper's claims ({name})"] = claims_rule(pre)
    for suite in suites:
        doc.heading(2, f"Suite {suite}")
        clashes = [c for c in results.clashes if c.suite == suite]
        eq = equivalence[equivalence["suite"] == suite]
        sweep = sweeps[sweeps["suite"] == suite] if not sweeps.empty else sweeps
        if not sweep.empty:  # a sweep's constant batches are not realizations of one schedule
            eq = eq[~eq["experiment"].isin(set(sweep["experiment"]))]
        if not eq.empty:
            doc.heading(3, "Verdicts: equivalence with decaying lr at equal epochs")
            doc.table(_shown(format_verdicts(group_verdicts(eq, GROUP))))
            method["Paired equivalence test"] = TOST_RULE
            method["Seed spread (a description)"] = VERDICT_RULE
        elif sweep.empty:
            doc.heading(3, "Verdicts: equivalence with decaying lr at equal epochs")
            doc.para(
                "Nothing left to compare: the groups with rows of several recipes "
                "(below) are left out."
                if clashes
                else "No experiment has a decaying-lr (realization lr) reference to compare."
            )
        if not sweep.empty:
            doc.heading(3, "Batch sweep: the critical batch size")
            doc.table(_shown(format_fits(fits_table(sweep))))
            method["Batch sweep"] = SWEEP_RULE
        doc.heading(3, "Summary")
        shown_summary = _shown(format_summary(summary[summary["suite"] == suite]))
        doc.table(shown_summary)
        method["Summary"] = _summary_rule("updates vs paper" in shown_summary.columns)
        if clashes:
            doc.para(
                "Rows of several recipes under one label are shown apart, the schedule "
                "followed by the values its recipe differs in; seeds pool only within one "
                "recipe, and these groups are left out of the equivalence table and the "
                "batch-sweep fits. Pass the "
                "suite file (`harness report SUITE`) to show only the cells it defines now:"
            )
            doc.items([f"{c.name}: {c.difference}" for c in clashes])
        if not eq.empty:
            doc.heading(3, "Per schedule")
            doc.table(_shown(format_equivalence(eq)))
            method["Curve gaps"] = GAPS_RULE
        if not sweep.empty:
            doc.heading(3, "Batch sweep per batch size")
            doc.table(_shown(format_sweep(sweep)))
        decided_here = decided[decided["suite"] == suite]
        if not decided_here.empty:
            doc.heading(3, "Adaptive batch: the decisions")
            doc.table(_shown(format_decisions(decided_here)))
            method["Adaptive batch"] = DECISION_RULE
        lost_here = lost[lost["suite"] == suite]
        if not lost_here.empty:
            doc.heading(3, "Epochs lost to the momentum accumulation (Appendix A)")
            doc.table(_shown(format_epochs_lost(lost_here)))
            method["Epochs lost"] = EPOCHS_LOST_RULE
        if figures_dir is not None:
            from harness.analysis.figures import write_figures

            paths = write_figures(results, Path(figures_dir), suites=[suite])
            doc.heading(3, "Figures")
            if fmt == "html":
                doc.raw("\n".join(inline_figure(path) for path in paths))
            else:
                doc.items(figure_links(paths, fmt, links_relative_to), raw=fmt != "latex")
        doc.heading(3, "Provenance")
        doc.items(provenance_lines(results.runs[results.runs["suite"] == suite]))
    if results.skipped:
        doc.heading(2, "Unreadable files (skipped)")
        doc.items([f"{shown(s.path)}: {s.reason}" for s in results.skipped])
    doc.heading(2, METHOD)
    for name, rule in method.items():
        doc.heading(3, name)
        doc.para(rule)
    if fmt != "html":
        return str(doc)
    return page(f"{TITLE} ({', '.join(suites)})", str(doc))


TITLE = "Don't Decay the Learning Rate, Increase the Batch Size: results"
METHOD = "How to read this report"
GAPS_RULE = (
    "Curves are means over seeds. A gap is the largest per-epoch |difference| from the "
    "reference (vs) in test accuracy (percentage points) or training loss, after the first "
    "milestone and over the last 10% of epochs; updates ratio is this schedule's updates over "
    "the reference's. Gaps are taken after the first milestone: before it the curves of one "
    "seed coincide by construction (the same seed, lr and B), which is no evidence."
)


def _summary_rule(paper_columns: bool) -> str:
    text = (
        "Accuracies are final test accuracy (mean ± std over seeds; seed range is min–max, n "
        "the seeds with a final accuracy)."
    )
    if paper_columns:
        text += (
            " Δ vs paper is measured minus paper, in percentage points. Updates vs paper "
            "checks every seed's update count against the paper's words, read as the interval "
            f"shown ({COUNT_RULES}); 'not checked' where the words are not read."
        )
    return text


def _shown(table: pd.DataFrame) -> pd.DataFrame:
    """`table` less the columns empty in every row (the paper's numbers for a suite that is
    not the paper's); a table without rows keeps its header."""
    if table.empty:
        return table
    keep = [c for c in table.columns if not table[c].map(lambda v: v is None or v == "").all()]
    return table[keep]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _clash_hint(line: str) -> str:
    return f"{line}; `harness report SUITE` shows only the suite's current cells"
