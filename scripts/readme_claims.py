"""The README's claims table, generated from the committed rows of the evidence study.

    python scripts/readme_claims.py          # rewrite the block in README.md
    python scripts/readme_claims.py --check  # exit 1 if README.md's block is not what the rows say

The block between the two markers below is the claims table of
`harness report suites/evidence-cpu.yaml results/evidence-cpu` (the same function,
harness.analysis.claims), shortened to the columns a landing page needs; its numbers are
never typed by hand. tests/test_claims.py runs the check.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import warnings
from pathlib import Path

import pandas as pd

from harness.analysis.claims import claims_table, format_claims
from harness.analysis.render import render
from harness.analysis.tables import load_results
from harness.config.suite import load_suite
from harness.errors import UserError

REPO = Path(__file__).resolve().parent.parent
SUITE = REPO / "suites" / "evidence-cpu.yaml"
RESULTS = REPO / "results" / "evidence-cpu"
START = "<!-- claims-table:start (scripts/readme_claims.py writes this block) -->"
END = "<!-- claims-table:end -->"
COLUMNS = ["claim", "test", "Δ final acc, interval", "pairs", "updates", "verdict"]


def block() -> str:
    suite = load_suite(SUITE)
    pre = suite.spec.report.preregistration
    assert pre is not None
    cells = {c.cell_id for c in suite.cells}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a folder without rows yet: every claim not measured
        try:
            runs = load_results([RESULTS], cells=cells).runs
        except UserError:  # no rows yet: a state of the study, every claim not measured
            runs = pd.DataFrame()
    table = format_claims(claims_table(runs, pre))[COLUMNS]
    done = 0 if runs.empty else runs["cell_id"].nunique()
    note = textwrap.fill(
        "Pre-registered in [docs/paper.md](docs/paper.md) before any of its rows: "
        "`suites/evidence-cpu.yaml`, the paper's proportions at CPU scale, "
        f"{len(pre.seeds)} seeds per arm paired by seed, a margin of {pre.margin * 100:g} pp "
        f"on final test accuracy. {done} of the suite's {len(cells)} cells have rows; a claim "
        "is pending until all its seeds are in. Generated from `results/evidence-cpu/` by "
        "`scripts/readme_claims.py`; the paper's words, the rules and each claim's power are in "
        "[its report](results/evidence-cpu/REPORT.md).",
        width=100,
    )
    return "\n".join([START, "", note, "", render(table, "github").rstrip("\n"), "", END])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    if START not in text or END not in text:
        print(f"{args.readme}: no claims-table markers ({START} ... {END})", file=sys.stderr)
        return 2
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = head + block() + tail
    if args.check:
        if new != text:
            print(f"{args.readme}: the claims table differs from the rows; run "
                  "python scripts/readme_claims.py", file=sys.stderr)  # fmt: skip
            return 1
        return 0
    args.readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
