"""End to end on real CIFAR-10: `harness run`, `report` and `check` as real processes.

The smoke suite is trained once per session (a few minutes on two CPU cores) into a temporary
folder; every test below reads that folder or copies it. Needs HARNESS_DATA (see conftest).
"""

from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.analysis.render import FORMATS
from tests.conftest import REPO, SUITES, Once, run_cli

pytestmark = pytest.mark.slow
SMOKE = str(SUITES / "smoke.yaml")
METRICS = ("final_test_acc", "best_test_acc", "final_test_loss", "final_train_loss")


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="session")
def smoke_plan() -> dict[str, dict]:
    cells = json.loads(_ok(run_cli("plan", SMOKE, "--json")).stdout)["cells"]
    return {c["cell_id"]: c for c in cells}


@pytest.fixture(scope="session")
def _smoke_run_once(tmp_path_factory, cifar_root) -> Once[Path]:
    def build() -> Path:
        results = tmp_path_factory.mktemp("smoke") / "results"
        _ok(run_cli("run", SMOKE, "--results", str(results), "--device", "cpu",
                    "--data", str(cifar_root)))  # fmt: skip
        return results

    return Once("smoke_run", build)


@pytest.fixture
def smoke_run(_smoke_run_once) -> Path:
    """The whole smoke suite, trained once through the CLI (a failure fails one test)."""
    return _smoke_run_once.get()


def test_run_writes_rows_that_follow_the_plan(smoke_run, smoke_plan):
    runs = pd.read_parquet(smoke_run / "runs")
    curves = pd.read_parquet(smoke_run / "curves")
    assert sorted(runs["cell_id"]) == sorted(smoke_plan)
    assert set(runs["status"]) == {"ok"}
    for row in runs.to_dict("records"):
        plan = smoke_plan[row["cell_id"]]
        assert row["updates"] == row["planned_updates"] == plan["updates"]
        assert row["epochs"] == plan["epochs"]
        # Ten classes: chance is 0.1; six epochs on 5000 images give about 0.5.
        assert 0.3 < row["final_test_acc"] <= row["best_test_acc"] <= 1.0
        assert row["final_train_loss"] < 2.0
        assert row["images_per_s"] > 0 and row["train_time_s"] > 0
        assert row["wall_clock_s"] >= row["train_time_s"] + row["eval_time_s"]
        assert row["peak_memory_bytes"] > 0
        assert row["device"] == "cpu" and row["torch_version"] and row["harness_version"]
        assert json.loads(row["config"])["seed"] == row["seed"]
        cell = curves[curves["cell_id"] == row["cell_id"]].sort_values("epoch")
        assert list(cell["epoch"]) == list(range(1, plan["epochs"] + 1))
        assert cell["updates"].iloc[-1] == plan["updates"]
        assert cell["test_acc"].notna().all()  # eval_every: 1
        # Each epoch ran the phase the plan gives for it.
        for phase in plan["phases"]:
            epoch = cell["epoch"]
            part = cell[(epoch > phase["start_epoch"]) & (epoch <= phase["end_epoch"])]
            assert set(part["batch_size"]) == {phase["batch_size"]}
            assert part["lr"].tolist() == pytest.approx([phase["lr"]] * len(part))


def test_rerun_skips_finished_cells(smoke_run, cifar_root):
    before = {p.name: p.stat().st_mtime_ns for p in (smoke_run / "runs").iterdir()}
    result = _ok(run_cli("run", SMOKE, "--results", str(smoke_run), "--device", "cpu",
                         "--data", str(cifar_root)))  # fmt: skip
    assert result.stderr.count("skip") == 3
    after = {p.name: p.stat().st_mtime_ns for p in (smoke_run / "runs").iterdir()}
    assert after == before
    assert len(pd.read_parquet(smoke_run / "runs")) == 3


