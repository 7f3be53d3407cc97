"""Trust, third pass (issue 39 items 6, 13, 14, 15): names, numbers and variables that crashed
a command, reached a terminal raw, injected markup or formulas, or were silently misread.

Names come from two places: a suite (checked where it is read: one name check, printable text)
and a results folder's rows (written by anyone who shares it: shown through
`harness.errors.printable` and escaped per report format). Every probe goes through the real
CLI, on synthetic data.
"""

from __future__ import annotations

import csv
import io
import math
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.config.suite import load_suite
from tests.conftest import REPO, run_cli

ENV = {"OMP_NUM_THREADS": "1"}

# Hostile but printable: accepted as names, and each format must show them as written.
EXPERIMENT = '=HYPERLINK("http://e.vil","x")|<script>alert(1)</script>$\\sqrt{$'
OPTIMIZER = "@SUM(1+1)<img src=x onerror=alert(1)>$x^2$"
SCHEDULE = "s$\\frac{1}$"
MODEL = "m$\\alpha$"

HOSTILE = f"""\
name: hostile
dataset: {{name: synthetic, train_size: 64, test_size: 32}}
models:
  '{MODEL}': {{name: small_cnn, width: 4}}
  m2: {{name: small_cnn, width: 2}}
optimizers:
  '{OPTIMIZER}': {{kind: momentum, lr: 0.1, momentum: 0.9}}
schedule: {{epochs: 2, batch_size: 32}}
schedules:
  '{SCHEDULE}': {{realization: lr}}
training: {{ghost_batch_size: 16}}
execution: {{eval_batch_size: 32}}
experiments:
  - name: x y
    optimizers: ['{OPTIMIZER}']
    schedules: ['{SCHEDULE}']
    models: ['{MODEL}']
  - name: x/y
    optimizers: ['{OPTIMIZER}']
    schedules: ['{SCHEDULE}']
    models: ['{MODEL}']
    seeds: [1]
  - name: '{EXPERIMENT}'
    optimizers: ['{OPTIMIZER}']
    schedules: ['{SCHEDULE}']
    seeds: [2]
"""

PLAIN = """\
name: plain
dataset: {name: synthetic, train_size: 64, test_size: 32}
models:
  small: {name: small_cnn, width: 4}
optimizers:
  momentum: {kind: momentum, lr: 0.1, momentum: 0.9}
schedule: {epochs: 1, batch_size: 32}
schedules:
  decaying: {realization: lr}
training: {ghost_batch_size: 16}
execution: {eval_batch_size: 32}
experiments:
  - name: grid
    optimizers: [momentum]
    schedules: [decaying]
    seeds: [0, 1]
"""

