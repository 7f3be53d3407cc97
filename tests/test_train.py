"""The training loop on synthetic data: accumulation, seeds, divergence, phases, resume.

Real CIFAR-10 and the CLI are exercised in test_e2e.py; here each property is checked on the
smallest data that shows it, in-process.
"""

from __future__ import annotations

import math
import shutil
import textwrap
from pathlib import Path

import pytest
import torch

from harness.app.jobs import train_job
from harness.config.suite import load_suite
from harness.core.execution import Execution, ExecutionError
from harness.data.cifar10 import synthetic_cifar10
from harness.data.device import DeviceData
from harness.train.epoch import stream_seed
from harness.train.loop import build, train_cell
from harness.train.optim import build_optimizer, set_hyperparameters
from harness.train.spec import TrainJob
from harness.train.step import micro_batch_size, step_micro_batch, train_step

SUITE = """\
name: tiny
dataset: {{name: synthetic, train_size: 256, test_size: 64}}
models:
  small: {{name: small_cnn, width: 4}}
optimizers:
  momentum: {{kind: momentum, lr: {lr}, momentum: 0.9}}
  adam: {{kind: adam, lr: 0.001}}
schedule:
  epochs: 4
  milestones: [2, 3]
  factor: 2
  batch_size: 32
schedules:
  decaying: {{realization: lr}}
  increasing: {{realization: batch}}
training: {{ghost_batch_size: 16}}
execution: {{max_micro_batch: 32, eval_batch_size: 64}}
experiments:
  - name: grid
    optimizers: [momentum, adam]
    schedules: [decaying, increasing]
    seeds: [0]
"""


def tiny_suite(tmp_path: Path, lr: float = 0.05):
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(SUITE.format(lr=lr)))
    return load_suite(path)


def cell_of(suite, optimizer: str, schedule: str) -> TrainJob:
    """The training job of one cell of the suite, as the runner would make it."""
    return train_job(
        next(
            c for c in suite.cells if c.optimizer_name == optimizer and c.schedule_name == schedule
        )
    )


@pytest.fixture(scope="module")
def data() -> DeviceData:
    return DeviceData.from_arrays(synthetic_cifar10(256, 64, seed=0), torch.device("cpu"))


def test_stream_seeds_are_stable_and_distinct():
    assert stream_seed(0, "order", 1) == stream_seed(0, "order", 1)
    names = ("order", "augment")
    seeds = {stream_seed(s, name, e) for s in (0, 1) for name in names for e in (0, 1)}
    assert len(seeds) == 8
    assert all(0 <= s < 2**63 for s in seeds)


def test_micro_batch_size_is_a_multiple_of_the_ghost_size():
    execution = Execution(max_micro_batch=100)
    assert micro_batch_size(64, execution, ghost=16) == 64
    assert micro_batch_size(512, execution, ghost=16) == 96
    assert micro_batch_size(512, Execution(max_micro_batch=None), ghost=16) == 512


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_accumulated_micro_batches_equal_one_big_batch(tmp_path, data, optimizer):
    """B = 64 as four micro-batches of 16 gives the update of one batch of 64."""
    cell = cell_of(tiny_suite(tmp_path), optimizer, "decaying")
    execution = Execution()
    indices = torch.arange(64)
    params, losses = [], []
    for micro in (64, 16):
        model = build(cell, data.device, execution).double()
        model.train()
        optim = build_optimizer(model.parameters(), cell.optimizer, data.device)
        # Two steps, so that momentum / Adam state built from accumulated gradients is used.
        for step in range(2):
            gen = torch.Generator().manual_seed(step)
            data_f64 = _Float64(data)
            losses.append(float(train_step(model, optim, data_f64, indices, micro, gen, "fp32")))
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(params[0], params[1], rtol=0, atol=1e-10)
    # The reported loss is summed in float32 on the device, hence the looser tolerance.
    assert losses[0] == pytest.approx(losses[2], rel=1e-6)
    assert losses[1] == pytest.approx(losses[3], rel=1e-6)
    # And the step did something.
    fresh = build(cell, data.device, execution).double()
    start = torch.cat([p.detach().flatten() for p in fresh.parameters()])
    assert (params[0] - start).abs().max() > 1e-4