def test_killed_run_resumes_and_matches(smoke_run, cifar_root, tmp_path):
    """SIGKILL during epoch 2; the re-run resumes and ends with the same numbers."""
    runs = pd.read_parquet(smoke_run / "runs")
    reference = runs[runs["schedule"] == "increasing_batch"].iloc[0]
    cell_id = reference["cell_id"]
    results = tmp_path / "results"
    checkpoint = results / "checkpoints" / f"{cell_id}.pt"
    args = [sys.executable, "-m", "harness", "run", SMOKE, "--only", cell_id,
            "--results", str(results), "--device", "cpu", "--data", str(cifar_root)]  # fmt: skip
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while not checkpoint.exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "no checkpoint after 600 s"
            time.sleep(0.1)
        # The first checkpoint is written at the end of epoch 1; an epoch of this cell takes
        # about 6 s here, so the kill lands inside epoch 2. Resume must not depend on where.
        time.sleep(2.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (results / "runs").exists() or not any((results / "runs").iterdir())
    assert checkpoint.exists()

    resumed = _ok(run_cli("run", SMOKE, "--only", cell_id, "--results", str(results),
                          "--device", "cpu", "--data", str(cifar_root)))  # fmt: skip
    assert "resume" in resumed.stderr
    assert not checkpoint.exists()
    row = pd.read_parquet(results / "runs").iloc[0]
    assert row["updates"] == reference["updates"]
    for metric in METRICS:
        assert row[metric] == reference[metric], metric
    curves = pd.read_parquet(results / "curves").sort_values("epoch")
    ref_curves = pd.read_parquet(smoke_run / "curves")
    ref_curves = ref_curves[ref_curves["cell_id"] == cell_id].sort_values("epoch")
    for column in ("epoch", "updates", "train_loss", "test_loss", "test_acc"):
        assert curves[column].tolist() == ref_curves[column].tolist(), column


@pytest.mark.parametrize("fmt", FORMATS)
def test_report_renders_every_format(smoke_run, fmt):
    text = _ok(run_cli("report", str(smoke_run), "--format", fmt)).stdout
    if fmt == "csv":
        table = pd.read_csv(io.StringIO(text))
        assert set(table["schedule"]) == {"decaying_lr", "hybrid", "increasing_batch"}
        assert table["updates"].notna().all()
        return
    markers = {
        "markdown": "| decaying_lr",
        "github": "| decaying_lr",
        "latex": r"\begin{tabular}",
        "html": "<table>",
    }
    assert markers[fmt] in text
    for schedule in ("hybrid", "increasing_batch"):
        assert (schedule.replace("_", r"\_") if fmt == "latex" else schedule) in text
    assert "Equivalence" in text


def test_report_out_writes_markdown_with_figures(smoke_run, tmp_path):
    out = tmp_path / "REPORT.md"
    _ok(run_cli("report", str(smoke_run), "--out", str(out)))
    text = out.read_text()
    pngs = sorted((tmp_path / "figures").glob("*.png"))
    assert len(pngs) == 3
    for png in pngs:
        assert f"(figures/{png.name})" in text
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Provenance" in text and "torch" in text


def test_check_passes_against_the_committed_baseline(smoke_run, tmp_path):
    """The CI gate's comparison, reusing this session's run instead of training again."""
    current = tmp_path / "current"
    shutil.copytree(smoke_run, current)
    result = _ok(run_cli("check", SMOKE, "--baseline", str(REPO / "results" / "smoke"),
                         "--results", str(current)))  # fmt: skip
    assert "0 regressions" in result.stdout


def test_check_fails_naming_the_cell_and_metric_that_moved(smoke_run, tmp_path):
    baseline = tmp_path / "baseline"
    shutil.copytree(smoke_run, baseline)
    path = sorted((baseline / "runs").glob("*.parquet"))[0]
    table = pq.read_table(path)
    row = table.to_pandas()
    row["final_test_acc"] += 0.2  # far beyond the suite's tolerance of 0.05
    row["updates"] += 1
    pq.write_table(pa.Table.from_pandas(row, schema=table.schema, preserve_index=False), path)
    current = tmp_path / "current"
    shutil.copytree(smoke_run, current)
    result = run_cli("check", SMOKE, "--baseline", str(baseline), "--results", str(current))
    assert result.returncode == 1, result.stdout + result.stderr
    moved = [line for line in result.stdout.splitlines() if path.stem in line]
    assert any("final_test_acc" in line and "-0.2" in line for line in moved), result.stdout
    assert any("updates" in line and "moved" in line for line in moved), result.stdout
    assert "2 regressions" in result.stdout


def test_check_bad_input_exits_2(smoke_run, tmp_path):
    missing = run_cli("check", SMOKE, "--baseline", str(tmp_path / "nothing"))
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: ") and "nothing" in missing.stderr
    assert "Traceback" not in missing.stderr
    same = run_cli("check", SMOKE, "--baseline", str(smoke_run), "--results", str(smoke_run))
    assert same.returncode == 2 and "--results" in same.stderr


def test_run_bad_device_and_data_are_one_line_errors(tmp_path):
    bad_device = run_cli("run", SMOKE, "--results", str(tmp_path), "--device", "tpu")
    assert bad_device.returncode == 2
    assert bad_device.stderr.strip().splitlines() == [bad_device.stderr.strip()]
    assert "--device" in bad_device.stderr
    no_data = run_cli(
        "run", SMOKE, "--results", str(tmp_path), "--device", "cpu",
        env={"HARNESS_DATA": str(tmp_path / "empty")},
    )  # fmt: skip
    assert no_data.returncode == 2
    assert "HARNESS_DATA" in no_data.stderr and "--data" in no_data.stderr
    assert "Traceback" not in no_data.stderr
    assert not (tmp_path / "runs").exists()
