"""training.bn_stats: "precise" batch-norm statistics, recomputed before each evaluation.

By hand on a tiny model (each ghost slice's moments, averaged), through `precise_bn_stats`
(the first K training images, unaugmented), through `train_cell` (training unchanged, the
checkpoint holding the recomputed buffers), in the suite (ema keeps every cell id), and one
real `harness run` with --set training.bn_stats=precise.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.config.suite import load_suite
from harness.core.execution import Execution
from harness.data.cifar10 import synthetic_cifar10
from harness.data.device import DeviceData
from harness.errors import UserError
from harness.models.ghost_bn import GhostBatchNorm2d, ghost_batch_norms, precise_running_stats
from harness.train.checkpoint import load_checkpoint
from harness.train.loop import build, train_cell
from harness.train.optim import build_optimizer
from harness.train.step import precise_bn_stats
from tests.conftest import run_cli
from tests.test_train import cell_of, tiny_suite

GHOST = 4


def _tiny() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1),
        GhostBatchNorm2d(5, GHOST),
        nn.ReLU(),
        nn.Conv2d(5, 6, 3, padding=1),
        GhostBatchNorm2d(6, GHOST),
    ).double()


def _by_hand(model: nn.Sequential, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's (mean over slices of the slice means, of the slice unbiased variances),
    the slices normalized with their own biased moments as in training."""
    conv1, bn1, _, conv2, _ = model
    per_layer: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[], []]
    for s in x.split(GHOST):  # the last slice is the smaller remainder
        h = conv1(s)
        per_layer[0].append((h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=True)))
        h = F.batch_norm(h, None, None, bn1.weight, bn1.bias, True, 0.0, bn1.eps).relu()
        h = conv2(h)
        per_layer[1].append((h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=True)))
    return [
        (torch.stack([m for m, _ in ms]).mean(0), torch.stack([v for _, v in ms]).mean(0))
        for ms in per_layer
    ]


@torch.no_grad()
def test_precise_stats_are_the_mean_of_each_ghost_slices_moments():
    model = _tiny()
    x = torch.randn(10, 3, 6, 6, dtype=torch.float64)  # slices of 4, 4 and a remainder of 2
    tracked = [m.num_batches_tracked.clone() for m in ghost_batch_norms(model)]
    model.eval()
    precise_running_stats(model, [x[:8], x[8:]])  # whole slices per input
    assert not model.training  # back in the mode it was in
    expected = _by_hand(model, x)
    for layer, (mean, var), before in zip(ghost_batch_norms(model), expected, tracked, strict=True):
        assert torch.allclose(layer.running_mean, mean, rtol=1e-10, atol=1e-12)
        assert torch.allclose(layer.running_var, var, rtol=1e-10, atol=1e-12)
        assert torch.equal(layer.num_batches_tracked, before)
        assert layer._slices.item() == 0 and not layer.defer_running_stats  # nothing pending
    # Replaced, not blended: running it again on other data forgets the first.
    other = torch.randn(8, 3, 6, 6, dtype=torch.float64) * 3 + 1
    precise_running_stats(model, [other])
    assert torch.allclose(ghost_batch_norms(model)[0].running_mean, _by_hand(model, other)[0][0])


def test_precise_bn_stats_take_the_first_images_unaugmented_whatever_the_batching(tmp_path):
    data = DeviceData.from_arrays(synthetic_cifar10(96, 16, seed=1), torch.device("cpu"))
    job = cell_of(tiny_suite(tmp_path), "momentum", "increasing")
    model = build(job, torch.device("cpu"), Execution())
    precise_bn_stats(model, data, 40, 16, 64, "fp32")  # 40 = 16 + 16 + a slice of 8
    got = [(m.running_mean.clone(), m.running_var.clone()) for m in ghost_batch_norms(model)]
    precise_bn_stats(model, data, 40, 16, 16, "fp32")  # one slice per forward: the same
    again = [(m.running_mean, m.running_var) for m in ghost_batch_norms(model)]
    first = torch.cat([x for x, _ in data.train_eval_batches(96)])[:40]
    fresh = build(job, torch.device("cpu"), Execution())
    precise_running_stats(fresh, [first])
    for (m, v), (m2, v2), layer in zip(got, again, ghost_batch_norms(fresh), strict=True):
        assert torch.allclose(m, m2, atol=1e-6) and torch.allclose(v, v2, atol=1e-6)
        assert torch.allclose(m, layer.running_mean, atol=1e-6)
        assert torch.allclose(v, layer.running_var, atol=1e-6)
    # More images than the training set: all of it.
    precise_bn_stats(model, data, 10_000, 16, 64, "fp32")
    everything = build(job, torch.device("cpu"), Execution())
    precise_running_stats(everything, [x for x, _ in data.train_eval_batches(96)])
    for a, b in zip(ghost_batch_norms(model), ghost_batch_norms(everything), strict=True):
        assert torch.allclose(a.running_mean, b.running_mean, atol=1e-6)


