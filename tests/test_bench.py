"""`harness bench` through the real CLI at tiny sizes, on synthetic data (no CIFAR needed)."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pandas as pd
import pytest
import torch
from torch import nn

from harness.core.factory_spec import FactoryRef
from harness.data.cifar10 import synthetic_cifar10
from harness.train.timing import BenchSetup, CropFlipDataset, count_syncs, reference_model
from tests.conftest import TINY_BN_NET


def test_bench_cli_writes_one_row_per_measurement(cli, tmp_path):
    out = tmp_path / "bench"
    result = cli(
        "bench",
        "--device", "cpu",
        "--model", "small_cnn",
        "--batch-sizes", "32,64",
        "--ghost", "16",
        "--max-micro-batch", "32",
        "--steps", "1",
        "--repeats", "2",
        "--data", "synthetic",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "harness/ref" in result.stdout and "reference" in result.stdout
    (path,) = out.glob("*.parquet")
    rows = pd.read_parquet(path)
    assert len(rows) == 4
    assert sorted(rows["impl"]) == ["harness", "harness", "reference", "reference"]
    assert (rows["mode"] == "eager").all() and rows["cudagraph_skips"].isna().all()
    harness = rows[rows["impl"] == "harness"].set_index("batch_size")
    assert (harness["ratio_to_eager"] == 1.0).all()
    assert list(harness["micro_batch"]) == [32, 32]  # B 64 as two even micro-batches
    assert (harness["syncs_per_step"] == 0).all()
    assert (rows["images_per_s"] > 0).all()
    assert (rows["images_per_s_min"] <= rows["images_per_s"]).all()
    assert (rows["images_per_s"] <= rows["images_per_s_max"]).all()
    for column in ("device_name", "torch_version", "git_commit", "warmup_s", "step_time_s"):
        assert rows[column].notna().all(), column


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="torch.compile on the CPU needs a C++ compiler (c++ or g++ on PATH)",
)
def test_bench_measures_the_captured_step_beside_eager_in_one_process(cli, tmp_path):
    """--modes eager,captured: both harness steps and the plain loop at each batch size, with
    the captured step's ratio to eager. On the CPU inductor captures no CUDA graphs (each
    compiled graph counts as a skip); on a GPU the skips must be 0."""
    out = tmp_path / "bench"
    result = cli(
        "bench", "--device", "cpu", "--model", "small_cnn", "--batch-sizes", "32",
        "--ghost", "16", "--steps", "1", "--repeats", "1", "--data", "synthetic",
        "--modes", "eager,captured", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "harness captured" in result.stdout and "/eager" in result.stdout
    rows = pd.read_parquet(next(out.glob("*.parquet"))).set_index("mode")
    assert list(rows.index) == ["eager", "captured", "eager"]
    captured = rows[rows["impl"] == "harness"].loc["captured"]
    assert captured["compile_mode"] == "reduce-overhead" and captured["compile"]
    assert captured["ratio_to_eager"] > 0 and captured["cudagraph_skips"] >= 0
    assert captured["warmup_s"] > 0


def test_bench_cli_rejects_a_bad_batch_list(cli, tmp_path):
    result = cli("bench", "--batch-sizes", "12,x", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "--batch-sizes" in result.stderr


def test_reference_model_is_the_same_architecture_with_plain_batch_norm():
    setup = BenchSetup(model="small_cnn", model_params={"width": 4}, batch_size=8, ghost_size=4)
    model = reference_model(setup, torch.device("cpu"))
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(type(m) is torch.nn.BatchNorm2d for m in bns)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_reference_augmentation_crops_and_flips_uint8_images():
    arrays = synthetic_cifar10(4, 1, seed=0)
    ds = CropFlipDataset(torch.from_numpy(arrays.train_x), torch.from_numpy(arrays.train_y))
    torch.manual_seed(0)
    x, y = ds[1]
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8 and int(y) == arrays.train_y[1]


def test_count_syncs_counts_host_reads():
    t = torch.arange(4.0)
    assert count_syncs(lambda: float(t.sum())) == 1
    assert count_syncs(lambda: t * 2) == 0


@pytest.mark.parametrize(
    "bad", ["--model=resnet", "--precision=fp16", "--data=imagenet", "--modes=eager,graphs"]
)
def test_bench_cli_names_the_bad_option(cli, tmp_path, bad):
    result = cli("bench", bad, "--out", str(tmp_path))
    assert result.returncode == 2
    assert bad.split("=")[0] in result.stderr


def test_bench_times_your_own_model(cli, tmp_path):
    """--model file.py:build: the user's model with its batch norms made ghost batch norms,
    beside the same model with plain ones in the reference loop."""
    (tmp_path / "net.py").write_text(TINY_BN_NET)
    out = tmp_path / "bench"
    result = cli(
        "bench", "--device", "cpu", "--model", "net.py:build", "--batch-sizes", "32",
        "--ghost", "16", "--steps", "1", "--repeats", "1", "--data", "synthetic",
        "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("*.parquet")
    assert ":" not in path.name
    rows = pd.read_parquet(path)
    assert set(rows["model"]) == {"net.py:build"} and (rows["images_per_s"] > 0).all()
    bad = cli("bench", "--model", "net.py", "--out", str(out), cwd=tmp_path)
    assert bad.returncode == 2 and "pkg.module:build or file.py:build" in bad.stderr


def test_the_reference_loop_gives_your_model_back_its_own_batch_norms(tmp_path):
    """A user's 1d batch norm (and one without affine weights) is plain again in the
    reference loop, not a BatchNorm2d that would refuse its (N, C) input."""
    (tmp_path / "head.py").write_text(
        "from torch import nn\n\n"
        "def build(num_classes):\n"
        "    return nn.Sequential(\n"
        "        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False), nn.AdaptiveAvgPool2d(1),\n"
        "        nn.Flatten(), nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, num_classes))\n"
    )
    factory = FactoryRef.of("head.py:build", {}, str(tmp_path))
    setup = BenchSetup(
        model="factory", model_params={}, batch_size=8, ghost_size=4, factory=factory
    )
    model = reference_model(setup, torch.device("cpu"))
    assert [type(m) for m in model if isinstance(m, nn.modules.batchnorm._BatchNorm)] == [
        nn.BatchNorm2d,
        nn.BatchNorm1d,
    ]
    assert model(torch.randn(8, 3, 8, 8)).shape == (8, 10)


def test_interleave_times_one_repeat_of_each_implementation_per_round() -> None:
    """Round by round (a b a b a b), never back to back (a a a b b b): a load change falls on
    both; each ratio is taken within a round and reported as its min, median and max."""
    from harness.train.timing import Prepared, interleave, ratios

    log: list[str] = []

    def prepared(name: str) -> Prepared:
        return Prepared(name, lambda: log.append(name), 8, 8, 0.0, None, None, steps=2)

    a, b = interleave([prepared("a"), prepared("b")], torch.device("cpu"), repeats=3)
    assert log == ["a", "a", "b", "b"] * 3
    assert len(a.step_times_s) == len(b.step_times_s) == 3
    # The per-round ratios of known times: rounds where b was slower by 2, 4 and 1.
    a = replace(a, step_times_s=[1.0, 1.0, 1.0])
    b = replace(b, step_times_s=[2.0, 4.0, 1.0])
    assert ratios(a, b) == (1.0, 2.0, 4.0)


def test_bench_without_ghost_derives_one_per_batch_size(cli, tmp_path):
    """The default ghost 128 does not divide B = 32 or 48: without --ghost the bench uses the
    largest divisor of both, and says so in each row."""
    out = tmp_path / "bench"
    result = cli(
        "bench", "--device", "cpu", "--model", "small_cnn", "--batch-sizes", "32,48",
        "--steps", "1", "--repeats", "2", "--data", "synthetic", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = pd.read_parquet(next(out.glob("*.parquet")))
    assert dict(zip(rows["batch_size"], rows["ghost_size"], strict=True)) == {32: 32, 48: 16}
    harness = rows[rows["impl"] == "harness"]
    assert rows["interleaved"].all()
    assert (harness["ratio_to_reference_min"] <= harness["ratio_to_reference"]).all()
    assert (harness["ratio_to_reference"] <= harness["ratio_to_reference_max"]).all()
    assert "harness/ref median (min-max)" in result.stdout


def test_bench_with_a_ghost_that_does_not_divide_is_one_line(cli, tmp_path):
    result = cli(
        "bench", "--device", "cpu", "--model", "small_cnn", "--batch-sizes", "32",
        "--ghost", "128", "--data", "synthetic", "--out", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 2
    assert "32 is not a multiple of the ghost size 128; leave --ghost out" in result.stderr
    assert "Traceback" not in result.stderr
