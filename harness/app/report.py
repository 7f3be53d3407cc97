"""`harness report`: which folders and cells the report covers, and where it is written.

The arguments may mix suite files (only the cells they define now, from the suite's default
folder, runs/<suite name>, unless folders are given too) and results folders (or folders
holding them; by default every suite folder under runs/: the user's own runs, never the
project's committed results/). The document itself is `analysis.document.build_report`'s; it is
written atomically with its figures beside it, or goes to stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.analysis.document import build_report
from harness.analysis.render import check_format
from harness.app.trackers import require
from harness.app.tracking import export
from harness.config.suite import load_suite
from harness.errors import UserError, printable
from harness.fsio import atomic_path, containing
from harness.results.paths import default_folder, results_root
from harness.results.store import report_folders, suite_folders


def report_command(
    dirs: list[Path] | None,
    overrides: list[str] | None,
    fmt: str,
    out: Path | None,
    figures: Path | None,
    track: tuple[str, ...] = (),
    track_dir: Path | None = None,
) -> None:
    """`harness report`: the report on stdout, or in `out` (and its figures). `track`: the
    rows also sent to these trackers (`app.tracking.export`; local stores under `track_dir`,
    default each results folder's logs/)."""
    check_format(fmt)
    require(track)  # a missing extra: one line, before anything is read
    given = list(dirs or [])
    suites = [p for p in given if p.suffix in (".yaml", ".yml")]
    for path in suites:
        if not path.is_file():
            raise UserError(f"{path}: no such suite file; pass a suite YAML or a results folder")
    folders = [p for p in given if p not in suites]
    cells: set[str] | None = None
    preregistrations = {}
    claim_cells: dict[str, set[str]] = {}
    if suites:
        loaded = [load_suite(p, overrides=overrides or ()) for p in suites]
        cells = {c.cell_id for s in loaded for c in s.cells}
        preregistrations = {
            s.name: s.spec.report.preregistration
            for s in loaded
            if s.spec.report.preregistration is not None
        }
        # A suite's claims are decided on its own cells, wherever their rows were written: a
        # cell it shares with another suite (the same configuration, so the same id) counts.
        claim_cells = {s.name: {c.cell_id for c in s.cells} for s in loaded}
        folders = folders or [default_folder(s.name) for s in loaded]
    elif overrides:
        raise UserError(
            "--set: needs a suite file to apply to, e.g. harness report SUITE --set ..."
        )
    # Bare: the user's own runs only; the committed evidence is read when named (results/...).
    folders = report_folders(folders) if folders else suite_folders(results_root())
    if not folders:
        raise UserError(
            f"no results folders under {results_root().resolve()}; `harness run SUITE` writes "
            f"{results_root()}/<suite>/, or pass a folder, e.g. `harness report results/smoke` "
            "(the project's committed runs)"
        )
    if track:
        count = export(folders, track, logs=track_dir, cells=cells, say=_warn)
        print(f"exported {count} cell(s) to {', '.join(track)}", file=sys.stderr)
    if figures is None and out is not None and fmt != "csv":
        figures = out.parent / "figures"
    text = build_report(
        folders,
        fmt,
        figures_dir=figures,
        links_relative_to=out.parent if out else None,
        cells=cells,
        scope=", ".join(str(p) for p in suites) or None,
        preregistrations=preregistrations,
        claim_cells=claim_cells,
    )
    if out is None:
        sys.stdout.write(printable(text, lines=True))  # each format escapes; a terminal, too
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, inside=containing(out, folders)) as tmp:  # no link in a results folder
        tmp.write_text(text)
    print(f"wrote {out}" + (f" and figures in {figures}" if figures else ""), file=sys.stderr)


def _warn(line: str) -> None:
    print(printable(line), file=sys.stderr)