class _Float64:
    """A DeviceData whose normalized images are float64, for exactness at double precision."""

    def __init__(self, data: DeviceData) -> None:
        self._data = data
        self.device = data.device
        self.n_test = data.n_test
        self.n_train = data.n_train

    def test_batches(self, batch_size):
        for x, y in self._data.test_batches(batch_size):
            yield x.double(), y

    def train_eval_batches(self, batch_size):
        for x, y in self._data.train_eval_batches(batch_size):
            yield x.double(), y

    def train_images(self, indices, generator):
        return self._data.train_images(indices, generator)

    def normalize(self, x):
        return self._data.normalize(x).double()


def test_same_cell_twice_gives_identical_metrics(tmp_path, data):
    cell = cell_of(tiny_suite(tmp_path), "momentum", "increasing")
    runs = [
        train_cell(cell, data, Execution(eval_batch_size=64), tmp_path / f"{i}.pt")
        for i in range(2)
    ]
    keys = ("updates", "lr", "batch_size", "train_loss", "test_loss", "test_acc")
    first, second = ([{k: getattr(c, k) for k in keys} for c in r.progress.curves] for r in runs)
    assert first == second
    assert runs[0].progress.updates == cell.plan.updates
    assert [c.epoch for c in runs[0].progress.curves] == [1, 2, 3, 4]


def test_same_seed_same_initial_weights_whatever_the_schedule(tmp_path):
    suite = tiny_suite(tmp_path)
    a = build(cell_of(suite, "momentum", "decaying"), torch.device("cpu"), Execution())
    b = build(cell_of(suite, "adam", "increasing"), torch.device("cpu"), Execution())
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)


