"""`harness run --track` and `harness report --track` (issue 45), through the real CLI on a
tiny synthetic suite, read back with each tracker's own offline reader: TensorBoard's
EventAccumulator, wandb's datastore of an offline run, MLflow's client on its local store.

The tracked run is paused after its first epoch (--stop-after 0) and resumed, so every check
of "one value per epoch" also covers the resumed segment.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from harness.app.trackers import TRACKERS, curve_values
from harness.core.kinds import TRACKERS as TRACKER_NAMES
from tests.conftest import Once, run_cli

ENV = {"OMP_NUM_THREADS": "1"}

SUITE = """\
name: tracked
dataset: {name: synthetic, train_size: 64, test_size: 32}
models:
  small: {name: small_cnn, width: 4}
optimizers:
  momentum: {kind: momentum, lr: 0.1, momentum: 0.9}
schedule: {epochs: 2, batch_size: 32}
schedules:
  decaying: {realization: lr}
training: {ghost_batch_size: 16}
execution: {eval_batch_size: 32, noise_scale: true}
tracking: {track: [tensorboard]}
experiments:
  - name: grid
    optimizers: [momentum]
    schedules: [decaying]
"""

INSTALLED = [n for n in TRACKER_NAMES if importlib.util.find_spec(TRACKERS[n].package)]
# Columns that are timings: two runs of one cell differ there and nowhere else.
TIMES = ("epoch_time_s", "eval_time_s", "images_per_s", "wall_clock_s", "train_time_s",
         "warmup_time_s", "overhead_time_s", "updates_per_s", "started_at", "finished_at",
         "peak_memory_bytes", "hostname", "git_dirty", "git_commit")  # fmt: skip


def test_one_tracker_per_name() -> None:
    """The registry has an entry for every name a suite may give, and no other."""
    assert sorted(TRACKERS) == sorted(TRACKER_NAMES)
    for kind in TRACKERS.values():
        assert kind.module.startswith("harness.app.trackers.")


def _run(tmp: Path, results: str, *flags: str, env: dict[str, str] | None = None) -> Any:
    proc = run_cli(
        "run", str(tmp / "suite.yaml"), "--results", str(tmp / results), "--device", "cpu",
        *flags, env={**ENV, **(env or {})},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


def _tracked(tmp: Path) -> Path:
    (tmp / "suite.yaml").write_text(SUITE)
    flags = [f for n in INSTALLED if n != "tensorboard" for f in ("--track", n)]
    first = _run(tmp, "tracked", "--stop-after", "0", *flags)
    assert "pause" in first.stderr, first.stderr[-2000:]
    second = _run(tmp, "tracked", *flags)
    assert "resume" in second.stderr and "warning" not in second.stderr, second.stderr[-2000:]
    # The same cell without trackers: its rows are the same but for timings.
    _run(tmp, "plain", "--set", "tracking.track=[]")
    return tmp


@pytest.fixture(scope="module")
def _built(tmp_path_factory: pytest.TempPathFactory) -> Once[Path]:
    if "tensorboard" not in INSTALLED:
        pytest.skip("the tensorboard extra is not installed")
    return Once("tracked", lambda: _tracked(tmp_path_factory.mktemp("tracking")))


@pytest.fixture
def tracked(_built: Once[Path]) -> Path:
    return _built.get()


def _curves(results: Path) -> pd.DataFrame:
    (path,) = glob.glob(str(results / "curves" / "*.parquet"))
    return pd.read_parquet(path).sort_values("epoch")


def _expected(results: Path) -> dict[str, dict[int, float]]:
    """tag -> epoch -> value, from the curves Parquet as a tracker is sent it."""
    found: dict[str, dict[int, float]] = {}
    for row in _curves(results).to_dict("records"):
        for key, value in curve_values({str(k): v for k, v in row.items()}).items():
            found.setdefault(key, {})[int(row["epoch"])] = value
    return found


def test_tracking_changes_no_row(tracked: Path) -> None:
    """A tracked (and paused, resumed) cell's rows equal an untracked run's, timings aside."""
    for kind in ("curves", "runs"):
        (a,) = glob.glob(str(tracked / "tracked" / kind / "*.parquet"))
        (b,) = glob.glob(str(tracked / "plain" / kind / "*.parquet"))
        left, right = pd.read_parquet(a), pd.read_parquet(b)
        keep = [c for c in left.columns if c not in TIMES]
        pd.testing.assert_frame_equal(left[keep], right[keep])


def test_tensorboard_sees_every_epoch(tracked: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (folder,) = glob.glob(str(tracked / "tracked" / "logs" / "tb" / "*"))
    assert Path(folder).name.startswith("grid_momentum_decaying_seed0 ")
    assert len(glob.glob(f"{folder}/events.out.tfevents.*")) == 2  # the run, then the resume
    events = EventAccumulator(folder, size_guidance={"scalars": 0})
    events.Reload()
    expected = _expected(tracked / "tracked")
    for tag in ("lr", "batch_size", "momentum", "noise_scale", "train_loss", "test_loss",
                "test_acc", "images_per_s", "noise_b_simple"):  # fmt: skip
        got = {e.step: e.value for e in events.Scalars(tag)}
        assert len(events.Scalars(tag)) == 2, tag  # one per epoch: none twice after resume
        assert got.keys() == expected[tag].keys() == {1, 2}, tag
        for step, value in expected[tag].items():
            assert math.isclose(got[step], value, rel_tol=1e-6), (tag, step)  # float32
    (run,) = pd.read_parquet(glob.glob(str(tracked / "tracked" / "runs" / "*"))[0]).to_dict(
        "records"
    )
    final = events.Scalars("run/final_test_acc")
    assert math.isclose(final[-1].value, run["final_test_acc"], rel_tol=1e-6)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MLflow 3 on its local file store
def test_mlflow_holds_the_curves(tracked: Path) -> None:
    if "mlflow" not in INSTALLED:
        pytest.skip("the mlflow extra is not installed")
    from mlflow.tracking import MlflowClient

    store = (tracked / "tracked" / "logs" / "mlruns").resolve().as_uri()
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("tracked")
    (run,) = client.search_runs([experiment.experiment_id])  # the resume continued it
    assert run.info.status == "FINISHED"
    assert run.info.run_name.startswith("grid/momentum/decaying/seed0 ")
    assert run.data.params["optimizer.lr"] == "0.1"
    for tag, steps in _expected(tracked / "tracked").items():
        history = client.get_metric_history(run.info.run_id, tag)
        assert {m.step: m.value for m in history} == steps, tag
        assert len(history) == len(steps), tag
    row = pd.read_parquet(glob.glob(str(tracked / "tracked" / "runs" / "*"))[0]).iloc[0]
    assert run.data.metrics["run.final_test_acc"] == row["final_test_acc"]
    assert run.data.tags["run.status"] == "ok"


def _wandb_records(path: str) -> list[Any]:
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal import datastore

    data = datastore.DataStore()
    data.open_for_scan(path)
    records = []
    while (raw := data.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        records.append(record)
    return records


def test_wandb_offline_holds_the_curves(tracked: Path) -> None:
    if "wandb" not in INSTALLED:
        pytest.skip("the wandb extra is not installed")
    files = sorted(
        glob.glob(str(tracked / "tracked" / "logs" / "wandb" / "offline-run-*" / "*.wandb"))
    )
    assert len(files) == 2  # offline: the run, then the resume (wandb sync --append joins them)
    got: dict[str, dict[int, float]] = {}
    summary: dict[str, Any] = {}
    for path in files:
        for record in _wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                assert record.run.project == "tracked"
                assert record.run.display_name.startswith("grid/momentum/decaying/seed0 ")
            elif kind == "history":
                step = record.history.step.num
                for item in record.history.item:
                    key = item.key or "/".join(item.nested_key)
                    if not key.startswith("_"):
                        assert step not in got.get(key, {}), (key, step)  # no step twice
                        got.setdefault(key, {})[step] = json.loads(item.value_json)
            elif kind == "summary":
                summary.update(
                    {i.key: json.loads(i.value_json) for i in record.summary.update if i.key}
                )
    expected = _expected(tracked / "tracked")
    assert got == expected
    row = pd.read_parquet(glob.glob(str(tracked / "tracked" / "runs" / "*"))[0]).iloc[0]
    assert summary["final_test_acc"] == row["final_test_acc"] and summary["status"] == "ok"


def test_report_exports_rows_after_the_fact(tracked: Path, tmp_path: Path) -> None:
    """`harness report FOLDER --track tensorboard --track-dir DIR`: the rows in the dashboard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc = run_cli(
        "report", str(tracked / "plain"), "--track", "tensorboard", "--track-dir", str(tmp_path),
        env=ENV,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exported 1 cell(s) to tensorboard" in proc.stderr
    (folder,) = glob.glob(str(tmp_path / "tb" / "*"))
    events = EventAccumulator(folder, size_guidance={"scalars": 0})
    events.Reload()
    expected = _expected(tracked / "plain")
    assert {e.step: e.value for e in events.Scalars("train_loss")} == pytest.approx(
        expected["train_loss"], rel=1e-6
    )


def test_broken_tracker_is_one_warning(tmp_path: Path) -> None:
    """A tracker folder that cannot be written (logs/tb a file; logs/wandb a link out of the
    results folder) is one warning per tracker; the cell trains and its rows are written,
    and nothing is written through the link."""
    if "tensorboard" not in INSTALLED:
        pytest.skip("the tensorboard extra is not installed")
    (tmp_path / "suite.yaml").write_text(SUITE.replace("epochs: 2", "epochs: 1"))
    logs = tmp_path / "broken" / "logs"
    logs.mkdir(parents=True)
    (logs / "tb").write_text("not a folder")
    outside = tmp_path / "outside"
    outside.mkdir()
    (logs / "mlruns").symlink_to(outside)
    flags = ["--track", "mlflow"] if "mlflow" in INSTALLED else []
    proc = _run(tmp_path, "broken", *flags)
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 + len(flags) // 2, proc.stderr[-3000:]
    assert "--track tensorboard" in warnings[0] and "not a folder" in warnings[0]
    assert glob.glob(str(tmp_path / "broken" / "runs" / "*.parquet"))
    assert glob.glob(str(tmp_path / "broken" / "curves" / "*.parquet"))
    assert list(outside.iterdir()) == []
    assert "ok " in proc.stderr


def test_missing_extra_is_one_line(tmp_path: Path) -> None:
    """Without the package: one line naming the extra, exit 2, nothing trained or written."""
    (tmp_path / "suite.yaml").write_text(SUITE)
    hide = tmp_path / "hide"
    hide.mkdir()
    # Python reads sitecustomize at start-up: the package then looks absent to find_spec.
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['wandb'] = None\n")
    path = os.pathsep.join([str(hide), os.environ.get("PYTHONPATH", "")])
    proc = run_cli(
        "run", str(tmp_path / "suite.yaml"), "--results", str(tmp_path / "r"), "--track", "wandb",
        env={**ENV, "PYTHONPATH": path},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "--track wandb" in lines[0] and "pip install 'batchsize-harness[wandb]'" in lines[0]
    assert not (tmp_path / "r").exists()
    bad = run_cli("run", str(tmp_path / "suite.yaml"), "--track", "neptune", env=ENV)
    assert bad.returncode == 2 and "unknown tracker" in bad.stderr


def test_suite_tracking_block_is_checked(tmp_path: Path) -> None:
    (tmp_path / "suite.yaml").write_text(SUITE.replace("[tensorboard]", "[tensorbored]"))
    proc = run_cli("plan", str(tmp_path / "suite.yaml"), env=ENV)
    assert proc.returncode == 2 and "tracking.track" in proc.stderr, proc.stderr
