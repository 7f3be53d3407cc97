"""The report: summary, equivalence, figures and provenance of results folders, per suite.

This module owns only the report's order and wording; the numbers come from
harness.analysis.tables, the text formats from harness.analysis.render, and the figures from
harness.analysis.figures (imported only when figures are asked for, since matplotlib is slow
to import).
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from harness.analysis.adaptive import DECISION_RULE, decisions_table, format_decisions
from harness.analysis.claims import claims_rule, claims_table, format_claims
from harness.analysis.momentum import EPOCHS_LOST_RULE, epochs_lost_table
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
from harness.analysis.tables import GROUP, equivalence_table, load_results, summary_table
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
    equivalence = equivalence_table(results)
    sweeps = sweep_table(results)
    lost = epochs_lost_table(results)
    decided = decisions_table(results)
    doc = Doc(fmt)
    doc.heading(1, "Don't Decay the Learning Rate, Increase the Batch Size: results")
    doc.para(
        "Results folders: "
        + ", ".join(str(d) for d in results.dirs)
        + f". {results.runs['cell_id'].nunique()} cells. Accuracies are final test accuracy "
        "(mean ± std over seeds; seed range is min–max, n the seeds with a final accuracy); "
        "Δ vs paper is measured minus paper, in percentage points. Updates vs paper checks "
        "every seed's update count against the paper's words, read as the interval shown "
        f"({COUNT_RULES}); 'not checked' where the words are not read."
    )
    if scope is not None:
        doc.para(
            f"Only the cells that {scope} defines now; {results.left_out} row(s) of other "
            "cells in these folders are left out."
        )
    for name, pre in sorted((preregistrations or {}).items()):
        runs = results.runs[results.runs["suite"].astype(str) == name]
        doc.heading(2, f"The paper's claims: suite {name}")
        doc.para(claims_rule(pre))
        doc.table(format_claims(claims_table(runs, pre)))
    for suite in sorted(results.runs["suite"].astype(str).unique()):
        doc.heading(2, f"Suite {suite}")
        doc.heading(3, "Summary")
        doc.table(format_summary(summary[summary["suite"] == suite]))
        clashes = [c for c in results.clashes if c.suite == suite]
        if clashes:
            doc.para(
                "Rows of several recipes under one label are shown apart, the schedule "
                "followed by the values its recipe differs in; seeds pool only within one "
                "recipe, and these groups are left out of the equivalence table and the "
                "batch-sweep fits. Pass the "
                "suite file (`harness report SUITE`) to show only the cells it defines now:"
            )
            doc.items([f"{c.name}: {c.difference}" for c in clashes])
        eq = equivalence[equivalence["suite"] == suite]
        sweep = sweeps[sweeps["suite"] == suite] if not sweeps.empty else sweeps
        if not sweep.empty:  # a sweep's constant batches are not realizations of one schedule
            eq = eq[~eq["experiment"].isin(set(sweep["experiment"]))]
        if eq.empty and not sweep.empty:
            pass  # a suite of sweeps alone: nothing to compare with decaying lr
        elif eq.empty:
            doc.heading(3, "Equivalence with decaying lr at equal epochs")
            doc.para(
                "Nothing left to compare: the groups with rows of several recipes "
                "(above) are left out."
                if clashes
                else "No experiment has a decaying-lr (realization lr) reference to compare."
            )
        else:
            doc.heading(3, "Equivalence with decaying lr at equal epochs")
            doc.para(
                "Curves are means over seeds. A gap is the largest per-epoch |difference| from "
                "the reference (vs) in test accuracy (percentage points) or training loss, "
                "after the first milestone and over the last 10% of epochs; updates ratio is "
                "this schedule's updates over the reference's. The paper's claim: gaps about "
                "the seed-to-seed spread, updates ratio well below 1."
            )
            doc.para(VERDICT_RULE)
            doc.para(TOST_RULE)
            doc.table(format_verdicts(group_verdicts(eq, GROUP)))
            doc.para("Per schedule:")
            doc.table(format_equivalence(eq))
        if not sweep.empty:
            doc.heading(3, "Batch sweep: the critical batch size")
            doc.para(SWEEP_RULE)
            doc.table(format_fits(fits_table(sweep)))
            doc.para("Per batch size:")
            doc.table(format_sweep(sweep))
        decided_here = decided[decided["suite"] == suite]
        if not decided_here.empty:
            doc.heading(3, "Adaptive batch: the decisions")
            doc.para(DECISION_RULE)
            doc.table(format_decisions(decided_here))
        lost_here = lost[lost["suite"] == suite]
        if not lost_here.empty:
            doc.heading(3, "Epochs lost to the momentum accumulation (Appendix A)")
            doc.para(EPOCHS_LOST_RULE)
            doc.table(format_epochs_lost(lost_here))
        if figures_dir is not None:
            from harness.analysis.figures import write_figures

            paths = write_figures(results, Path(figures_dir), suites=[suite])
            doc.heading(3, "Figures")
            doc.items(figure_links(paths, fmt, links_relative_to), raw=fmt != "latex")
        doc.heading(3, "Provenance")
        doc.items(provenance_lines(results.runs[results.runs["suite"] == suite]))
    if results.skipped:
        doc.heading(2, "Unreadable files (skipped)")
        doc.items([f"{shown(s.path)}: {s.reason}" for s in results.skipped])
    return str(doc)


def _clash_hint(line: str) -> str:
    return f"{line}; `harness report SUITE` shows only the suite's current cells"