def test_updates_follow_the_plan_phase_by_phase(tmp_path, data):
    cell = cell_of(tiny_suite(tmp_path), "momentum", "increasing")
    result = train_cell(cell, data, Execution(eval_batch_size=64), tmp_path / "c.pt")
    planned = [p for p in cell.plan.phases for _ in range(p.start_epoch, p.end_epoch)]
    steps = [c.updates for c in result.progress.curves]
    per_epoch = [b - a for a, b in zip([0, *steps], steps)]
    assert per_epoch == [p.updates // (p.end_epoch - p.start_epoch) for p in planned]
    assert [c.batch_size for c in result.progress.curves] == [p.batch_size for p in planned]
    assert result.progress.images == sum(per_epoch[i] * planned[i].batch_size for i in range(4))


def test_huge_lr_diverges_and_stops(tmp_path, data):
    cell = cell_of(tiny_suite(tmp_path, lr=1e6), "momentum", "decaying")
    result = train_cell(cell, data, Execution(eval_batch_size=64), tmp_path / "d.pt")
    assert result.progress.status == "diverged"
    assert "training loss is" in (result.progress.error or "")
    assert len(result.progress.curves) == result.progress.epoch  # stopped where it diverged
    assert not math.isfinite(result.progress.curves[-1].train_loss)


def test_phase_change_keeps_optimizer_state(tmp_path, data):
    cell = cell_of(tiny_suite(tmp_path), "momentum", "decaying")
    model = build(cell, data.device, Execution())
    optim = build_optimizer(model.parameters(), cell.optimizer, data.device)
    gen = torch.Generator().manual_seed(0)
    train_step(model, optim, data, torch.arange(32), 32, gen, "fp32")
    buffers = [optim.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    set_hyperparameters(optim, lr=0.001, momentum=0.95)
    assert all(g["lr"] == 0.001 and g["momentum"] == 0.95 for g in optim.param_groups)
    for p, before in zip(model.parameters(), buffers):
        assert torch.equal(optim.state[p]["momentum_buffer"], before)


class _Stop(Exception):
    pass


def test_interrupted_cell_resumes_to_the_same_metrics(tmp_path, data):
    """Killed after epoch 2 (its checkpoint written), a re-run ends where an unbroken run does."""
    cell = cell_of(tiny_suite(tmp_path), "momentum", "increasing")
    execution = Execution(eval_batch_size=64, max_micro_batch=32)
    whole = train_cell(cell, data, execution, tmp_path / "whole.pt")

    def stop_after_two(_cell, row):
        if row.epoch == 2:
            raise _Stop

    checkpoint = tmp_path / "broken.pt"
    with pytest.raises(_Stop):
        train_cell(cell, data, execution, checkpoint, on_epoch=stop_after_two)
    assert checkpoint.exists()
    resumed = train_cell(cell, data, execution, checkpoint)
    keys = ("epoch", "updates", "train_loss", "test_loss", "test_acc")
    assert [{k: getattr(c, k) for k in keys} for c in resumed.progress.curves] == [
        {k: getattr(c, k) for k in keys} for c in whole.progress.curves
    ]
    assert resumed.final == whole.final


def test_bf16_channels_last_cell_runs_on_the_cpu(tmp_path, data):
    """The GPU options (bf16 autocast, channels_last) follow the same plan on the CPU."""
    path = tmp_path / "bf16.yaml"
    path.write_text(
        textwrap.dedent(SUITE.format(lr=0.05)).replace(
            "training: {ghost_batch_size: 16}",
            "training: {ghost_batch_size: 16, precision: bf16}",
        )
    )
    cell = cell_of(load_suite(path), "momentum", "increasing")
    assert cell.precision == "bf16"
    cl_data = DeviceData.from_arrays(
        synthetic_cifar10(256, 64, seed=0), torch.device("cpu"), channels_last=True
    )
    execution = Execution(eval_batch_size=64, max_micro_batch=32, channels_last=True)
    result = train_cell(cell, cl_data, execution, tmp_path / "bf16.pt")
    assert result.progress.status == "ok"
    assert result.progress.updates == cell.plan.updates
    assert all(math.isfinite(c.train_loss) for c in result.progress.curves)
    assert 0.0 <= result.final["final_test_acc"] <= 1.0


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="torch.compile on the CPU needs a C++ compiler (c++ or g++ on PATH)",
)
def test_compiled_cell_compiles_only_in_the_warm_up(tmp_path, data):
    """torch.compile: one graph per micro-batch shape, all made before the timed epochs.

    A shape that recompiled during training (say a new batch size each phase, or dynamic
    shapes) would show up as graphs added after the warm-up, and as compile time inside the
    measured epochs. About 40 s on two CPU cores, nearly all of it compiling.
    """
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    cell = cell_of(tiny_suite(tmp_path), "momentum", "increasing")
    execution = Execution(eval_batch_size=64, max_micro_batch=64, compile=True)
    shapes = {step_micro_batch(p.batch_size, execution, 16) for p in cell.plan.phases}
    assert shapes == {32, 64}  # B 32 -> 64 -> 128 as micro-batches of at most 64
    graphs: list[int] = []

    def record(_cell, _row):
        graphs.append(counters["stats"]["unique_graphs"])

    result = train_cell(cell, data, execution, tmp_path / "c.pt", on_epoch=record)
    assert result.progress.status == "ok" and result.progress.updates == cell.plan.updates
    assert result.progress.warmup_time_s > 0
    # Every epoch saw the graph count the warm-up left: nothing compiled while timed.
    assert len(set(graphs)) == 1, graphs
    # Training graphs for the two shapes and one evaluation graph (batch 64 in eval mode).
    assert graphs[0] == len(shapes) + 1
    torch._dynamo.reset()


def _three_float64_steps(cell, data, model, keep_grads):
    """Three momentum updates of B = 64 as four micro-batches (accumulation), in float64;
    the parameters, BN buffers and test numbers after them."""
    from harness.train.step import evaluate

    base = getattr(model, "_orig_mod", model)
    optim = build_optimizer(base.parameters(), cell.optimizer, data.device)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for step in range(3):
        indices = torch.arange(step * 64, (step + 1) * 64)
        train_step(model, optim, _Float64(data), indices, 16, gen, "fp32", keep_grads=keep_grads)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    return state, evaluate(model, _Float64(data), 64, "fp32")


def test_grads_kept_in_place_change_no_number(tmp_path, data):
    """The captured step's gradient handling (zeroed in place, never freed) is the eager
    step's, bit for bit: 0 + g is g, and accumulation adds in the same order."""
    cell = cell_of(tiny_suite(tmp_path), "momentum", "decaying")
    runs = [
        _three_float64_steps(cell, data, build(cell, data.device, Execution()).double(), keep)
        for keep in (False, True)
    ]
    for key, value in runs[0][0].items():
        assert torch.equal(value, runs[1][0][key]), key
    assert runs[0][1] == runs[1][1]


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="torch.compile on the CPU needs a C++ compiler (c++ or g++ on PATH)",
)
def test_captured_step_equals_the_eager_step_in_float64(tmp_path, data):
    """compile_mode reduce-overhead (the captured step) against eager: same parameters, BN
    statistics and evaluation to 1e-9 after three accumulated updates, in float64.

    On the CPU inductor records no CUDA graphs, so this checks the compiled kernels, the
    in-place gradients and the warm-up's extra calls; that the graphs themselves replay the
    same numbers needs a GPU (test_captured_cell_records_cuda_graphs_in_the_warm_up)."""
    torch._dynamo.reset()
    cell = cell_of(tiny_suite(tmp_path), "momentum", "decaying")
    execution = Execution(compile=True, compile_mode="reduce-overhead")
    eager = _three_float64_steps(cell, data, build(cell, data.device, Execution()).double(), False)
    base = build(cell, data.device, execution).double()
    compiled = torch.compile(base, dynamic=False, mode=execution.compile_mode)
    captured = _three_float64_steps(cell, data, compiled, execution.graphs)
    for key, value in eager[0].items():
        torch.testing.assert_close(captured[0][key], value, rtol=1e-9, atol=1e-12, msg=key)
    assert captured[1] == pytest.approx(eager[1], rel=1e-9)
    torch._dynamo.reset()


