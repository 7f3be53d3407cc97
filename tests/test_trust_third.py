"""Trust, third pass (issue 39 items 1, 2, 4, 5, 7, 16): a stray file in a shared results
folder, a forged data file or a killed process never stops, hangs or fools the harness.

Through the real CLI on a tiny synthetic suite trained once (`finished`); each test works on a
copy of that folder. Where the old code would grow without bound (a link to /dev/zero, a
planted file of two million rows), the command runs under an address-space limit, so that a
regression fails the test rather than the machine.
"""

from __future__ import annotations

import io
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from harness.results import paths
from tests.conftest import REPO, run_cli

SUITE = """\
name: third
dataset: {{name: synthetic, train_size: {train}, test_size: 64}}
models:
  small: {{name: small_cnn, width: 4}}
optimizers:
  momentum: {{kind: momentum, lr: 0.1, momentum: 0.9}}
schedule: {{epochs: {epochs}, milestones: [1], factor: 2, batch_size: 32}}
schedules:
  decaying: {{realization: lr}}
  increasing: {{realization: batch}}
training: {{ghost_batch_size: 16}}
experiments:
  - name: grid
    optimizers: [momentum]
    schedules: [decaying, increasing]
    seeds: [0]
"""
ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _suite(folder: Path, train: int = 256, epochs: int = 2) -> Path:
    path = folder / "third.yaml"
    path.write_text(SUITE.format(train=train, epochs=epochs))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The suite and a results folder with both its cells finished."""
    folder = tmp_path_factory.mktemp("finished")
    suite = _suite(folder)
    results = folder / "results"
    done = run_cli("run", str(suite), "--results", str(results), "--device", "cpu", env=ENV)
    assert done.returncode == 0, done.stderr
    return suite, results


@pytest.fixture
def copy(finished: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A fresh copy of `finished`'s results, and its cell ids in order."""
    suite, results = finished
    here = tmp_path / "results"
    shutil.copytree(results, here)
    cells = sorted(p.stem for p in (here / "runs").glob("*.parquet"))
    return suite, here, cells


