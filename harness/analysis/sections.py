"""The report's per-suite sections, registered by name in reading order.

A section is a `Section`: its name, `applies` (whether one suite's part of the report has
it) and `write` (its headings, tables and paragraphs on the report's `Doc`, and the rule its
numbers rest on, for the report's closing "How to read this report"). `build_report`
(harness.analysis.document) writes, for each suite, every section of `SECTIONS` that applies,
in this order; a new section is a function here (or in its own module) and one entry.

Where a section's parts live (the rule):
- its numbers: a `*_table(results)` function of its topic module (`analysis/sweep.py`,
  `momentum.py`, `adaptive_decisions.py`, ...), every suite at once, with a `suite` column; a
  section reads its suite's rows through `Part.rows`, which computes each table once per report;
- its rule text (how its numbers are computed): a `*_RULE` constant beside the numbers;
- its formatter (numbers as the strings shown): `format_*` beside the numbers too, in the
  topic module. What several sections share is in two modules: `analysis/render.py`, the `Doc`
  writer and each output format; `analysis/display.py`, the number formats, figure links,
  provenance lines and the formatters of `tables.py`'s own tables (summary, equivalence,
  verdicts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from harness.analysis.adaptive_decisions import DECISION_RULE, decisions_table, format_decisions
from harness.analysis.display import (
    figure_links,
    format_equivalence,
    format_summary,
    format_verdicts,
    provenance_lines,
)
from harness.analysis.momentum import EPOCHS_LOST_RULE, epochs_lost_table, format_epochs_lost
from harness.analysis.page import inline_figure
from harness.analysis.paper import COUNT_RULES
from harness.analysis.recipes import Clash
from harness.analysis.render import Doc
from harness.analysis.seeds import TOST_RULE, VERDICT_RULE, group_verdicts
from harness.analysis.sweep import SWEEP_RULE, fits_table, format_fits, format_sweep, sweep_table
from harness.analysis.tables import GROUP, Results, equivalence_table

Table = Callable[[Results], pd.DataFrame]


@dataclass
class Report:
    """What every section of one report reads and writes."""

    results: Results
    summary: pd.DataFrame  # harness.analysis.tables.summary_table, every suite
    doc: Doc
    figures_dir: Path | None  # figures are drawn only with a folder for them
    links_relative_to: Path | None
    method: dict[str, str] = field(default_factory=dict)  # rules shown, in order of appearance
    _tables: dict[Table, pd.DataFrame] = field(default_factory=dict)

    @property
    def fmt(self) -> str:
        return self.doc.fmt

    def table(self, make: Table) -> pd.DataFrame:
        """`make(results)`, every suite, computed once per report."""
        if make not in self._tables:
            self._tables[make] = make(self.results)
        return self._tables[make]


@dataclass
class Part:
    """One suite's part of the report: what its sections read."""

    report: Report
    suite: str

    def rows(self, make: Table) -> pd.DataFrame:
        """This suite's rows of the table `make` gives."""
        table = self.report.table(make)
        return table if table.empty else table[table["suite"] == self.suite]

    @cached_property
    def sweep(self) -> pd.DataFrame:
        return self.rows(sweep_table)

    @cached_property
    def equivalence(self) -> pd.DataFrame:
        eq = self.rows(equivalence_table)
        if not self.sweep.empty:  # a sweep's constant batches are not realizations of one schedule
            eq = eq[~eq["experiment"].isin(set(self.sweep["experiment"]))]
        return eq

    @cached_property
    def clashes(self) -> list[Clash]:
        return [c for c in self.report.results.clashes if c.suite == self.suite]


@dataclass(frozen=True)
class Section:
    """One registered section of a suite's part of the report."""

    name: str
    write: Callable[[Part], None]  # its headings, tables and rule (see the module docstring)
    applies: Callable[[Part], bool] = lambda part: True


def _verdicts(part: Part) -> None:
    doc = part.report.doc
    doc.heading(3, "Verdicts: equivalence with decaying lr at equal epochs")
    if not part.equivalence.empty:
        doc.table(filled(format_verdicts(group_verdicts(part.equivalence, GROUP))))
        part.report.method["Paired equivalence test"] = TOST_RULE
        part.report.method["Seed spread (a description)"] = VERDICT_RULE
    else:
        doc.para(
            "Nothing left to compare: the groups with rows of several recipes (below) are left out."
            if part.clashes
            else "No experiment has a decaying-lr (realization lr) reference to compare."
        )


def _sweep_fits(part: Part) -> None:
    part.report.doc.heading(3, "Batch sweep: the critical batch size")
    part.report.doc.table(filled(format_fits(fits_table(part.sweep))))
    part.report.method["Batch sweep"] = SWEEP_RULE


def _summary(part: Part) -> None:
    summary = part.report.summary
    part.report.doc.heading(3, "Summary")
    table = filled(format_summary(summary[summary["suite"] == part.suite]))
    part.report.doc.table(table)
    part.report.method["Summary"] = summary_rule("updates vs paper" in table.columns)


