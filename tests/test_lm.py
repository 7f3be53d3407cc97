"""Language-model cells: the text and tokens datasets, the GPT, through the real command line.

A tiny suite (a 2-layer GPT, n_embd 32, on the first 100 KB of the KJV corpus in
../shared/data/text/, byte-level) trains through `harness run`, and its rows go through
`harness report` and `harness check`; the readers refuse hostile files with one line, exit 2;
`harness plan` reads only the files' sizes; a float64 step is the same at micro-batches 1, 2
and 4 (no batch norm: micro-batching is exact up to the order of float sums).
"""

from __future__ import annotations

import gzip
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from harness.core.execution import Execution
from harness.core.sequences import text_split, windows
from harness.data.request import LoadRequest
from harness.data.source import StepBatch
from harness.data.text import SequenceData, read_text, read_tokens
from harness.models.registry import build_model
from harness.train.optim import build_optimizer
from harness.train.spec import OptimizerConfig
from harness.train.step import train_on
from tests.conftest import REPO, run_cli

# The corpus beside the clone, as CI's CIFAR-10 pack (.ci/run); HARNESS_TEXT_CORPUS names another.
KJV = Path(
    os.environ.get("HARNESS_TEXT_CORPUS") or REPO.parent / "shared" / "data" / "text" / "kjv.txt.gz"
)

SUITE = """\
name: lm-tiny
dataset: {{name: text, path: {path}, block_size: 32, train_size: 512}}
models:
  gpt: {{name: gpt, n_layer: 2, n_head: 2, n_embd: 32, block_size: 32}}
optimizers:
  adamw: {{kind: adamw, lr: 0.003, weight_decay: 0.1}}
schedule: {{epochs: 2, milestones: [1], factor: 2, batch_size: 32}}
schedules:
  increasing: {{realization: batch}}
training: {{ghost_batch_size: 16}}
execution: {{eval_batch_size: 128, train_loss_images: 256}}
check: {{final_test_loss: 0.05, final_test_acc: 0.05}}
experiments:
  - {{name: one, optimizers: [adamw], schedules: [increasing]}}
"""


def _one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _suite(folder: Path, text: Path, **replace: str) -> Path:
    body = SUITE.format(path=text)
    for old, new in replace.items():
        body = body.replace(old, new)
    path = folder / "lm.yaml"
    path.write_text(body)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not KJV.exists():
        pytest.skip(
            f"the text corpus is absent ({KJV}): set HARNESS_TEXT_CORPUS to a copy of "
            "../shared/data/text/kjv.txt.gz (its README says what it is)"
        )
    path = tmp_path_factory.mktemp("text") / "kjv100k.txt"
    with gzip.open(KJV, "rb") as f:
        path.write_bytes(f.read(100_000))
    return path


@pytest.fixture(scope="module")
def lm_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("lm")
    suite = _suite(folder, corpus)
    results = folder / "results"
    result = run_cli("run", str(suite), "--results", str(results), "--device", "cpu")
    assert result.returncode == 0, result.stdout + result.stderr
    return suite, results


def test_a_tiny_lm_suite_trains_through_the_cli(lm_run: tuple[Path, Path]) -> None:
    _, results = lm_run
    runs = pd.read_parquet(results / "runs")
    curves = pd.read_parquet(results / "curves").sort_values("epoch")
    (row,) = runs.to_dict("records")
    assert row["status"] == "ok"
    # N = 512 sequences: 16 steps of 32, then 8 of 64 (the batch doubled at the milestone).
    assert row["updates"] == row["planned_updates"] == 16 + 8
    # Validation loss in nats per token: finite, below a uniform guess over 256 bytes.
    assert math.isfinite(row["final_test_loss"]) and row["final_test_loss"] < math.log(256)
    assert 0 < row["final_test_acc"] < 1  # next-token accuracy
    assert row["data_source"].startswith("text sha256:")
    assert list(curves["batch_size"]) == [32, 64]
    assert curves["test_loss"].notna().all()


