"""A suite over several workers (--workers), over cluster tasks (--executor local, submitit's
LocalExecutor), and `harness status`, on tiny synthetic cells through the real CLI."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.app.runner import run_suite
from harness.app.runopts import RunOptions
from harness.app.status import suite_status
from harness.config.suite import load_suite
from harness.errors import UserError
from harness.results import lock
from harness.results.store import read_curves, read_runs
from tests.fakes import FailingConsole

SUITE = """\
name: fan
dataset: {name: synthetic, train_size: 128, test_size: 64}
models: {tiny: {name: small_cnn, width: 4}}
optimizers:
  sgd: {kind: sgd, lr: 0.1}
  momentum: {kind: momentum, lr: 0.05, momentum: 0.9}
schedule: {epochs: 2, shape: step, milestones: [1], factor: 2, batch_size: 32}
schedules:
  lr: {realization: lr}
  batch: {realization: batch}
training: {ghost_batch_size: 16}
execution: {eval_batch_size: 64}
experiments: [{name: fan, optimizers: [sgd, momentum], schedules: [lr, batch], seeds: [0]}]
"""


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    path = tmp_path / "fan.yaml"
    path.write_text(SUITE)
    return path


def _harness(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "harness", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_two_workers_share_out_the_cells_each_trained_once(suite: Path, tmp_path: Path) -> None:
    """Two workers on one device (--per-device 2, as several cells share a GPU), the cells
    with the most updates claimed first (--order most-updates)."""
    results = tmp_path / "results"
    run = _harness(
        "run", str(suite), "--devices", "cpu", "--per-device", "2", "--order", "most-updates",
        "--results", str(results),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr + run.stdout
    out = run.stdout + run.stderr
    assert "2 workers on cpu, cpu" in out
    loaded = load_suite(suite)
    cells = {c.cell_id for c in loaded.cells}
    rows = read_runs(results)
    assert sorted(rows["cell_id"]) == sorted(cells) and (rows["status"] == "ok").all()
    trained = [line.split()[2] for line in out.splitlines() if "] train " in line]
    assert sorted(trained) == sorted(cells)  # no cell trained twice
    # The two lr cells (8 updates each; the batch cells 6) were the first two claimed.
    longest = {c.cell_id for c in loaded.cells if c.plan.updates == 8}
    assert len(longest) == 2 and set(trained[:2]) == longest
    assert {line.split("]")[0] for line in out.splitlines() if "] train " in line} <= {
        "[cpu#0",
        "[cpu#1",
    }
    assert "fan: 4 done" in out  # the whole suite's state, in the parent's view
    status = _harness("status", str(suite), "--results", str(results))
    assert status.returncode == 0 and "fan: 4 done" in status.stdout


def test_workers_refuse_force_and_a_device(suite: Path, tmp_path: Path) -> None:
    forced = _harness("run", str(suite), "--workers", "2", "--force")
    assert forced.returncode == 2 and "--force with" in forced.stderr
    assert "Traceback" not in forced.stderr
    both = _harness("run", str(suite), "--workers", "2", "--devices", "cpu")
    assert both.returncode == 2 and "disagree" in both.stderr


def test_workers_per_device_and_their_memory_caps() -> None:
    from harness.app.fanout import memory_fractions, worker_devices

    assert worker_devices("cpu", None, 3) == ["cpu"] * 3
    assert worker_devices("cpu,cpu", None) == ["cpu", "cpu"]
    with pytest.raises(UserError, match=r"--per-device 0: must be in 1\.\.64"):
        worker_devices("cpu", None, 0)
    # cuda and cuda:0 are one device: its two workers get half of it each.
    assert memory_fractions(["cuda:0", "cuda", "cuda:1", "cpu", "cpu"]) == [
        0.5, 0.5, None, None, None,
    ]  # fmt: skip
    assert memory_fractions(["cuda:0"] * 4) == [0.25] * 4
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device is visible"):
            worker_devices("cuda:0,cuda:0", None)  # a GPU named twice is fine where it exists


def test_cell_order_and_memory_fraction_are_checked(suite: Path, tmp_path: Path) -> None:
    from harness.app.runner import order_cells

    loaded = load_suite(suite)
    updates = [c.plan.updates for c in order_cells(loaded.cells, "most-updates")]
    assert updates == sorted(updates, reverse=True) and updates[0] > updates[-1]
    fewest = [c.plan.updates for c in order_cells(loaded.cells, "fewest-updates")]
    assert fewest == sorted(fewest)
    assert order_cells(loaded.cells, "suite") == loaded.cells
    bad = _harness("run", str(suite), "--order", "random", "--results", str(tmp_path / "r"))
    assert bad.returncode == 2 and "--order random: choose one of suite, most-updates" in bad.stderr
    for args, message in (
        (["--memory-fraction", "0.5", "--device", "cpu"], "caps a CUDA device's memory"),
        (["--memory-fraction", "1.5"], "must be in (0, 1]"),
        (["--memory-fraction", "0.5", "--workers", "2"], "drop --memory-fraction"),
        (["--per-device", "2"], "--per-device K: give --devices"),
    ):
        out = _harness("run", str(suite), "--results", str(tmp_path / "r"), *args)
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_status_names_each_state_of_a_cell(suite: Path, tmp_path: Path) -> None:
    loaded = load_suite(suite)
    done, paused, failed, running = sorted(loaded.cells, key=lambda c: c.label)
    results = tmp_path / "r"
    run_suite(loaded, results=results, device="cpu", only=done.cell_id)
    run_suite(loaded, results=results, device="cpu", only=paused.cell_id, stop_after=0)
    broken = FailingConsole(
        lambda job, row: RuntimeError("simulated bug") if job.cell_id == failed.cell_id else None
    )
    run_suite(loaded, results=results, device="cpu", only=failed.cell_id, console=broken)
    with lock.claim(results, running.cell_id) as mine:
        assert mine
        states = {s.cell_id: s for s in suite_status(loaded.cells, results)}
    assert states[done.cell_id].state == "done"
    assert states[paused.cell_id].state == "paused"
    assert states[failed.cell_id].state == "failed"
    assert "simulated bug" in states[failed.cell_id].detail
    assert str(results / "logs" / f"{failed.cell_id}.log") in states[failed.cell_id].detail
    assert states[running.cell_id].state == "running"
    assert str(os.getpid()) in states[running.cell_id].detail
    # Once the claim is released, the cell is no longer running: nothing has happened to it.
    assert {s.cell_id: s.state for s in suite_status(loaded.cells, results)}[
        running.cell_id
    ] == "pending"


def test_local_executor_runs_each_cell_as_a_task_and_a_requeued_task_resumes(
    suite: Path, tmp_path: Path
) -> None:
    pytest.importorskip("submitit", reason="--executor needs submitit (the slurm extra)")
    results = tmp_path / "results"
    only = "fan/sgd"
    run = _harness(
        "run", str(suite), "--executor", "local", "--wait", "--only", only,
        "--results", str(results),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr + run.stdout
    assert "submitted 2 cell(s) to local" in run.stderr
    rows = read_runs(results)
    assert len(rows) == 2 and (rows["status"] == "ok").all()
    jobs = json.loads((results / "slurm" / "jobs.json").read_text())
    assert sorted(jobs) == sorted(rows["cell_id"])
    assert all(Path(j["stdout"]).exists() for j in jobs.values())
    assert not (results / "slurm" / "%j").exists()  # submitit's template, not a log folder
    # The printed hint shows this folder: run as printed, every submitted cell is done.
    hint = next(line for line in run.stderr.splitlines() if "harness status" in line)
    command = shlex.split(hint.split("`")[1])
    assert command[:2] == ["harness", "status"] and "--results" in command
    shown = _harness(*command[1:])
    assert shown.returncode == 0, shown.stderr
    assert "fan: 2 done" in shown.stdout and "pending" not in shown.stdout
    again = _harness("run", str(suite), "--executor", "local", "--only", only,
                     "--results", str(results))  # fmt: skip
    assert again.returncode == 0 and "nothing to submit" in again.stderr

    # Preemption: the task's checkpoint() requeues the same task; run again it resumes the
    # cell from the epoch checkpoint a pause (or a kill) left behind.
    from harness.app.cluster import CellTask

    loaded = load_suite(suite)
    cell = next(c for c in loaded.cells if c.label.startswith("fan/momentum/batch"))
    run_suite(loaded, results=results, device="cpu", only=cell.cell_id, stop_after=0)
    task = CellTask(RunOptions(suite, results).for_cell(cell.cell_id), 0)
    requeued = task.checkpoint()
    assert requeued.function == task
    assert requeued.function() == 0
    curves = read_curves(results)
    assert sorted(curves.loc[curves["cell_id"] == cell.cell_id, "epoch"]) == [1, 2]
    assert read_runs(results).set_index("cell_id").loc[cell.cell_id, "status"] == "ok"


def test_local_lanes_cap_the_tasks_at_once_at_the_cpus_and_split_the_threads() -> None:
    from harness.app.cluster import CellTask, local_lanes

    base = RunOptions(Path("/s.yaml"), Path("/r"))
    tasks = [CellTask(base.for_cell(f"c{i}"), None) for i in range(5)]
    lanes = local_lanes(tasks, parallelism=64, cpus=2)
    assert len(lanes) == 2 and [lane.threads for lane in lanes] == [1, 1]
    assert sorted(t.cell_id for lane in lanes for t in lane.tasks) == [f"c{i}" for i in range(5)]
    assert [len(lane.tasks) for lane in lanes] == [3, 2]
    one = local_lanes(tasks[:1], parallelism=64, cpus=16)
    assert len(one) == 1 and one[0].threads == 16  # one cell gets the machine
    assert len(local_lanes(tasks, parallelism=3, cpus=16)) == 3  # --array-parallelism too


def test_a_cluster_task_runs_the_single_cell_command_under_torchrun_for_several_gpus(
    suite: Path, tmp_path: Path
) -> None:
    from harness.app.cluster import CellTask, cluster_settings

    run = RunOptions(
        Path("/s/fan.yaml"), Path("/r"), ("training.weight_decay=0",), data=Path("/d")
    ).for_cell("abc123")
    cmd = CellTask(run, 4).command()
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert cmd[5:] == [
        "-m", "harness", "run", "/s/fan.yaml", "--results", "/r", "--order", "suite",
        "--set", "training.weight_decay=0", "--only", "abc123", "--data", "/d",
        "--device", "cuda",
    ]  # fmt: skip
    bare = RunOptions(Path("/s/fan.yaml"), Path("/r")).for_cell("abc123")
    one = CellTask(bare, 1).command()
    assert one[1:3] == ["-m", "harness"] and one[-2:] == ["--device", "cuda"]
    assert "--device" not in CellTask(bare, None).command()

    # The suite's cluster: block, with the command line's flags on top.
    path = tmp_path / "cluster.yaml"
    path.write_text(SUITE + "cluster: {partition: gpu, time_min: 30, setup: [module load cuda]}\n")
    settings = cluster_settings(load_suite(path), {"time_min": 90, "partition": None})
    assert (settings.partition, settings.time_min, settings.setup) == (
        "gpu",
        90,
        ("module load cuda",),
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(SUITE + "cluster: {time_min: 0}\n")
    with pytest.raises(UserError, match=r"cluster\.time_min"):
        load_suite(bad)