def test_compile_mode_needs_compile():
    with pytest.raises(ExecutionError, match="needs compile: true"):
        Execution(compile_mode="reduce-overhead")
    with pytest.raises(ExecutionError, match="must be one of default, reduce-overhead"):
        Execution(compile=True, compile_mode="max-autotune")  # type: ignore[arg-type]
    assert Execution(compile=True, compile_mode="reduce-overhead").graphs
    assert not Execution(compile=True).graphs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_captured_cell_records_cuda_graphs_in_the_warm_up(tmp_path):
    """On a GPU: a captured cell trains the plan with graphs recorded in the warm-up (none
    skipped, none recorded in a timed epoch) and ends where the eager cell does (bf16-free:
    fp32, to float32 summation order)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    device = torch.device("cuda")
    gpu_data = DeviceData.from_arrays(synthetic_cifar10(256, 64, seed=0), device)
    cell = cell_of(tiny_suite(tmp_path), "momentum", "increasing")
    execution = Execution(
        eval_batch_size=64, max_micro_batch=32, compile=True, compile_mode="reduce-overhead"
    )
    graphs: list[int] = []

    def record(_cell, _row):
        graphs.append(counters["stats"]["unique_graphs"])

    result = train_cell(cell, gpu_data, execution, tmp_path / "g.pt", on_epoch=record)
    assert result.progress.status == "ok" and result.progress.updates == cell.plan.updates
    assert counters["inductor"]["cudagraph_skips"] == 0  # every graph captured
    assert len(set(graphs)) == 1, graphs  # nothing compiled while timed
    eager = train_cell(
        cell, gpu_data, Execution(eval_batch_size=64, max_micro_batch=32), tmp_path / "e.pt"
    )
    assert result.final["final_test_loss"] == pytest.approx(
        eager.final["final_test_loss"], rel=1e-3
    )
    torch._dynamo.reset()


def test_a_step_splits_into_equal_micro_batches_of_whole_ghost_slices():
    cap = Execution(max_micro_batch=100)
    assert step_micro_batch(64, cap, ghost=16) == 64  # fits: one micro-batch
    assert step_micro_batch(512, cap, ghost=16) == 64  # 32 slices, k = 6 -> 8 (divides 32)
    assert step_micro_batch(512, Execution(max_micro_batch=256), ghost=16) == 256
    assert step_micro_batch(112, Execution(max_micro_batch=48), ghost=16) == 16  # 7 slices
    assert step_micro_batch(5120, Execution(max_micro_batch=2048), ghost=128) == 1280
    for batch in range(16, 1024, 16):
        for limit in (16, 48, 100, 256):
            micro = step_micro_batch(batch, Execution(max_micro_batch=limit), ghost=16)
            assert batch % micro == 0 and micro % 16 == 0
            assert micro <= max(16, limit)


class _SyncCounter:
    """Counts host reads of device values: Python conversions and the aten ops behind them."""

    SYNC_OPS = ("_local_scalar_dense", "item", "is_nonzero", "nonzero", "equal")

    def __init__(self, monkeypatch) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        self.calls: list[str] = []
        counter = self

        for name in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__"):
            original = getattr(torch.Tensor, name)

            def wrapped(t, *args, _name=name, _original=original, **kwargs):
                counter.calls.append(_name)
                return _original(t, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, wrapped)

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func.overloadpacket.__name__ in counter.SYNC_OPS:
                    counter.calls.append(str(func))
                return func(*args, **(kwargs or {}))

        self.mode = Mode()


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_train_step_never_reads_a_device_value(tmp_path, data, monkeypatch, optimizer):
    """No host sync inside a step, across several micro-batches and the optimizer update."""
    cell = cell_of(tiny_suite(tmp_path), optimizer, "decaying")
    model = build(cell, data.device, Execution())
    optim = build_optimizer(model.parameters(), cell.optimizer, data.device)
    gen = torch.Generator().manual_seed(0)
    indices = torch.arange(64)
    train_step(model, optim, data, indices, 16, gen, "fp32")  # first step: creates the state
    counter = _SyncCounter(monkeypatch)
    with counter.mode:
        for _ in range(2):
            loss = train_step(model, optim, data, indices, 16, gen, "fp32")
    monkeypatch.undo()
    assert counter.calls == []
    assert math.isfinite(float(loss))


def test_the_sync_counter_sees_a_sync(monkeypatch):
    counter = _SyncCounter(monkeypatch)
    with counter.mode:
        t = torch.ones(3) * 2
        float(t.sum())
        t.nonzero()
    monkeypatch.undo()
    assert "__float__" in counter.calls and len(counter.calls) >= 3


def test_micro_batch_setting_changes_neither_weights_nor_evaluation(tmp_path, data):
    """max_micro_batch = B and = B/4: same parameters, BN statistics and test numbers.

    In float64, over several steps, so that a real difference cannot hide in rounding (in
    float32 the two runs differ by summation order, which a few epochs of SGD amplify).
    """
    from harness.train.step import evaluate

    cell = cell_of(tiny_suite(tmp_path), "momentum", "decaying")
    batch = 64
    states, evals = [], []
    for micro in (batch, batch // 4):
        model = build(cell, data.device, Execution()).double()
        optim = build_optimizer(model.parameters(), cell.optimizer, data.device)
        gen = torch.Generator().manual_seed(0)
        for step in range(3):
            indices = torch.arange(step * batch, (step + 1) * batch)
            model.train()
            train_step(model, optim, _Float64(data), indices, micro, gen, "fp32")
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        evals.append(evaluate(model, _Float64(data), 64, "fp32"))
    assert states[0]["features.1.num_batches_tracked"] == 3  # once per optimizer step
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key], rtol=1e-10, atol=1e-12)
    assert evals[0] == pytest.approx(evals[1], rel=1e-9)


def test_tensor_lr_is_overwritten_in_place(tmp_path, data):
    cell = cell_of(tiny_suite(tmp_path), "momentum", "decaying")
    model = build(cell, data.device, Execution())
    optim = build_optimizer(model.parameters(), cell.optimizer, data.device)
    lr = optim.param_groups[0]["lr"]
    if not isinstance(lr, torch.Tensor):
        pytest.skip("this torch build has no fused SGD for the CPU, so lr stays a float")
    assert optim.param_groups[0]["fused"] is True
    set_hyperparameters(optim, lr=0.125, momentum=0.5)
    assert optim.param_groups[0]["lr"] is lr and float(lr) == 0.125


def test_stop_after_pauses_at_an_epoch_boundary_and_resumes_exactly(tmp_path, data):
    """A deadline already past: one epoch, status paused, checkpoint kept; resuming (CPU save,
    CPU load) twice more ends with the curves of an uninterrupted run."""
    import time

    cell = cell_of(tiny_suite(tmp_path), "momentum", "increasing")
    execution = Execution(eval_batch_size=64, max_micro_batch=32)
    whole = train_cell(cell, data, execution, tmp_path / "whole.pt")
    checkpoint = tmp_path / "paused.pt"
    epochs = []
    for _ in range(3):
        part = train_cell(cell, data, execution, checkpoint, deadline=time.monotonic())
        assert part.progress.status == "paused" and checkpoint.exists()
        epochs.append(part.progress.epoch)
    assert epochs == [1, 2, 3]
    # Finished epochs' curve rows are in the checkpoint's progress.
    saved = torch.load(checkpoint, weights_only=True)["progress"]
    assert [c["epoch"] for c in saved["curves"]] == [1, 2, 3] and saved["status"] == "ok"
    last = train_cell(cell, data, execution, checkpoint, deadline=time.monotonic())
    assert last.progress.status == "ok"  # the last epoch ends the cell, deadline or not
    keys = ("epoch", "updates", "train_loss", "test_loss", "test_acc")
    assert [{k: getattr(c, k) for k in keys} for c in last.progress.curves] == [
        {k: getattr(c, k) for k in keys} for c in whole.progress.curves
    ]


def test_the_whole_training_set_loss_is_measured_and_changes_nothing_else(tmp_path, data):
    """execution.eval_train_loss: the paper's training loss (eval mode, no augmentation, every
    training image) per evaluated epoch; every other number of the cell stays the same."""
    job = cell_of(tiny_suite(tmp_path), "momentum", "increasing")
    plain = train_cell(job, data, Execution(eval_batch_size=64), tmp_path / "a.pt")
    measured = train_cell(
        job, data, Execution(eval_batch_size=64, eval_train_loss=True), tmp_path / "b.pt"
    )
    keys = ("updates", "train_loss", "test_loss", "test_acc")
    assert [{k: getattr(c, k) for k in keys} for c in plain.progress.curves] == [
        {k: getattr(c, k) for k in keys} for c in measured.progress.curves
    ]
    assert all(math.isnan(c.train_eval_loss) for c in plain.progress.curves)
    assert all(c.train_eval_images is None for c in plain.progress.curves)
    losses = [c.train_eval_loss for c in measured.progress.curves]
    assert all(math.isfinite(x) and x > 0 for x in losses)
    assert losses[-1] < losses[0]  # it learns
    assert {c.train_eval_images for c in measured.progress.curves} == {256}  # all of N = 256


def test_the_training_loss_on_a_fixed_subset_is_the_mean_over_its_images(tmp_path, data):
    """train_loss_images K: the first K training images in eval mode, unaugmented, whatever
    the batch size cuts them into (K = 100 in batches of 64 and 32; 64 exactly a batch)."""
    from harness.train.step import evaluate

    cell = cell_of(tiny_suite(tmp_path), "momentum", "decaying")
    model = build(cell, data.device, Execution()).double()
    f64 = _Float64(data)
    x = torch.cat([xb for xb, _ in data.train_eval_batches(256)]).double()
    y = torch.cat([yb for _, yb in data.train_eval_batches(256)])
    model.eval()
    with torch.no_grad():
        per_image = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
    for images in (100, 64, 1000):
        for batch in (64, 32):
            loss, _ = evaluate(model, f64, batch, "fp32", "train", images=images)
            expected = float(per_image[: min(images, 256)].mean())
            assert loss == pytest.approx(expected, rel=1e-6), (images, batch)  # float32 CE
    job = cell_of(tiny_suite(tmp_path), "momentum", "increasing")
    run = train_cell(
        job,
        data,
        Execution(eval_batch_size=64, eval_train_loss=True, train_loss_images=100),
        tmp_path / "k.pt",
    )
    assert {c.train_eval_images for c in run.progress.curves} == {100}