# What a terminal must never receive raw from a name: ESC, BEL, NUL, newline, bidi controls.
RAW = ("\x1b", "\x07", "\x00", "\u202e", "\u2066")


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def no_raw_control(proc: subprocess.CompletedProcess[str]) -> str:
    """stdout + stderr, asserted free of every raw control character of RAW."""
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text[-3000:]
    for char in RAW:
        assert char not in text, (char, text[-3000:])
    return text


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The hostile-names suite trained once (4 tiny cells): (suite file, results folder)."""
    tmp = tmp_path_factory.mktemp("names")
    suite = tmp / "hostile.yaml"
    suite.write_text(HOSTILE)
    results = tmp / "R"
    proc = run_cli("run", str(suite), "--results", str(results), "--device", "cpu", env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return suite, results


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A plain suite trained once (2 cells), whose rows the tests then rewrite as a stranger."""
    tmp = tmp_path_factory.mktemp("plain")
    suite = tmp / "plain.yaml"
    suite.write_text(PLAIN)
    results = tmp / "R"
    proc = run_cli("run", str(suite), "--results", str(results), "--device", "cpu", env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return suite, results


# --- 39.6: math text in names ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["markdown", "github", "latex", "html"])
def test_names_with_math_text_are_drawn_as_written_in_every_format(hostile, tmp_path, fmt):
    """`$\\frac{1}$` in a schedule name (and `$...$` in the others) failed every format but
    csv with matplotlib's ParseSyntaxException; the figures now draw every name as text."""
    _, results = hostile
    out = tmp_path / f"report.{fmt}"
    proc = run_cli("report", str(results), "--format", fmt, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    figures = sorted((tmp_path / "figures").glob("*.png"))
    assert len(figures) == 9, figures  # 3 experiments x (schedule, loss, accuracy)
    assert all(f.stat().st_size > 1000 for f in figures)


# --- 39.13: control characters -----------------------------------------------------------------


def _named(where: str, name: str) -> str:
    """PLAIN with one name replaced by `name` (a YAML double-quoted string's escapes)."""
    old = {"optimizer": "momentum", "schedule": "decaying", "model": "small"}.get(where)
    text = PLAIN
    if where == "experiment":
        return text.replace("name: grid", f'name: "{name}"')
    key = {"optimizer": "  momentum: {kind", "schedule": "  decaying: {", "model": "  small: {"}
    text = text.replace(key[where], key[where].replace(old, f'"{name}"', 1))
    text = text.replace(f"[{old}]", f'["{name}"]')
    return text


@pytest.mark.parametrize(
    ("where", "name", "escaped"),
    [
        ("optimizer", "o\\e]0;TITLE\\a", "o\\x1b]0;TITLE\\x07"),  # retitles the terminal
        ("schedule", "s\\e[31m", "s\\x1b[31m"),  # recolours it
        ("model", "m\\0x", "m\\x00x"),
        ("experiment", "e\\nfake line", "e\\nfake line"),
        ("optimizer", "o\\u202eevil", "o\\u202eevil"),  # right-to-left override
        ("schedule", "s\\u2066x", "s\\u2066x"),  # a bidi isolate
    ],
)
def test_a_name_with_control_characters_is_refused_where_the_suite_is_read(
    tmp_path, where, name, escaped
):
    suite = tmp_path / "named.yaml"
    suite.write_text(_named(where, name))
    proc = run_cli("plan", str(suite))
    no_raw_control(proc)
    one_line_error(proc, "named.yaml:", "control or format characters", escaped)


def test_every_command_refuses_such_a_name_before_it_writes(tmp_path):
    suite = tmp_path / "named.yaml"
    suite.write_text(_named("optimizer", "o\\e]0;TITLE\\a"))
    results = tmp_path / "R"
    for args in (
        ("run", str(suite), "--results", str(results), "--device", "cpu"),
        ("status", str(suite), "--results", str(results)),
        ("report", str(suite)),
    ):
        proc = run_cli(*args)
        no_raw_control(proc)
        one_line_error(proc, "control or format characters")
    assert not results.exists()


def test_names_with_markup_and_braces_are_shown_as_written_by_plan(tmp_path):
    """rich read "[bold]" or "[/]" in a label as markup (the label lost them)."""
    text = PLAIN.replace("name: grid", "name: 'e[bold]{x}'")
    text = text.replace("  momentum: {kind", "  'o[/]': {kind").replace("[momentum]", "['o[/]']")
    suite = tmp_path / "markup.yaml"
    suite.write_text(text)
    proc = run_cli("plan", str(suite))
    assert proc.returncode == 0, proc.stderr
    # One table per recipe: its title names the label less the seed, then the seeds.
    assert "e[bold]{x}/o[/]/decaying" in proc.stdout


def _rewrite_rows(results: Path, **columns: str) -> None:
    """Set string columns of every run row, as another user of the folder could."""
    for path in sorted((results / "runs").glob("*.parquet")):
        table = pq.read_table(path)
        for name, value in columns.items():
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, pa.array([value] * table.num_rows, pa.string()))
        pq.write_table(table, path)


def test_names_and_errors_from_someone_elses_rows_reach_the_terminal_escaped(plain, tmp_path):
    """Rows are written by whoever shares the folder: their names, hosts and errors are shown
    by report (every format, on stdout), status and run as visible escapes, never raw."""
    suite, trained = plain
    results = tmp_path / "R"
    shutil.copytree(trained, results)
    _rewrite_rows(
        results,
        suite="suite\x1b]0;PWNED\x07",  # the HTML page's <title> names the suites
        experiment="grid\x1b]0;PWNED\x07",
        optimizer="mom\x1b[31mentum",
        schedule="dec\u202eaying",
        model="sm\x00all",
        hostname="host\nfake line",
        device_name="cpu\u2066",
    )
    for fmt in ("markdown", "github", "latex", "html", "csv"):
        proc = run_cli("report", str(results), "--format", fmt)
        assert proc.returncode == 0, proc.stderr[-3000:]
        text = no_raw_control(proc)
        # A backslash is escaped in a markdown table cell, and in LaTeX.
        text = text.replace("\\textbackslash{}", "\\").replace("\\\\", "\\")
        assert "\\x1b]0;PWNED\\x07" in text and "\\u202e" in text, text[-3000:]
    # A failed row's error is shown by status.
    _rewrite_rows(results, status="failed", error="boom\x1b]0;PWNED\x07\x1b[2J")
    proc = run_cli("status", str(suite), "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    assert "boom\\x1b]0;PWNED\\x07\\x1b[2J" in no_raw_control(proc)
    # A file someone named to rewrite the terminal, in runs/: run names it, escaped.
    planted = results / "runs" / "\x1b]0;PWNED\x07.parquet"
    planted.write_bytes(b"not parquet")
    proc = run_cli("run", str(suite), "--results", str(results), "--device", "cpu", env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "\\x1b]0;PWNED\\x07.parquet" in no_raw_control(proc)


# --- 39.14: markup, formulas, figure names -----------------------------------------------------


@pytest.mark.parametrize("fmt", ["markdown", "github"])
def test_markdown_reports_escape_html_pipes_and_math_of_names(hostile, fmt):
    _, results = hostile
    proc = run_cli("report", str(results), "--format", fmt)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert "<script>" not in text and "<img" not in text
    assert "&lt;script&gt;" in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    # Every row of the summary has the header's columns: a name's "|" splits no cell.
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| experiment"))
    table = lines[start : lines.index("", start)]
    columns = {len(_cells(line)) for line in table}
    assert len(columns) == 1 and len(table) == 2 + 4, table


def _cells(line: str) -> list[str]:
    """A markdown table row's cells, split at "|" not escaped with a backslash."""
    cells, cell, escaped = [], "", False
    for char in line.strip().strip("|"):
        if char == "|" and not escaped:
            cells.append(cell)
            cell = ""
        else:
            cell += char
        escaped = char == "\\" and not escaped
    return [*cells, cell]


def test_csv_report_cells_never_start_a_spreadsheet_formula(hostile):
    _, results = hostile
    proc = run_cli("report", str(results), "--format", "csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 4
    for row in rows:
        for value in row.values():
            if value and value[0] in "=+-@\t\r":
                float(value)  # only a plain number may start so
    experiments = {r["experiment"] for r in rows}
    assert "'" + EXPERIMENT in experiments and {"x y", "x/y"} <= experiments
    assert {r["optimizer"] for r in rows} == {"'" + OPTIMIZER}


def test_experiments_whose_names_slug_alike_get_their_own_figures(hostile, tmp_path):
    """ "x y" and "x/y" both made x_y: one experiment's figures overwrote the other's."""
    _, results = hostile
    out = tmp_path / "report.md"
    proc = run_cli("report", str(results), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = {p.name for p in (tmp_path / "figures").glob("*.png")}
    slugged = sorted(f for f in figures if f.startswith("hostile-x_y-"))
    assert len(slugged) == 6, figures  # two experiments x three kinds, none shared
    linked = [line for line in out.read_text().splitlines() if line.startswith("- ![")]
    assert len(linked) == 9 and len(set(linked)) == 9


# --- 39.15: numbers and variables ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"RANK": "abc"}, "RANK='abc'"),
        ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc'"),
        ({"RANK": "abc", "WORLD_SIZE": "2"}, "RANK='abc'"),
        ({"RANK": "3", "WORLD_SIZE": "2"}, "RANK=3 with WORLD_SIZE=2"),
        ({"LOCAL_RANK": "x"}, "LOCAL_RANK='x'"),
    ],
)
def test_torchruns_variables_that_are_not_numbers_are_one_line(tmp_path, variables, named):
    suite = tmp_path / "plain.yaml"
    suite.write_text(PLAIN)
    results = tmp_path / "R"
    proc = run_cli("run", str(suite), "--results", str(results), "--device", "cpu", env=variables)
    one_line_error(proc, named, "torchrun")
    assert not results.exists()


@pytest.mark.parametrize(
    "override",
    [
        "schedule.batch_size=true",
        "schedule.epochs=false",
        "optimizers.momentum.lr=true",
        "experiments.0.seeds=[0, true]",
        "execution.eval_batch_size=true",
        "experiments.0.training={ghost_batch_size: true}",
    ],
)
def test_a_boolean_is_never_taken_for_a_number(tmp_path, override):
    suite = tmp_path / "plain.yaml"
    suite.write_text(PLAIN)
    key = override.partition("=")[0]
    line = one_line_error(run_cli("plan", str(suite), "--set", override), "true/false", key)
    assert "write the number" in line
    # The same value written in the file is the same error, at its line.
    suite.write_text(PLAIN.replace("epochs: 1, batch_size: 32}", "epochs: 1, batch_size: true}"))
    one_line_error(run_cli("plan", str(suite)), "plain.yaml:7: schedule.batch_size: true/false")


def test_bench_refuses_a_batch_size_over_the_bound_before_loading_anything(tmp_path):
    out = tmp_path / "bench"
    proc = run_cli(
        "bench", "--device", "cpu", "--model", "small_cnn", "--data", "synthetic",
        "--batch-sizes", "128,100000000", "--out", str(out),
    )  # fmt: skip
    one_line_error(proc, "--batch-sizes", "100000000", "largest batch size")
    assert not out.exists()


def _limited(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_bench_says_in_one_line_when_a_batch_does_not_fit_in_memory(tmp_path):
    """A batch under the bound that the device cannot hold: the allocator's error, as one line
    (memory capped at 3 GB for the subprocess, so nothing is really allocated)."""
    limit = 3 * 2**30
    probe = subprocess.run(
        [sys.executable, "-c", "import torch; torch.zeros(1)"],
        preexec_fn=lambda: _limited(limit),
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip("torch does not import under a 3 GB address-space limit here")
    out = tmp_path / "bench"
    proc = subprocess.run(
        [
            sys.executable, "-m", "harness", "bench", "--device", "cpu", "--model",
            "small_cnn", "--data", "synthetic", "--batch-sizes", "262144", "--steps", "1",
            "--repeats", "1", "--out", str(out),
        ],
        cwd=REPO,
        env={**os.environ, **ENV},
        preexec_fn=lambda: _limited(limit),
        capture_output=True,
        text=True,
    )  # fmt: skip
    one_line_error(proc, "--batch-sizes", "262144", "does not fit in the memory of cpu")


ESTIMATE_SUITE = """\
name: est
dataset: {name: synthetic, train_size: 256, test_size: 64}
models: {small: {name: small_cnn, width: 16}}
optimizers: {momentum: {kind: momentum, lr: 0.05, momentum: 0.9}}
schedule: {epochs: 2, milestones: [1], factor: 2, batch_size: 32}
schedules:
  decaying: {realization: lr}
  increasing: {realization: batch}
training: {ghost_batch_size: 16}
execution: {eval_batch_size: 64}
experiments: [{name: grid, optimizers: [momentum], schedules: [decaying, increasing]}]
"""


@pytest.fixture(scope="module")
def bench_rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real `harness bench` file of small_cnn at B = 32 and 64 (one step each)."""
    bench = tmp_path_factory.mktemp("bench") / "rows"
    made = run_cli(
        "bench", "--device", "cpu", "--model", "small_cnn", "--batch-sizes", "32,64",
        "--ghost", "16", "--steps", "1", "--repeats", "1", "--data", "synthetic",
        "--out", str(bench), env=ENV,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    return next(bench.glob("*.parquet"))


@pytest.mark.parametrize("forged", [math.nan, -1.0, math.inf, 0.0])
def test_estimate_leaves_out_bench_rows_that_are_not_step_times(bench_rows, tmp_path, forged):
    suite = tmp_path / "est.yaml"
    suite.write_text(ESTIMATE_SUITE)
    bench = tmp_path / "bench"
    bench.mkdir()
    shutil.copy(bench_rows, bench / bench_rows.name)
    honest = run_cli("plan", str(suite), "--estimate", "--bench", str(bench))
    assert honest.returncode == 0, honest.stderr
    # The same rows, newer and with a forged step time: they would be the ones used.
    table = pq.read_table(bench_rows).to_pandas()
    table["step_time_s"] = forged
    table["measured_at"] = table["measured_at"] + pd.Timedelta(hours=1)
    table.to_parquet(bench / "forged.parquet", index=False)
    proc = run_cli("plan", str(suite), "--estimate", "--bench", str(bench))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    warned = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 1 and "forged.parquet" in warned[0], proc.stderr
    assert proc.stdout == honest.stdout  # the estimate of the honest rows alone, no "nan s"


def test_estimate_names_the_model_bench_does_not_time_instead_of_a_question_mark(
    bench_rows, tmp_path
):
    suite = tmp_path / "est.yaml"
    suite.write_text(ESTIMATE_SUITE.replace("small: {name: small_cnn, width: 16}", "wide: "
                                            "{name: small_cnn, width: 8}"))  # fmt: skip
    bench = tmp_path / "bench"
    bench.mkdir()
    shutil.copy(bench_rows, bench / bench_rows.name)
    proc = run_cli("plan", str(suite), "--estimate", "--bench", str(bench))
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = " ".join(proc.stdout.split())  # rich wraps long lines
    assert "--model ?" not in text
    assert "does not time model wide" in text
    for cell in load_suite(suite).cells:
        assert cell.cell_id in proc.stdout


def test_a_live_progress_bar_shows_a_name_with_braces_as_written(tmp_path):
    """On a terminal the progress bar's text was a format string: "s{x}" in a name raised
    KeyError there. Run under a pseudo-terminal (script(1))."""
    if shutil.which("script") is None:
        pytest.skip("needs script(1) for a pseudo-terminal")
    text = PLAIN.replace("  decaying: {", "  's{x}[red]': {").replace("[decaying]", "['s{x}[red]']")
    text = text.replace("seeds: [0, 1]", "seeds: [0]")
    suite = tmp_path / "braces.yaml"
    suite.write_text(text)
    command = f"{sys.executable} -m harness run {suite} --results {tmp_path / 'R'} --device cpu"
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    proc = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        cwd=REPO,
        env={**env, **ENV, "TERM": "xterm"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout and "KeyError" not in proc.stdout
    assert "1 trained" in proc.stdout