def test_report_and_check_read_the_lm_rows(lm_run: tuple[Path, Path], tmp_path: Path) -> None:
    suite, results = lm_run
    report = run_cli("report", str(results))
    assert report.returncode == 0, report.stderr
    assert "lm-tiny" in report.stdout and "gpt" in report.stdout
    current = tmp_path / "current"
    shutil.copytree(results, current)
    check = run_cli("check", str(suite), "--baseline", str(results), "--results", str(current))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "0 regressions" in check.stdout
    # The gate holds the validation loss (nats per token) to the suite's tolerance.
    baseline = tmp_path / "baseline"
    shutil.copytree(results, baseline)
    (path,) = sorted((baseline / "runs").glob("*.parquet"))
    table = pq.read_table(path)
    row = table.to_pandas()
    row["final_test_loss"] -= 0.2
    pq.write_table(pa.Table.from_pandas(row, schema=table.schema, preserve_index=False), path)
    moved = run_cli("check", str(suite), "--baseline", str(baseline), "--results", str(current))
    assert moved.returncode == 1, moved.stdout + moved.stderr
    assert any(
        "final_test_loss" in line and path.stem in line for line in moved.stdout.splitlines()
    ), moved.stdout


def test_plan_reads_only_the_files_sizes(tmp_path: Path) -> None:
    """N comes from the file's size: `harness plan` plans a file it would refuse to train on
    (not UTF-8), without importing torch."""
    text = tmp_path / "bytes.txt"
    text.write_bytes(b"\xff" * 10_000)  # 9000 training bytes: 281 windows of 32
    suite = _suite(tmp_path, text, **{", train_size: 512": ""})
    code = (
        "import sys\nfrom harness.cli import main\nsys.argv = ['harness', 'plan', sys.argv[1]]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules, 'plan imported torch'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(suite)], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert windows(text_split(10_000, 0.1), 32) == 281
    assert "12 updates in 2 epochs" in result.stdout  # 281 // 32 = 8, then 281 // 64 = 4
    run = run_cli("run", str(suite), "--results", str(tmp_path / "r"), "--device", "cpu")
    _one_line_error(run, "dataset.path", "not UTF-8")


def test_hostile_text_inputs_are_one_line_each(tmp_path: Path, cli) -> None:
    # Without train_size, plan counts N from the file; with it, run's reader finds it missing.
    missing = _suite(tmp_path, tmp_path / "nothing.txt", **{", train_size: 512": ""})
    _one_line_error(cli("plan", str(missing)), "dataset.path", "no such file")
    missing = _suite(tmp_path, tmp_path / "nothing.txt")
    run = cli("run", str(missing), "--results", str(tmp_path / "r"), "--device", "cpu")
    _one_line_error(run, "dataset.path", "no such file")
    short = tmp_path / "short.txt"
    short.write_text("in the beginning")  # 16 bytes: no window of 33
    _one_line_error(
        cli("plan", str(_suite(tmp_path, short, **{", train_size: 512": ""}))),
        "dataset.block_size",
        "shorter than one example",
    )
    aug = _suite(tmp_path, short, **{"block_size: 32,": "block_size: 32, augment: true,"})
    _one_line_error(cli("plan", str(aug)), "dataset.augment", "no augmentation")
    image = _suite(
        tmp_path,
        short,
        **{"name: gpt, n_layer: 2, n_head: 2, n_embd: 32, block_size: 32": "name: small_cnn"},
    )
    _one_line_error(cli("plan", str(image)), "models.gpt", "cannot read")


def _tokens(folder: Path, train: np.ndarray, val: np.ndarray) -> Path:
    folder.mkdir()
    train.astype(np.uint16).tofile(folder / "train.bin")
    val.astype(np.uint16).tofile(folder / "val.bin")
    return folder


def _token_suite(tmp_path: Path, folder: Path, vocab: int) -> Path:
    body = SUITE.format(path=folder).replace(
        "{name: text,", f"{{name: tokens, vocab_size: {vocab},"
    )
    path = tmp_path / "tokens.yaml"
    path.write_text(body.replace(", train_size: 512", ""))
    return path


def test_hostile_token_inputs_are_one_line_each(tmp_path: Path, cli) -> None:
    stream = np.arange(8000) % 50  # 249 windows of 32
    good = _tokens(tmp_path / "good", stream, stream[:500])
    over = _token_suite(tmp_path, good, vocab=40)  # ids up to 49
    run = cli("run", str(over), "--results", str(tmp_path / "r"), "--device", "cpu")
    _one_line_error(run, "dataset.vocab_size", "token id 49", "50 or more")
    lost = _tokens(tmp_path / "noval", stream, stream[:10])
    (lost / "val.bin").unlink()
    _one_line_error(cli("plan", str(_token_suite(tmp_path, lost, 50))), "dataset.path", "val.bin")
    odd = _tokens(tmp_path / "odd", stream, stream[:500])
    (odd / "train.bin").write_bytes(b"\x01" * 16_001)
    run = cli("run", str(_token_suite(tmp_path, odd, 50)), "--results", str(tmp_path / "o"))
    _one_line_error(run, "dataset.path", "whole number of uint16")


def _request(spec: dict[str, object]) -> LoadRequest:
    from harness.config.schema import DatasetSpec

    return LoadRequest(DatasetSpec.model_validate(spec), None, torch.device("cpu"))


def test_windows_are_cut_with_stride_block_and_shifted_targets(tmp_path: Path) -> None:
    stream = np.arange(1000) % 300
    folder = _tokens(tmp_path / "t", stream, stream[:201])
    data, source = read_tokens(
        _request({"name": "tokens", "path": str(folder), "block_size": 10, "vocab_size": 300})
    )
    assert source.startswith("tokens sha256:")
    assert (data.n_train, data.n_test) == ((1000 - 1) // 10, 20)
    x, y = data.train_windows(torch.tensor([0, 3]))
    assert x.dtype == y.dtype == torch.int64
    assert x[1].tolist() == list(range(30, 40)) and y[1].tolist() == list(range(31, 41))
    (tx, ty), *_ = list(data.test_batches(64))
    assert tx.shape == (20, 10) and ty[-1, -1].item() == 200
    text = tmp_path / "t.txt"
    text.write_text("é" * 500)  # 1000 bytes: the split may fall inside a character
    data, _ = read_text(_request({"name": "text", "path": str(text), "block_size": 8}))
    assert (data.n_train, data.n_test) == ((900 - 1) // 8, (100 - 1) // 8)


def test_micro_batches_give_the_same_float64_step() -> None:
    """No batch norm: a step of 4 sequences as micro-batches of 1, 2 or 4 gives one update."""
    torch.manual_seed(0)
    stream = torch.randint(0, 20, (4 * 16 + 1,))
    data = SequenceData(stream, stream, 16, 4, 4)
    params = {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 16}
    config = OptimizerConfig(kind="adamw", lr=0.01, momentum=0.0, weight_decay=0.1)
    after = []
    for micro in (1, 2, 4):
        torch.manual_seed(1)
        model = build_model("gpt", params, num_classes=20, ghost_size=0).double()
        optimizer = build_optimizer(model.parameters(), config, torch.device("cpu"))
        x, y = data.train_windows(torch.arange(4))
        loss = train_on(model, optimizer, data, StepBatch.split(x, y, micro), "fp64")
        after.append((float(loss), [p.detach().clone() for p in model.parameters()]))
    for loss, weights in after[1:]:
        assert loss == pytest.approx(after[0][0], rel=1e-13)
        for a, b in zip(after[0][1], weights, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_execution_defaults_keep_an_lm_step_whole() -> None:
    # Guard for the step above: with the defaults a step is not split (no noise meter).
    from harness.train.step import step_micro_batch

    assert step_micro_batch(4, Execution(), 1) == 4


def test_the_duration_count_feeds_a_gpt_token_ids(tmp_path: Path) -> None:
    """`harness run`'s long-suite line counts FLOPs on the meta device: for a GPT the input
    is a batch of token ids, one window of block_size each."""
    from harness.app.duration import forward_flops
    from harness.config.suite import load_suite

    text = tmp_path / "t.txt"
    text.write_text("a" * 10_000)
    cell = load_suite(_suite(tmp_path, text, **{", train_size: 512": ""})).cells[0]
    flops = forward_flops(cell)
    # The blocks' and the head's matmuls alone: 2 · (12 · 2 · 32² + 256 · 32) per token.
    assert flops is not None and flops >= 32 * 2 * (12 * 2 * 32**2 + 256 * 32)


def test_the_audit_checksums_the_order_inputs_and_targets() -> None:
    """Tier 0 for a sequence source: the same seed gives the same sums, another order other
    sums; token ids reach the model as int64 at every precision."""
    from harness.train.audit import AUDITS, AuditedSequences

    stream = torch.randint(0, 50, (40 * 8 + 1,))
    data = SequenceData(stream, stream, 8, 40, 40)

    def sums(order_seed: int) -> list[int]:
        audited = AUDITS[data.storage](data, torch.float64, None)
        assert isinstance(audited, AuditedSequences)
        for step in audited.epoch_batches(order_seed, 0, 8, 5, 4):
            for x, _ in step.micro_batches:
                assert audited.normalize(x).dtype == torch.int64
        assert (audited.position, audited.batch, audited.micro) == (40, 8, 4)
        return audited.sums.tolist()

    first, again, other = sums(1), sums(1), sums(2)
    assert first == again
    assert first[0] != other[0] and first[1:] != other[1:]


def test_a_paused_lm_cell_resumes_mid_epoch_to_the_unbroken_rows(
    corpus: Path, tmp_path: Path
) -> None:
    """SIGTERM inside an epoch: the run exits 3 with a mid-epoch checkpoint (the order is a
    function of its seed, the audit's counters are saved), and the rerun ends with the rows
    of an unbroken run, float64 on one thread."""
    from tests.test_preempt import ENV, TIMES, Running

    suite = _suite(tmp_path, corpus)
    fp64 = ("--device", "cpu", "--set", "training.precision=fp64")
    unbroken = run_cli("run", str(suite), "--results", str(tmp_path / "a"), *fp64, env=ENV)
    assert unbroken.returncode == 0, unbroken.stderr
    results = tmp_path / "b"
    pauses: list[str] = []
    for delay in (0.5, 2.0, 4.0):
        run = Running(str(suite), "--results", str(results), *fp64)
        assert run.wait_for(r"^train ") is not None, run.finish()[1]
        # Into the epoch before the signal, so that the pause lands between two of its steps;
        # each try waits longer, since a loaded machine may not have started stepping yet.
        time.sleep(delay)
        run.proc.send_signal(signal.SIGTERM)
        code, out = run.finish()
        if code == 0:
            break
        assert code == 3 and "Traceback" not in out, out
        pauses += re.findall(r"pause .*: epoch \d/2 \+ step (\d+) of", out)
        if pauses:
            break
    assert pauses, "no pause landed inside an epoch"
    final = run_cli("run", str(suite), "--results", str(results), *fp64, env=ENV)
    assert final.returncode == 0, final.stderr
    for table in ("runs", "curves"):
        want = pd.read_parquet(tmp_path / "a" / table).drop(columns=TIMES, errors="ignore")
        got = pd.read_parquet(results / table).drop(columns=TIMES, errors="ignore")
        columns = [c for c in want.columns if "loss" in c or "acc" in c or "checksum" in c]
        columns += ["updates"]
        pd.testing.assert_frame_equal(got[columns], want[columns])


def test_the_counted_n_is_in_the_cell_id(tmp_path: Path) -> None:
    """Another file of another length plans another N: another cell; stating train_size as
    the counted N is the same cell."""
    from harness.config.suite import load_suite

    long, short = tmp_path / "long.txt", tmp_path / "short.txt"
    long.write_text("a" * 20_000)
    short.write_text("a" * 10_000)
    suite = _suite(tmp_path, long, **{", train_size: 512": ""})
    counted = load_suite(suite).cells[0]
    other = load_suite(suite, [f"dataset.path={short}"]).cells[0]
    n = windows(text_split(20_000, 0.1), 32)
    stated = load_suite(suite, [f"dataset.train_size={n}"]).cells[0]
    assert counted.plan.train_size == n != other.plan.train_size
    assert counted.cell_id != other.cell_id
    assert counted.cell_id == stated.cell_id