def test_precise_changes_evaluation_only_and_the_checkpoint_holds_its_buffers(tmp_path):
    data = DeviceData.from_arrays(synthetic_cifar10(256, 64, seed=0), torch.device("cpu"))
    job = cell_of(tiny_suite(tmp_path), "momentum", "increasing")
    execution = Execution(eval_batch_size=64)
    ema = train_cell(job, data, execution, tmp_path / "ema.pt")
    precise_job = dataclasses.replace(job, bn_stats="precise", bn_stats_images=100)
    precise = train_cell(precise_job, data, execution, tmp_path / "precise.pt")
    keys = ("updates", "train_loss", "lr", "batch_size")
    assert [{k: getattr(c, k) for k in keys} for c in ema.progress.curves] == [
        {k: getattr(c, k) for k in keys} for c in precise.progress.curves
    ]  # running statistics never touch training
    assert [c.test_loss for c in ema.progress.curves] != [
        c.test_loss for c in precise.progress.curves
    ]
    # The checkpoint's buffers are the final weights' precise statistics.
    device = torch.device("cpu")
    saved = build(precise_job, device, execution)
    optimizer = build_optimizer(saved.parameters(), job.optimizer, device)
    assert load_checkpoint(tmp_path / "precise.pt", job.cell_id, saved, optimizer, device, job.plan)
    recomputed = build(precise_job, device, execution)
    recomputed.load_state_dict(saved.state_dict())
    precise_bn_stats(recomputed, data, 100, job.ghost_batch_size, 64, "fp32")
    for a, b in zip(ghost_batch_norms(saved), ghost_batch_norms(recomputed), strict=True):
        assert torch.allclose(a.running_mean, b.running_mean, atol=1e-6)
        assert torch.allclose(a.running_var, b.running_var, atol=1e-6)


SUITE = """\
name: bn
dataset: {name: synthetic, train_size: 64, test_size: 32}
models:
  small: {name: small_cnn, width: 4}
optimizers:
  momentum: {kind: momentum, lr: 0.05, momentum: 0.9}
schedule: {epochs: 2, milestones: [1], factor: 2, batch_size: 16}
schedules:
  increasing: {realization: batch}
training: {ghost_batch_size: 8}
execution: {eval_batch_size: 32}
experiments:
  - name: grid
    optimizers: [momentum]
    schedules: [increasing]
    seeds: [0, 1]
"""


def _suite(tmp_path: Path, overrides: tuple[str, ...] = ()):
    path = tmp_path / "bn.yaml"
    path.write_text(textwrap.dedent(SUITE))
    return load_suite(path, overrides)


def test_ema_keeps_every_cell_id_and_precise_is_a_recipe_change(tmp_path):
    ids = [c.cell_id for c in _suite(tmp_path).cells]
    ema = ("training.bn_stats=ema", "training.bn_stats_images=100")
    assert [c.cell_id for c in _suite(tmp_path, ema).cells] == ids  # K is moot under ema
    assert "bn_stats" not in _suite(tmp_path).cells[0].resolved_config()["training"]
    precise = [c.cell_id for c in _suite(tmp_path, ("training.bn_stats=precise",)).cells]
    fewer = ("training.bn_stats=precise", "training.bn_stats_images=100")
    assert not set(precise) & set(ids)
    assert not set(precise) & {c.cell_id for c in _suite(tmp_path, fewer).cells}
    with pytest.raises(UserError, match=r"training\.bn_stats: .*'ema' or 'precise'"):
        _suite(tmp_path, ("training.bn_stats=exact",))
    with pytest.raises(UserError, match=r"training\.bn_stats_images: .*greater than 0"):
        _suite(tmp_path, ("training.bn_stats_images=0",))


def test_precise_statistics_are_refused_on_an_image_folder(tmp_path):
    text = SUITE.replace("name: synthetic, train_size: 64, test_size: 32", "name: imagenet")
    path = tmp_path / "folder.yaml"
    path.write_text(textwrap.dedent(text))
    assert load_suite(path).spec.training.bn_stats == "ema"
    with pytest.raises(UserError, match=r"training\.bn_stats: .*sorts by class"):
        load_suite(path, ("training.bn_stats=precise",))


def test_harness_run_with_precise_statistics(tmp_path):
    path = tmp_path / "bn.yaml"
    path.write_text(textwrap.dedent(SUITE))
    results = tmp_path / "results"
    args = ("--set", "training.bn_stats=precise", "--set", "training.bn_stats_images=24")
    run = run_cli("run", str(path), "--results", str(results), "--device", "cpu", *args)
    assert run.returncode == 0, run.stdout + run.stderr
    runs = pd.read_parquet(results / "runs")
    assert list(runs["status"]) == ["ok", "ok"]
    configs = [json.loads(c)["training"] for c in runs["config"]]
    assert all(c["bn_stats"] == "precise" and c["bn_stats_images"] == 24 for c in configs)
    plan = run_cli("plan", str(path), "--json", *args)
    assert sorted(runs["cell_id"]) == sorted(c["cell_id"] for c in json.loads(plan.stdout)["cells"])
    curves = pd.read_parquet(results / "curves")
    assert len(curves) == 4 and curves["test_acc"].notna().all()
