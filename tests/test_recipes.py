"""Seeds pool only within one recipe: run, report and check through the real CLI.

A recipe is a cell's resolved configuration less its seed (harness.analysis.recipes). The
scenario of issue 24: run a tiny suite, change one value in the suite file, run again into the
same folder. The folder then holds two recipes under the same labels, which must be shown
apart, never as two seeds. Synthetic data, a 4-channel CNN, 2 epochs: seconds per run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from harness.analysis.recipes import describe, differences, recipe_config, recipe_key
from harness.core.naming import config_id
from harness.results.store import write_cell
from tests.conftest import REPO, run_cli

SUITE = """\
name: tiny
dataset: {name: synthetic, train_size: 128, test_size: 32}
models:
  small: {name: small_cnn, width: 4}
optimizers:
  momentum: {kind: momentum, lr: 0.05, momentum: 0.9}
schedule: {epochs: 2, milestones: [1], factor: 2, batch_size: 32}
schedules:
  decaying: {realization: lr}
  increasing: {realization: batch}
training: {ghost_batch_size: 16}
execution: {eval_batch_size: 32}
experiments:
  - name: grid
    optimizers: [momentum]
    schedules: [decaying, increasing]
    seeds: [SEEDS]
"""


def _suite(tmp_path: Path, lr: str = "0.05", seeds: str = "0") -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(SUITE.replace("lr: 0.05", f"lr: {lr}").replace("SEEDS", seeds))
    return path


def _ok(proc):  # type: ignore[no-untyped-def]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _run(suite: Path, results: Path, *extra: str):  # type: ignore[no-untyped-def]
    return _ok(run_cli("run", str(suite), "--results", str(results), "--device", "cpu", *extra))


def _summary_rows(report: str) -> list[list[str]]:
    """The summary table's body rows, as cells (the first table of the report)."""
    lines = report.split("### Summary", 1)[1].split("\n\n")[1].splitlines()[2:]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


