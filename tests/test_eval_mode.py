"""Evaluation under `torch.inference_mode` (issue 46, item 3): its numbers do not move.

"Before" is the same function run under `torch.no_grad` (the decorator it had), through
``evaluate.__wrapped__``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import harness.train.loop as loop
from harness.core.execution import Execution
from harness.data.cifar10 import synthetic_cifar10
from harness.data.device import DeviceData
from harness.train.loop import train_cell
from harness.train.step import evaluate
from tests.test_train import cell_of, tiny_suite


def _no_grad_evaluate(*args: Any, **kwargs: Any) -> tuple[float, float]:
    with torch.no_grad():
        result: tuple[float, float] = evaluate.__wrapped__(*args, **kwargs)  # type: ignore[attr-defined]
    return result


@pytest.fixture(scope="module")
def data() -> DeviceData:
    return DeviceData.from_arrays(synthetic_cifar10(256, 64, seed=0), torch.device("cpu"))


def test_evaluation_runs_in_inference_mode(data: DeviceData) -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    seen: list[tuple[bool, bool]] = []
    model.register_forward_hook(
        lambda *_: seen.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
    )
    evaluate(model, data, 32, "fp32")
    assert seen and set(seen) == {(True, False)}
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def _curves(tmp_path: Path, data: DeviceData, evaluate_with: Callable[..., Any]) -> list[Any]:
    mp = pytest.MonkeyPatch()
    with mp.context() as m:
        m.setattr(loop, "evaluate", evaluate_with)
        job = cell_of(tiny_suite(tmp_path), "momentum", "increasing")
        execution = Execution(
            eval_batch_size=48, max_micro_batch=32, eval_train_loss=True, train_loss_images=100
        )
        checkpoint = tmp_path / f"{evaluate_with.__name__}.pt"
        result = train_cell(job, data, execution, checkpoint)
    assert result.progress.status == "ok"
    return [(c.test_loss, c.test_acc, c.train_eval_loss) for c in result.progress.curves]


def test_a_tiny_cells_evaluations_are_identical_under_no_grad_and_inference_mode(
    tmp_path: Path, data: DeviceData
) -> None:
    """A real cell (4 epochs, B 32 → 128, ghost 16), test and training-set evaluations at a
    batch that leaves a short last batch, float32: every value bit for bit."""
    after = _curves(tmp_path, data, evaluate)
    before = _curves(tmp_path, data, _no_grad_evaluate)
    assert len(after) == 4 and all(not math.isnan(v) for row in after for v in row)
    assert after == before