def _clashes(part: Part) -> None:
    part.report.doc.para(
        "Rows of several recipes under one label are shown apart, the schedule "
        "followed by the values its recipe differs in; seeds pool only within one "
        "recipe, and these groups are left out of the equivalence table and the "
        "batch-sweep fits. Pass the "
        "suite file (`harness report SUITE`) to show only the cells it defines now:"
    )
    part.report.doc.items([f"{c.name}: {c.difference}" for c in part.clashes])


def _per_schedule(part: Part) -> None:
    part.report.doc.heading(3, "Per schedule")
    part.report.doc.table(filled(format_equivalence(part.equivalence)))
    part.report.method["Curve gaps"] = GAPS_RULE


def _sweep_cells(part: Part) -> None:
    part.report.doc.heading(3, "Batch sweep per batch size")
    part.report.doc.table(filled(format_sweep(part.sweep)))


def _decisions(part: Part) -> None:
    part.report.doc.heading(3, "Adaptive batch: the decisions")
    part.report.doc.table(filled(format_decisions(part.rows(decisions_table))))
    part.report.method["Adaptive batch"] = DECISION_RULE


def _epochs_lost(part: Part) -> None:
    part.report.doc.heading(3, "Epochs lost to the momentum accumulation (Appendix A)")
    part.report.doc.table(filled(format_epochs_lost(part.rows(epochs_lost_table))))
    part.report.method["Epochs lost"] = EPOCHS_LOST_RULE


def _figures(part: Part) -> None:
    from harness.analysis.figures import write_figures  # matplotlib: only when drawn

    report = part.report
    assert report.figures_dir is not None
    paths = write_figures(report.results, Path(report.figures_dir), suites=[part.suite])
    report.doc.heading(3, "Figures")
    if report.fmt == "html":
        report.doc.raw("\n".join(inline_figure(path) for path in paths))
    else:
        report.doc.items(
            figure_links(paths, report.fmt, report.links_relative_to), raw=report.fmt != "latex"
        )


def _provenance(part: Part) -> None:
    runs = part.report.results.runs
    part.report.doc.heading(3, "Provenance")
    part.report.doc.items(provenance_lines(runs[runs["suite"] == part.suite]))


# A suite's part of the report, in reading order: the verdicts first, then the tables they
# rest on, figures and provenance. `register` adds one (a plug-in's, a new topic's).
SECTIONS: list[Section] = [
    Section(
        "verdicts",
        _verdicts,
        # a sweep alone has nothing to compare, and says so by its own section
        applies=lambda part: not part.equivalence.empty or part.sweep.empty,
    ),
    Section("sweep fits", _sweep_fits, applies=lambda part: not part.sweep.empty),
    Section("summary", _summary),
    Section("recipe clashes", _clashes, applies=lambda part: bool(part.clashes)),
    Section("per schedule", _per_schedule, applies=lambda part: not part.equivalence.empty),
    Section("sweep cells", _sweep_cells, applies=lambda part: not part.sweep.empty),
    Section("decisions", _decisions, applies=lambda part: not part.rows(decisions_table).empty),
    Section(
        "epochs lost", _epochs_lost, applies=lambda part: not part.rows(epochs_lost_table).empty
    ),
    Section("figures", _figures, applies=lambda part: part.report.figures_dir is not None),
    Section("provenance", _provenance),
]


def register(section: Section, before: str = "figures") -> Section:
    """Add `section` to every report, just before the section named `before` (by default the
    figures: a new topic's tables after the built-in ones); ValueError for a name already
    taken or an unknown `before`."""
    names = [s.name for s in SECTIONS]
    if section.name in names:
        raise ValueError(f"a report section named {section.name!r} is already registered")
    if before not in names:
        raise ValueError(f"no report section named {before!r}; choose one of: {names}")
    SECTIONS.insert(names.index(before), section)
    return section


def write_suite(part: Part) -> None:
    """Every section of `SECTIONS` that applies to `part`, in order."""
    for section in SECTIONS:
        if section.applies(part):
            section.write(part)


GAPS_RULE = (
    "Curves are means over seeds. A gap is the largest per-epoch |difference| from the "
    "reference (vs) in test accuracy (percentage points) or training loss, after the first "
    "milestone and over the last 10% of epochs; updates ratio is this schedule's updates over "
    "the reference's. Gaps are taken after the first milestone: before it the curves of one "
    "seed coincide by construction (the same seed, lr and B), which is no evidence."
)


def summary_rule(paper_columns: bool) -> str:
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


def filled(table: pd.DataFrame) -> pd.DataFrame:
    """`table` less the columns empty in every row (the paper's numbers for a suite that is
    not the paper's); a table without rows keeps its header."""
    if table.empty:
        return table
    keep = [c for c in table.columns if not table[c].map(lambda v: v is None or v == "").all()]
    return table[keep]