def test_a_changed_value_is_another_recipe_not_another_seed(tmp_path: Path) -> None:
    results = tmp_path / "results"
    suite = _suite(tmp_path)
    first = _run(suite, results)
    assert "note:" not in first.stderr

    _suite(tmp_path, lr="0.06")  # the user edits the suite file and runs again
    second = _run(suite, results)
    notes = [line for line in second.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1, second.stderr
    # The folder's name, then the count (the name is the path: it may hold any digit).
    assert notes[0].startswith(f"note: {results} holds 2 row(s)"), notes[0]
    assert "holds 2 row(s) of other recipes under 2 of its labels" in notes[0]
    assert "optimizer.lr 0.05 vs 0.06" in notes[0] and "they are kept" in notes[0]
    assert second.stderr.index("note:") < second.stderr.index("ok ")  # before training
    assert len(list((results / "runs").glob("*.parquet"))) == 4  # nothing deleted

    report = _ok(run_cli("report", str(results)))
    rows = _summary_rows(report.stdout)
    schedules = sorted(r[1] for r in rows)
    assert schedules == [
        "decaying (optimizer.lr 0.05, schedule.lr 0.05)",
        "decaying (optimizer.lr 0.06, schedule.lr 0.06)",
        "increasing (optimizer.lr 0.05, schedule.lr 0.05)",
        "increasing (optimizer.lr 0.06, schedule.lr 0.06)",
    ]
    assert {r[4] for r in rows} == {"1"}  # one seed each, never "seeds 2"
    clash = _warnings(report.stderr)
    assert len(clash) == 2, report.stderr  # one line per label group
    assert all("rows of 2 recipes under one label" in w for w in clash)
    assert all("optimizer.lr 0.05 vs 0.06" in w for w in clash)
    prose = " ".join(report.stdout.split())  # markdown prose is wrapped at 100 characters
    assert "tiny/grid/momentum/decaying (small): optimizer.lr 0.05 vs 0.06" in prose
    assert "Nothing left to compare" in prose and "within seed spread" not in prose

    current = _ok(run_cli("report", str(suite), str(results)))
    assert _warnings(current.stderr) == []
    rows = _summary_rows(current.stdout)
    assert sorted(r[1] for r in rows) == ["decaying", "increasing"]
    prose = " ".join(current.stdout.split())
    assert f"Only the cells that {suite} defines now; 2 rows of other cells" in prose
    assert "optimizer.lr" not in current.stdout

    # The gate: the folder as a baseline holds the suite's recipe and a stale one.
    reuse = tmp_path / "again"
    shutil.copytree(results, reuse)  # finished rows are reused: nothing trains
    gate = _ok(run_cli("check", str(suite), "--baseline", str(results), "--results", str(reuse)))
    assert "0 regressions" in gate.stdout
    assert "baseline also holds 2 row(s) of other recipes" in gate.stdout

    _suite(tmp_path, lr="0.07")  # a recipe change the baseline does not hold
    moved = run_cli(
        "check", str(suite), "--baseline", str(results), "--only", "*decaying*", "--device", "cpu"
    )
    assert moved.returncode == 1, moved.stdout + moved.stderr
    (row,) = [line for line in moved.stdout.splitlines() if "recipe changed |" in line]
    assert "grid/momentum/decaying/seed0" in row
    assert "optimizer.lr 0.06" in row and "optimizer.lr 0.07" in row  # newest baseline row
    assert "(1 recipe changed)" in moved.stdout and "missing" not in moved.stdout


def test_a_rerun_of_an_unchanged_suite_says_nothing(tmp_path: Path) -> None:
    results = tmp_path / "results"
    suite = _suite(tmp_path)
    _run(suite, results)
    again = _run(suite, results)
    assert "note:" not in again.stderr and "2 already finished" in again.stderr
    report = _ok(run_cli("report", str(results)))
    assert _warnings(report.stderr) == [] and "optimizer.lr" not in report.stdout
    assert sorted(r[1] for r in _summary_rows(report.stdout)) == ["decaying", "increasing"]


def _as_other_machine(folder: Path) -> None:
    """Rewrite a folder's run rows as if another machine and commit had made them."""
    for path in (folder / "runs").glob("*.parquet"):
        table = pq.read_table(path)
        for column, value in (
            ("hostname", "gpu-node-2"),
            ("git_commit", "0" * 40),
            ("device_name", "another CPU (8 threads)"),
        ):
            i = table.schema.get_field_index(column)
            table = table.set_column(i, column, [[value] * table.num_rows])
        pq.write_table(table, path)


def test_folders_merged_from_two_machines_pool_their_seeds(tmp_path: Path) -> None:
    suite = _suite(tmp_path, seeds="0, 1")
    here, there = tmp_path / "here", tmp_path / "there"
    _run(suite, here, "--set", "experiments.0.seeds=[0]")
    # Another machine: seeds 0 and 1, other execution settings (not part of the recipe).
    _run(suite, there, "--max-micro-batch", "16", "--set", "execution.eval_batch_size=16")
    _as_other_machine(there)

    both = _ok(run_cli("report", str(here), str(there)))  # seed 0 is in both: counted once
    assert _warnings(both.stderr) == [], both.stderr
    rows = _summary_rows(both.stdout)
    assert sorted(r[1] for r in rows) == ["decaying", "increasing"]
    assert {r[4] for r in rows} == {"2"}
    assert "Nothing left to compare" not in both.stdout and "seed spread" in both.stdout

    merged = tmp_path / "merged"  # merging by copying files, as the store promises
    shutil.copytree(here, merged)
    for sub in ("runs", "curves"):
        for f in (there / sub).glob("*.parquet"):
            if not (merged / sub / f.name).exists():
                shutil.copy2(f, merged / sub / f.name)
    report = _ok(run_cli("report", str(merged)))
    assert _warnings(report.stderr) == []
    assert {r[4] for r in _summary_rows(report.stdout)} == {"2"}
    assert "gpu-node-2 (2)" in report.stdout  # provenance differs, the recipe does not
    rerun = _run(suite, merged)
    assert "note:" not in rerun.stderr and "4 already finished" in rerun.stderr


@pytest.mark.parametrize(
    ("a", "b", "named"),
    [
        ({"optimizer": {"lr": 0.05}}, {"optimizer": {"lr": 0.06}}, "optimizer.lr 0.05 vs 0.06"),
        (
            {"training": {}},
            {"training": {"drop_last": True}},
            "training.drop_last (absent) vs true",
        ),
        (
            {"model": {"name": "wrn"}},
            {"model": {"name": "small_cnn"}},
            "model.name wrn vs small_cnn",
        ),
    ],
)
def test_the_differing_field_is_named(a: dict, b: dict, named: str) -> None:  # type: ignore[type-arg]
    assert describe(differences([a, b])) == named


def test_the_recipe_key_ignores_the_seed_and_nothing_else() -> None:
    config = '{"optimizer": {"lr": 0.05}, "seed": 0}'
    assert recipe_key(config) == recipe_key('{"seed": 7, "optimizer": {"lr": 0.05}}')
    assert recipe_key(config) != recipe_key('{"optimizer": {"lr": 0.06}, "seed": 0}')
    assert recipe_config("not json") is None and recipe_key(None) == "unrecorded"


def test_a_sweep_with_two_recipes_under_one_label_is_not_fitted(tmp_path: Path) -> None:
    """The committed sweep folder, plus one cell rerun under another lr: shown apart, no fit
    mixes the two recipes (B_noise from a mixture would be neither's)."""
    folder = tmp_path / "noise-sweep"
    shutil.copytree(
        REPO / "results" / "noise-sweep", folder, ignore=shutil.ignore_patterns("figures")
    )
    source = sorted((folder / "runs").glob("*.parquet"))[0]
    run = pq.read_table(source).to_pylist()[0]
    config = json.loads(run["config"])
    config["optimizer"]["lr"] = 0.5 * config["optimizer"]["lr"]
    new_id = config_id(config)  # the edited recipe is another cell
    later = run["finished_at"] + timedelta(hours=1)  # rerun after the edit
    run.update(cell_id=new_id, config=json.dumps(config, sort_keys=True), finished_at=later)
    curves = pq.read_table(folder / "curves" / source.name).to_pylist()
    write_cell(
        folder,
        {k: v for k, v in run.items() if k != "schema_version"},
        [
            {**{k: v for k, v in c.items() if k != "schema_version"}, "cell_id": new_id}
            for c in curves
        ],
    )
    report = _ok(run_cli("report", str(folder)))
    (line,) = _warnings(report.stderr)
    lr = config["optimizer"]["lr"]
    assert f"optimizer.lr {json.dumps(lr * 2)} vs {json.dumps(lr)}" in line, line
    fits = report.stdout.split("### Batch sweep", 1)[1].split("### Batch sweep per", 1)[0]
    assert "0 of 8" in fits and "462 ± 44" not in fits


def test_report_of_a_suite_imports_no_torch() -> None:
    """`harness report SUITE` reads the suite (config layer) but, as before, never torch."""
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('torch' in sys.modules, file=sys.stderr))\n"
        "sys.argv = ['harness', 'report', 'suites/smoke.yaml', 'results/smoke']\n"
        "from harness.cli import main\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "Only the cells that suites/smoke.yaml defines now; 0 rows" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("suites/nope.yaml",), "suites/nope.yaml: no such suite file"),
        (("results/smoke", "--set", "training.weight_decay=0"), "--set: needs a suite file"),
    ],
)
def test_report_bad_suite_input_is_one_line(args: tuple[str, ...], message: str) -> None:
    proc = run_cli("report", *args)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {message}"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