def _harness_limited(*args: str, limit: int, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m harness ARGS` with at most `limit` bytes of address space."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=REPO,
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=cap,
    )


def _no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


# --- 39.1: a foreign row file -----------------------------------------------------------------


def test_a_foreign_row_file_is_skipped_with_a_warning_by_run_report_and_check(copy, cli, tmp_path):
    suite, results, _ = copy
    foreign = results / "runs" / "zzz.parquet"
    pq.write_table(pa.table({"cell_id": ["zzz"], "status": [1]}), foreign)
    report = cli("report", str(results), "--format", "csv")
    _no_traceback(report)
    assert report.returncode == 0, report.stderr
    assert "zzz.parquet: not a readable results file (no suite in a row" in report.stderr
    current = tmp_path / "current"
    shutil.copytree(results, current)
    check = cli("check", str(suite), "--baseline", str(results), "--results", str(current))
    _no_traceback(check)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "0 regressions" in check.stdout
    assert "zzz.parquet" in check.stderr
    run = cli("run", str(suite), "--results", str(results), "--device", "cpu", env=ENV)
    _no_traceback(run)
    assert run.returncode == 0, run.stderr
    assert "zzz.parquet: unreadable (no suite in a row" in run.stderr
    assert "0 trained, 2 already finished" in run.stderr


@pytest.mark.parametrize(
    ("column", "value", "why"),
    [
        ("aliases", ["x"], "alias 'x' is not experiment/optimizer/schedule/seedN"),
        ("updates", -5, "updates -5: a count is never negative"),
        ("final_test_acc", float("inf"), "final_test_acc inf: an accuracy is a fraction"),
    ],
)
def test_a_real_row_with_an_impossible_value_is_skipped_not_fatal_or_shown(
    copy, cli, column, value, why
):
    """The second hostile pass: a real row given an alias that is no label stopped the whole
    report (exit 2, no file named); one with -5 updates or an infinite accuracy was shown."""
    _, results, _ = copy
    (first,) = sorted((results / "runs").glob("*.parquet"))[:1]
    row = pq.read_table(first).to_pylist()[0]
    row[column] = value
    pq.write_table(pa.Table.from_pylist([row], schema=pq.read_schema(first)), first)
    report = cli("report", str(results), "--format", "csv")
    _no_traceback(report)
    assert report.returncode == 0, report.stderr
    assert first.name in report.stderr and why in report.stderr


def test_a_master_port_that_is_no_port_is_one_line(copy, cli):
    suite, results, _ = copy
    env = {**ENV, "RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "abc"}
    run = cli("run", str(suite), "--results", str(results), "--device", "cpu", env=env)
    _no_traceback(run)
    assert run.returncode == 2 and "MASTER_PORT='abc'" in run.stderr
    assert run.stderr.strip().count("\n") == 0


# --- 39.2: every file of a results folder through one reader ----------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_or_a_device_as_the_job_list_neither_hangs_nor_grows_status_or_workers(copy):
    suite, results, _ = copy
    jobs = results / "slurm" / "jobs.json"
    jobs.parent.mkdir()
    os.mkfifo(jobs)
    # No writer ever opens the FIFO: before the fix, status blocked in read_text forever.
    status = run_cli("status", str(suite), "--results", str(results), timeout=300)
    assert status.returncode == 0, status.stderr
    assert "third: 2 done" in status.stdout
    # The parent shows the suite's state when its workers end: that hung the same way.
    fan = run_cli(
        "run", str(suite), "--results", str(results), "--workers", "2", env=ENV, timeout=300
    )
    assert fan.returncode == 0, fan.stderr
    assert "third: 2 done" in fan.stderr
    jobs.unlink()
    jobs.symlink_to("/dev/zero")
    # Before the fix status read /dev/zero until memory ran out (past 2.7 GB unbounded).
    zero = _harness_limited("status", str(suite), "--results", str(results), limit=2 << 30)
    _no_traceback(zero)
    assert zero.returncode == 0, zero.stderr
    assert "third: 2 done" in zero.stdout


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_as_a_checkpoint_fails_its_cell_instead_of_hanging_the_run(copy):
    suite, results, cells = copy
    paths.run_file(results, cells[0]).unlink()
    paths.curve_file(results, cells[0]).unlink()
    checkpoint = paths.checkpoint_path(results, cells[0])
    checkpoint.parent.mkdir(exist_ok=True)
    os.mkfifo(checkpoint)
    run = run_cli("run", str(suite), "--results", str(results), "--device", "cpu", env=ENV,
                  timeout=300)  # fmt: skip
    _no_traceback(run)
    assert run.returncode == 1, run.stderr
    assert f"fail  {cells[0]}" in run.stderr
    assert "unreadable checkpoint (not a regular file" in run.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_among_bench_rows_is_one_line_not_a_hang(tmp_path, cli):
    bench = tmp_path / "bench"
    shutil.copytree(REPO / "results" / "bench", bench)
    os.mkfifo(bench / "zz.parquet")
    plan = cli("plan", "suites/smoke.yaml", "--estimate", "--bench", str(bench), timeout=300)
    assert plan.returncode == 2, plan.stderr
    (line,) = plan.stderr.strip().splitlines()
    assert "zz.parquet is no readable bench file (not a regular file" in line, line


# --- 39.4: a cell without curves is no pass ---------------------------------------------------


@pytest.mark.parametrize("side", ["baseline", "current"])
def test_check_fails_when_either_side_of_a_cell_has_no_curves(copy, cli, tmp_path, side):
    suite, baseline, cells = copy
    current = tmp_path / "current"
    shutil.copytree(baseline, current)
    # Before the fix, tier 0 skipped the cell silently: "0 regressions", exit 0.
    paths.curve_file(baseline if side == "baseline" else current, cells[0]).unlink()
    check = cli("check", str(suite), "--baseline", str(baseline), "--results", str(current))
    _no_traceback(check)
    assert check.returncode == 1, check.stdout + check.stderr
    (line,) = [x for x in check.stdout.splitlines() if cells[0] in x and "curves" in x]
    assert "missing" in line and "no curves" in line, line
    assert "1 regressions" in check.stdout


# --- 39.5: a row file means the rows of the cell it is named for ------------------------------


def test_a_copied_row_file_is_not_the_cell_its_name_says(copy, cli):
    suite, results, (first, second) = copy
    for folder in ("runs", "curves"):
        shutil.copy(results / folder / f"{first}.parquet", results / folder / f"{second}.parquet")
    status = cli("status", str(suite), "--results", str(results))
    assert status.returncode == 0, status.stderr
    states = {line.split()[0]: line.split()[2] for line in status.stdout.splitlines()[2:-1]}
    assert states == {first: "done", second: "pending"}, status.stdout
    report = cli("report", str(results), "--format", "csv")
    assert report.returncode == 0, report.stderr
    assert f"{second}.parquet: not a readable results file (holds rows of cell {first}" in (
        report.stderr
    )
    assert report.stdout.count("decaying") + report.stdout.count("increasing") == 1
    run = cli("run", str(suite), "--results", str(results), "--device", "cpu", env=ENV)
    assert run.returncode == 0, run.stderr
    assert f"{second}.parquet: unreadable (holds rows of cell {first}" in run.stderr
    assert f"ok    {second}" in run.stderr  # trained, not "finished" forever
    rows = pq.read_table(paths.run_file(results, second)).to_pylist()
    assert [r["cell_id"] for r in rows] == [second]


def test_a_copied_row_whose_ids_were_edited_to_another_cell_is_not_that_cell(copy, cli):
    """The second hostile pass: the copy above with `cell_id` edited to the name's, in the run
    row and every curve row, made the other cell "done". The id is the hash of the config
    stored beside it (`harness.core.naming.config_id`), so such a row is no row of it."""
    suite, results, (first, second) = copy
    for folder in ("runs", "curves"):
        table = pq.read_table(results / folder / f"{first}.parquet")
        i = table.schema.get_field_index("cell_id")
        table = table.set_column(i, "cell_id", pa.array([second] * table.num_rows, pa.string()))
        pq.write_table(table, results / folder / f"{second}.parquet")
    status = cli("status", str(suite), "--results", str(results))
    assert status.returncode == 0, status.stderr
    states = {line.split()[0]: line.split()[2] for line in status.stdout.splitlines()[2:-1]}
    assert states == {first: "done", second: "pending"}, status.stdout
    why = f"{second}.parquet: not a readable results file (its config hashes to cell {first}"
    report = cli("report", str(results), "--format", "csv")
    assert report.returncode == 0, report.stderr
    assert why in report.stderr
    assert report.stdout.count("decaying") + report.stdout.count("increasing") == 1
    run = cli("run", str(suite), "--results", str(results), "--device", "cpu", env=ENV)
    assert run.returncode == 0, run.stderr
    assert f"ok    {second}" in run.stderr  # trained, not "finished" forever


# --- 39.7: what a planted file may make the reader hold ---------------------------------------


def test_a_row_file_of_millions_of_rows_is_refused_from_its_metadata(copy):
    suite, results, _ = copy
    zeros = pa.array(np.zeros(2_000_000, dtype=np.int32))
    planted = pa.table(
        {"cell_id": pa.array(["zz"]).take(zeros), "status": pa.array(["ok"]).take(zeros)}
    )
    pq.write_table(planted, results / "runs" / "zz.parquet")
    assert (results / "runs" / "zz.parquet").stat().st_size < 100_000
    # Before the fix report decoded all of them into the full schema (2.4 GB).
    report = _harness_limited("report", str(results), "--format", "csv", limit=1 << 30)
    _no_traceback(report)
    assert report.returncode == 0, report.stderr
    assert "zz.parquet: not a readable results file (2000000 rows; a runs file holds one row)" in (
        report.stderr
    )
    run = _harness_limited(
        "run", str(suite), "--results", str(results), "--device", "cpu", limit=3 << 30
    )
    _no_traceback(run)
    assert run.returncode == 0, run.stderr
    assert "zz.parquet: unreadable (2000000 rows" in run.stderr


def test_a_string_repeated_a_million_times_is_refused_before_it_is_expanded(copy, cli):
    """Dictionary encoding stores one 1 KB string once for a million rows of curves: a few KB
    of Parquet that would decode to a gigabyte."""
    _, results, cells = copy
    zeros = pa.array(np.zeros(90_000, dtype=np.int32))
    path = paths.curve_file(results, cells[0])
    table = pq.read_table(path)
    rows = table.take(pa.array(np.zeros(90_000, dtype=np.int64)))
    suite_column = pa.DictionaryArray.from_arrays(zeros, pa.array(["x" * 4000]))
    pq.write_table(
        rows.set_column(rows.schema.get_field_index("suite"), "suite", suite_column), path
    )
    report = cli("report", str(results), "--format", "csv")
    _no_traceback(report)
    assert report.returncode == 0, report.stderr
    assert "bytes once decoded, over" in report.stderr


def _npz_with_bad_tail(path: Path) -> None:
    """An .npz whose train_x header declares images of 32x31 (not square: refused) and whose
    compressed data is damaged after its first few KB: a reader that checks the header first
    refuses the shape; one that inflates first meets the damage (it inflated the member)."""
    n = 20_000
    shape = (n, 32, 31, 3)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "|u1", "fortran_order": False, "shape": shape}
        )
        archive.writestr("train_x.npy", header.getvalue() + bytes(int(np.prod(shape))))
        for key, value in {
            "train_y": np.zeros(n, np.int64),
            "test_x": np.zeros((10, 32, 32, 3), np.uint8),
            "test_y": np.zeros(10, np.int64),
        }.items():
            buffer = io.BytesIO()
            np.save(buffer, value)
            archive.writestr(f"{key}.npy", buffer.getvalue())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("train_x.npy")
    data = bytearray(path.read_bytes())
    local = info.header_offset
    start = local + 30 + int.from_bytes(data[local + 26 : local + 28], "little")
    start += int.from_bytes(data[local + 28 : local + 30], "little")
    for i in range(start + 2048, start + info.compress_size - 64):
        data[i] = 0xA5
    path.write_bytes(bytes(data))


def test_an_npz_member_is_checked_from_its_header_before_it_is_inflated(tmp_path, cli):
    data = tmp_path / "bomb.npz"
    _npz_with_bad_tail(data)
    suite = tmp_path / "arrays.yaml"
    suite.write_text(
        SUITE.format(train=64, epochs=2).replace(
            "{name: synthetic, train_size: 64, test_size: 64}",
            f"{{name: arrays, path: {data}, classes: 10, train_size: 64}}",
        )
    )
    run = cli("run", str(suite), "--results", str(tmp_path / "r"), "--device", "cpu", env=ENV)
    _no_traceback(run)
    assert run.returncode == 2, run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert "train_x images are 32x31" in line, line


# --- 39.16: a killed parent or worker of --workers --------------------------------------------


def _children(pid: int) -> dict[int, str]:
    """The child processes of `pid` and their HARNESS_WORKER (Linux /proc)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            worker = [e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"HARNESS_WORKER=")]
            found[int(child)] = worker[0] if worker else ""
    return found


class _Fan:
    """`harness run SUITE --workers 2` in its own process group, its lines collected."""

    def __init__(self, suite: Path, results: Path) -> None:
        command = ["run", str(suite), "--results", str(results), "--workers", "2"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness", *command],
            cwd=REPO,
            env={**os.environ, **ENV},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        import threading

        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 600) -> None:
        end = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert time.monotonic() < end, self.lines
            assert self.proc.poll() is None or self.reader.is_alive(), self.lines
            time.sleep(0.05)

    def group_gone(self, timeout: float = 600) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.2)
        os.killpg(self.proc.pid, signal.SIGKILL)
        return False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds workers in /proc")
def test_workers_whose_parent_is_killed_pause_with_a_checkpoint(tmp_path):
    """SIGKILL to the parent closes the pipe the workers write to. Before the fix each worker
    trained on to its next line (the end of the epoch) and died writing it: the epoch's steps
    lost, its claim file left. Now each pauses after its step in progress: a mid-epoch
    checkpoint, its claim released, and the rerun resumes and finishes both cells."""
    suite = _suite(tmp_path, train=2048, epochs=2)
    results = tmp_path / "results"
    fan = _Fan(suite, results)
    for worker in ("cpu#0", "cpu#1"):
        fan.wait_for(f"[{worker}] train ")
    time.sleep(1.0)
    fan.proc.kill()
    fan.proc.wait()
    assert fan.group_gone(), "workers still running 600 s after their parent died"
    checkpoints = sorted((results / "checkpoints").glob("*.pt"))
    assert len(checkpoints) == 2, list((results / "checkpoints").iterdir())
    for path in checkpoints:
        state = torch.load(path, weights_only=True)
        partial = state["progress"]["partial"]
        assert partial is not None and state["progress"]["epoch"] == 0, (path, state["progress"])
    assert not list((results / "checkpoints").glob("*.lock"))
    assert not list((results / "runs").glob("*.parquet"))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds workers in /proc")
def test_a_killed_worker_is_named_with_the_cell_it_was_training(tmp_path):
    suite = _suite(tmp_path, train=512, epochs=2)
    results = tmp_path / "results"
    fan = _Fan(suite, results)
    fan.wait_for("[cpu#1] train ")
    line = next(x for x in fan.lines if x.startswith("[cpu#1] train "))
    cell = line.split()[2]
    (pid,) = [p for p, w in _children(fan.proc.pid).items() if w == "1"]
    os.kill(pid, signal.SIGKILL)
    code = fan.proc.wait(timeout=600)
    fan.reader.join()
    out = "".join(fan.lines)
    assert code == 1, out
    assert (
        f"third: worker cpu#1 (pid {pid}) was killed by SIGKILL while training cell {cell} " in out
    ), out
    assert "rerun to resume it from its last checkpoint" in out
    assert fan.group_gone(60)


def test_orphaned_is_a_pause_signal_and_silences_output(tmp_path):
    """`orphaned` in a child: its output goes to /dev/null, then SIGTERM reaches it (here
    without a handler: it ends by SIGTERM, having written nothing after the call)."""
    code = textwrap.dedent(
        """
        import sys
        from harness.train.preempt import orphaned
        print("before", flush=True)
        orphaned()
        import time; time.sleep(5)
        print("after", flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -signal.SIGTERM
    assert done.stdout == "before\n"
