"""scripts/gpu_campaign.sh dry-run on the CPU: a chain of commands equals one whole run.

Each "command" is the script run once with the previous command's OUTDIR as its carried
state. CAMPAIGN_STOP_AFTER makes every cell train exactly one epoch per command and pause,
so three commands of a three-epoch suite must pause, resume across packed/unpacked state and
finish, with the same rows as one uninterrupted `harness run`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, run_cli

SUITE = """\
name: campaign
dataset: {name: synthetic, train_size: 256, test_size: 64}
models:
  small: {name: small_cnn, width: 4}
optimizers:
  momentum: {kind: momentum, lr: 0.05, momentum: 0.9}
schedule: {epochs: 3, milestones: [1, 2], factor: 2, batch_size: 32}
schedules:
  decaying: {realization: lr}
  increasing: {realization: batch}
training: {ghost_batch_size: 16}
execution: {eval_batch_size: 64, max_micro_batch: 32}
experiments:
  - name: grid
    optimizers: [momentum]
    schedules: [decaying, increasing]
"""
RUN_KEYS = ["cell_id", "status", "epochs", "updates", "final_test_acc", "final_train_loss"]
CURVE_KEYS = ["cell_id", "epoch", "updates", "train_loss", "test_loss", "test_acc"]


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("bash") is None, reason="scripts/gpu_campaign.sh is a bash script; no bash on PATH"
)
def test_three_campaign_commands_equal_one_uninterrupted_run(tmp_path: Path) -> None:
    suite = tmp_path / "campaign.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    state = tmp_path / "state"
    env = {
        **os.environ,
        "CAMPAIGN_SUITE": str(suite),
        "CAMPAIGN_DEVICE": "cpu",
        "CAMPAIGN_WORKERS": "2",  # the two cells side by side, as four share the GPU
        "CAMPAIGN_STATE": str(state),
        "CAMPAIGN_STOP_AFTER": "0.01",
        "PYTHON": sys.executable,  # this interpreter, not whatever python3 is on PATH
        "CAMPAIGN_BENCH_ARGS": "--model small_cnn --batch-sizes 32 --ghost 16 --steps 1 "
        "--repeats 1 --data synthetic",
        "HARNESS_DATA": str(tmp_path / "unused"),  # synthetic suite: nothing to unpack
    }
    # HARNESS_DATA must look valid for the script to skip the unpack.
    (tmp_path / "unused" / "cifar-10-batches-py").mkdir(parents=True)
    (tmp_path / "unused" / "cifar-10-batches-py" / "data_batch_1").touch()
    logs = []
    for command in range(3):
        out = tmp_path / f"out{command}"
        result = subprocess.run(
            ["bash", "scripts/gpu_campaign.sh", str(out)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        files = sorted(p.name for p in out.iterdir())
        assert "campaign.log" in files and len(files) <= 8
        assert all(p.stat().st_size < 16 * 2**20 for p in out.iterdir())
        logs.append((out / "campaign.log").read_text())
        # The next command carries this one's OUTDIR as its state.
        shutil.rmtree(state, ignore_errors=True)
        shutil.copytree(out, state)
    assert "bench:" in logs[0] and "bench:" not in logs[1] + logs[2]
    # The bench's rows are packed before any cell trains (a command cut short keeps them).
    assert logs[0].count("packing") == 2 and logs[1].count("packing") == 1
    assert "pause" in logs[0] and "pause" in logs[1] and "continuing" in logs[2]
    # Both cells trained side by side in each command, by two workers of the one device.
    for log in logs:
        assert "2 workers on cpu, cpu" in log and "--per-device" not in log
        tags = {line.split()[0] for line in log.splitlines() if " pause " in line or " ok " in line}
        assert {"[cpu#0]", "[cpu#1]"} <= tags, log
    assert "report failed" not in "".join(logs)

    final = tmp_path / "final"
    final.mkdir()
    parts = sorted(state.glob("state.tar.gz.part-*"))
    joined = b"".join(p.read_bytes() for p in parts)
    subprocess.run(["tar", "-xz", "-C", str(final)], input=joined, check=True)
    assert list((final / "bench").glob("*.parquet"))
    assert (final / "report" / "REPORT.md").read_text().strip()

    whole = tmp_path / "whole"
    # The threads each of the campaign's two CPU workers had (cores / workers): another
    # thread count sums the convolutions in another order.
    result = run_cli(
        "run", str(suite), "--results", str(whole), "--device", "cpu",
        env={"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // 2))},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    def rows(folder: Path, kind: str, keys: list[str]) -> pd.DataFrame:
        frame = pd.read_parquet(folder / kind)[keys]
        return frame.sort_values(keys[:2]).reset_index(drop=True)

    pd.testing.assert_frame_equal(rows(final, "runs", RUN_KEYS), rows(whole, "runs", RUN_KEYS))
    pd.testing.assert_frame_equal(
        rows(final, "curves", CURVE_KEYS), rows(whole, "curves", CURVE_KEYS)
    )
    assert (rows(final, "runs", RUN_KEYS)["status"] == "ok").all()
