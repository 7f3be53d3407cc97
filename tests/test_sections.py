"""A report section is one new file plus its registration (docs/ARCHITECTURE.md, "How to add a
report section"): a plug-in's section appears in `harness report` at its place, in every
format, and a bad registration is refused by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.analysis.sections import SECTIONS, Section, register

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "results" / "smoke"  # committed rows, read only

# The whole plug-in: its numbers, its words and its registration, in one file of its own.
CELL_COUNT = """
from harness.analysis.sections import Section, register


def runs(results):
    return results.runs


def write(part):
    rows = part.rows(runs)
    part.report.doc.heading(3, "Cells per schedule")
    counts = rows.groupby("schedule").size()
    part.report.doc.items([f"{name}: {count}" for name, count in counts.items()])
    part.report.method["Cells per schedule"] = "Run rows counted per schedule."


register(Section("cell count", write), before="provenance")
"""


def _report_with(plugin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(filter(None, (str(plugin_dir), str(REPO), os.environ.get("PYTHONPATH"))))
    return subprocess.run(
        [sys.executable, "-c", "import cell_count\nfrom harness.cli import main\nmain()", *args],
        cwd=plugin_dir,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("fmt", ["markdown", "latex"])
def test_a_plugins_section_is_written_at_its_place(tmp_path: Path, fmt: str) -> None:
    (tmp_path / "cell_count.py").write_text(CELL_COUNT)
    out = tmp_path / "report.txt"
    done = _report_with(tmp_path, "report", str(SMOKE), "--format", fmt, "--out", str(out))
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "Cells per schedule" in text
    for schedule in ("decaying_lr", "hybrid", "increasing_batch"):
        assert f"{schedule}: 1" in text.replace("\\_", "_")
    if fmt == "markdown":  # after the built-in tables, before the provenance
        at = text.index("### Cells per schedule")
        assert text.index("### Summary") < at < text.index("### Provenance")


def test_a_taken_name_or_an_unknown_place_is_refused() -> None:
    before = list(SECTIONS)
    with pytest.raises(ValueError, match="'summary' is already registered"):
        register(Section("summary", lambda part: None))
    with pytest.raises(ValueError, match="no report section named 'appendix'"):
        register(Section("new", lambda part: None), before="appendix")
    assert before == SECTIONS
