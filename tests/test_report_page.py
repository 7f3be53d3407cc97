"""The report as a reader opens it: one self-contained HTML page (checked in a real headless
browser), and a terminal/markdown report with the verdicts first, the method after, no empty
columns, prose lines a terminal can show, short digests and right plurals."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from harness.analysis.display import format_summary
from harness.analysis.document import build_report
from harness.analysis.tables import load_results, summary_table
from tests.conftest import REPO, run_cli
from tests.fakes import CIFAR_LIKE, FakeExperiment, write_fake_results

SMOKE = REPO / "results" / "smoke"  # committed rows, read only
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def html_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("page") / "report.html"
    _ok(run_cli("report", str(SMOKE), "--format", "html", "--out", str(out)))
    return out


def test_the_html_report_is_one_self_contained_page(html_report: Path) -> None:
    text = html_report.read_text()
    assert text.startswith("<!DOCTYPE html>\n<html")
    for tag in ("<head>", "<title>", "<style>", "</body>", "</html>"):
        assert tag in text, tag
    assert "<title>Don&#x27;t Decay the Learning Rate" in text
    # Figures inline, none as a file name: the page alone is the report.
    figures = sorted(p.stem for p in (html_report.parent / "figures").glob("*.png"))
    assert len(figures) == 3
    images = re.findall(r'<img src="([^"]*)" alt="([^"]*)"', text)
    assert [alt for _, alt in images] == [
        "smoke-equivalence-schedule",
        "smoke-equivalence-loss",
        "smoke-equivalence-accuracy",
    ]
    assert all(src.startswith("data:image/png;base64,iVBORw0KGgo") for src, _ in images)
    assert ".png" not in re.sub(r'<img src="[^"]*"', "", text).replace('alt="', "")
    assert not re.search(r"""(?:src|href)=["'](?!data:)""", text)  # nothing fetched
    # The verdicts first, the method last.
    order = [
        text.index("<h3>Verdicts"),
        text.index("<h3>Summary</h3>"),
        text.index("<h3>Figures</h3>"),
        text.index("<h2>How to read this report</h2>"),
    ]
    assert order == sorted(order)


def test_the_html_report_without_out_still_carries_its_figures(tmp_path: Path) -> None:
    write_fake_results(
        tmp_path, [FakeExperiment("sec5.1", ("momentum",), ("decaying_lr", "increasing_batch"))]
    )
    text = _ok(run_cli("report", str(tmp_path), "--format", "html")).stdout
    assert text.count('<img src="data:image/png;base64,') == 3
    assert not list(tmp_path.glob("**/*.png"))  # drawn in a temporary folder, not here


def test_names_in_the_html_page_are_escaped(tmp_path: Path) -> None:
    name = '<img src=x onerror="alert(1)">&'
    write_fake_results(tmp_path, [FakeExperiment(name, ("momentum",), ("decaying_lr", "hybrid"))])
    text = build_report([tmp_path], fmt="html")
    assert "<img src=x" not in text and 'onerror="alert' not in text
    assert html.escape(name) in text


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH (apt-get install chromium; .ci/run installs it)",
)
def test_the_html_report_renders_in_a_headless_browser(html_report: Path, tmp_path: Path) -> None:
    from matplotlib.image import imread

    shot = tmp_path / "page.png"
    width, height = 1280, 1600
    proc = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",  # CI runs as root, where chromium's sandbox refuses to start
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--screenshot={shot}",
            html_report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.is_file(), proc.stdout + proc.stderr
    pixels = imread(shot)
    assert pixels.shape[:2] == (height, width)
    assert pixels[..., :3].var() > 0  # not a blank page
    # The top of the page holds text and tables (dark ink on white), the inlined figures
    # further down: both regions drew something.
    assert pixels[: height // 4, :, :3].min() < 0.3
    assert pixels[height // 2 :, :, :3].var() > 0


def _prose(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line and not line.startswith("|")]


def test_the_markdown_report_reads_verdicts_first_and_drops_empty_columns() -> None:
    text = _ok(run_cli("report", str(SMOKE))).stdout
    order = [
        text.index("### Verdicts"),
        text.index("### Summary"),
        text.index("### Per schedule"),
        text.index("## How to read this report"),
        text.index("Equivalence test (paired TOST):"),
        text.index("Seed-spread description:"),
    ]
    assert order == sorted(order)
    # The verdict is a front column of its table.
    verdicts = text.split("### Verdicts", 1)[1].split("\n\n")[1].splitlines()[0]
    headers = [c.strip() for c in verdicts.strip("|").split("|")]
    assert headers[:6] == [
        "experiment",
        "optimizer",
        "model",
        "vs",
        "paired TOST",
        "spread (a description)",
    ]
    # The smoke suite is not the paper's: no paper columns, and no word about them.
    summary = text.split("### Summary", 1)[1].split("\n\n")[1].splitlines()[0]
    for column in ("paper updates", "updates vs paper", "paper acc", "paper runs", "Δ vs paper"):
        assert column not in summary
    assert "Updates vs paper" not in text
    long = [line for line in _prose(text) if len(line) > 100]
    assert not long


def test_a_paper_suite_keeps_the_paper_columns(tmp_path: Path) -> None:
    write_fake_results(tmp_path, CIFAR_LIKE)
    text = build_report([tmp_path])
    summary = text.split("### Summary", 1)[1].split("\n\n")[1].splitlines()[0]
    assert "paper acc" in summary and "updates vs paper" in summary
    assert "Updates vs paper checks" in text
    assert all(len(line) <= 100 for line in _prose(text))


def test_plurals_follow_the_count(tmp_path: Path) -> None:
    one = tmp_path / "one"
    write_fake_results(one, [FakeExperiment("e", ("momentum",), ("decaying_lr",), seeds=(0,))])
    # Prose wraps at 100 characters after the folder's path, whose length varies (pytest-xdist
    # adds its worker's folder): compare with the lines joined.
    text = " ".join(build_report([one]).split())
    assert "1 cell." in text and "1 cells" not in text
    two = tmp_path / "two"
    write_fake_results(two, [FakeExperiment("e", ("momentum",), ("decaying_lr",))])
    assert "2 cells." in " ".join(build_report([two]).split())


def test_a_full_sha256_is_shown_short(tmp_path: Path) -> None:
    write_fake_results(tmp_path, [FakeExperiment("e", ("momentum",), ("decaying_lr",))])
    summary = summary_table(load_results([tmp_path]))
    digest = "0123456789abcdef" * 4
    summary["data"] = f"arrays /data/mine.npz sha256:{digest}"
    shown = format_summary(summary)["data"]
    assert (shown == "arrays /data/mine.npz sha256:0123456789ab").all()
    assert isinstance(shown, pd.Series)


def test_a_cpu_device_names_its_threads_in_the_right_number() -> None:
    import torch

    from harness.results.provenance import device_name

    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert device_name(torch.device("cpu")).endswith(" (1 thread)")
        torch.set_num_threads(2)
        assert device_name(torch.device("cpu")).endswith(" (2 threads)")
    finally:
        torch.set_num_threads(saved)
