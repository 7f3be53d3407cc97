"""`harness plan --estimate`: device-seconds per cell from real `harness bench` rows."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from harness.app.estimate import (
    ASSUMED_TEST_IMAGES,
    StepModel,
    bench_name,
    estimate,
    evaluated_images,
    makespan,
)
from harness.config.suite import load_suite

SUITE = """\
name: est
dataset: {name: synthetic, train_size: 256, test_size: 64}
models: {small: {name: small_cnn, width: 16}}
optimizers: {momentum: {kind: momentum, lr: 0.05, momentum: 0.9}}
schedule: {epochs: 4, milestones: [2, 3], factor: 2, batch_size: 32}
schedules:
  decaying: {realization: lr}
  increasing: {realization: batch}
training: {ghost_batch_size: 16}
execution: {eval_batch_size: 64}
experiments: [{name: grid, optimizers: [momentum], schedules: [decaying, increasing]}]
"""


def test_step_time_line_through_the_measured_sizes():
    exact = StepModel.fit({128: 0.004, 640: 0.006, 3200: 0.016})
    assert exact.step_s(640) == 0.006  # a measured size is its measurement
    assert exact.fixed_s > 0 and exact.per_image_s > 0
    two = StepModel.fit({100: 0.002, 300: 0.004})
    assert two.fixed_s == pytest.approx(0.001) and two.per_image_s == pytest.approx(1e-5)
    assert two.step_s(200) == pytest.approx(0.003)
    # A line that would start below zero goes through the origin instead.
    origin = StepModel.fit({100: 0.001, 200: 0.003})
    assert origin.fixed_s == 0 and origin.step_s(150) > 0
    assert StepModel.fit({128: 0.01}).step_s(256) == pytest.approx(0.02)


def test_longest_first_assignment():
    assert makespan([5, 4, 3, 3, 1], 2) == 8  # {5, 3} and {4, 3, 1}
    assert makespan([5, 4], 4) == 5
    assert makespan([1.0] * 6, 1) == 6


def test_evaluations_follow_eval_every_and_the_datasets_test_count(tmp_path: Path):
    """Every eval_every epochs and the last; the suite's test_size, else the dataset's known
    count (CIFAR-100's 10000, ImageNet's 50000), else the named assumption; the training-loss
    images on top when the suite measures it."""
    suite_path = tmp_path / "est.yaml"

    def first(replacements: dict[str, str]) -> tuple[int, int]:
        text = SUITE
        for old, new in replacements.items():
            assert old in text
            text = text.replace(old, new)
        suite_path.write_text(text)
        return evaluated_images(load_suite(suite_path).cells[0])

    assert first({}) == (4, 64)
    assert first({"ghost_batch_size: 16}": "ghost_batch_size: 16, eval_every: 3}"}) == (2, 64)
    cifar100 = "{name: cifar100, train_size: 256}"
    dataset = "{name: synthetic, train_size: 256, test_size: 64}"
    assert first({dataset: cifar100}) == (4, 10_000)
    imagenet = "{name: imagenet, path: /nowhere, train_size: 256}"
    assert first({dataset: imagenet}) == (4, 50_000)
    folder = "{name: imagefolder, path: /nowhere, classes: 3, train_size: 256}"
    assert first({dataset: folder}) == (4, ASSUMED_TEST_IMAGES)
    with_loss = "{eval_batch_size: 64, eval_train_loss: true, train_loss_images: 100}"
    assert first({"{eval_batch_size: 64}": with_loss}) == (4, 164)


def test_a_factory_model_is_named_as_bench_names_it(tmp_path: Path):
    """`harness bench --model net.py:build` rows match the suite's `factory: net.py:build`
    (never imported here); a factory with kwargs is not one bench times."""
    models = 'mine: {factory: "net.py:build"}, wide: {factory: "net.py:build", kwargs: {w: 2}}'
    suite_path = tmp_path / "est.yaml"
    suite_path.write_text(SUITE.replace("small: {name: small_cnn, width: 16}", models))
    names = {c.model_name: bench_name(c) for c in load_suite(suite_path).cells}
    assert names == {"mine": "net.py:build", "wide": None}


def test_estimate_from_real_bench_rows(cli, tmp_path: Path):
    bench = tmp_path / "bench"
    made = cli(
        "bench", "--device", "cpu", "--model", "small_cnn", "--batch-sizes", "32,64",
        "--ghost", "16", "--steps", "1", "--repeats", "1", "--data", "synthetic",
        "--out", str(bench),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    suite_path = tmp_path / "est.yaml"
    suite_path.write_text(textwrap.dedent(SUITE))
    cells = load_suite(suite_path).cells
    rows = pd.read_parquet(next(bench.glob("*.parquet")))
    harness = rows[rows["impl"] == "harness"].set_index("batch_size")["step_time_s"]
    device, estimates, totals = estimate(cells, bench, None, 2)
    assert device == rows["device_name"].iloc[0]
    line = StepModel.fit({int(b): float(t) for b, t in harness.items()})
    for item in estimates:
        cell = item.cell
        expected = sum(p.updates * line.step_s(p.batch_size) for p in cell.plan.phases)
        expected += cell.plan.epochs * 64 * line.per_image_s / 3  # eval_every 1, 64 images
        assert item.seconds == pytest.approx(expected)
        assert item.steps == cell.plan.updates
        assert item.images == sum(p.updates * p.batch_size for p in cell.plan.phases)
    assert totals["serial_s"] == pytest.approx(sum(e.seconds for e in estimates))
    assert totals["best_s"] <= totals["serial_s"]
    assert math.isfinite(totals["best_s"]) and totals["best_s"] > 0

    shown = cli("plan", str(suite_path), "--estimate", "--bench", str(bench), "--per-device", "2")
    assert shown.returncode == 0, shown.stderr
    assert all(c.cell_id in shown.stdout for c in cells)
    assert "2 workers on the device" in shown.stdout

    empty = cli("plan", str(suite_path), "--estimate", "--bench", str(tmp_path / "none"))
    assert empty.returncode == 2 and "no bench rows there" in empty.stderr
    assert "Traceback" not in empty.stderr
    other = cli(
        "plan", str(suite_path), "--estimate", "--bench", str(bench), "--device-name", "H200"
    )
    assert other.returncode == 2 and "--device-name H200: no bench rows" in other.stderr


def test_first_principles_script_counts_flops_and_kernels(tmp_path: Path):
    """scripts/first_principles.py: FLOPs and kernels counted from the harness's own step, the
    eager estimate never below the captured one, K workers never above one worker."""
    import subprocess
    import sys

    from tests.conftest import REPO

    suite_path = tmp_path / "est.yaml"
    suite_path.write_text(textwrap.dedent(SUITE))
    out = subprocess.run(
        [sys.executable, "scripts/first_principles.py", str(suite_path), "--workers", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "GFLOP per training image" in lines[0] and "kernels per micro-batch" in lines[0]
    flops = float(lines[0].split("counted: ")[1].split(" GFLOP")[0])
    assert flops > 0
    for cell in load_suite(suite_path).cells:
        row = next(line for line in lines if line.startswith(cell.cell_id)).split()
        eager, captured = float(row[-2]), float(row[-1])
        assert int(row[-3]) == cell.plan.updates and eager >= captured >= 0
    totals = {line.split(":")[0]: line for line in lines if "one worker" in line}
    assert set(totals) == {"eager", "captured"}
