"""Every option of `harness run` reaches every way of scaling out (harness.app.runopts).

The argv a `--workers` worker and a cluster task get is parsed here by the real `harness run`
command: each option given to the parent must come back with the same value. A new `harness
run` option fails `test_every_run_option_is_passed_on_or_named_as_the_parents` until it is
either a field of `RunOptions` or named below as one that stays with the parent.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer.main

from harness.app.cluster import CellTask
from harness.app.runopts import RunOptions
from harness.cli import app

# `harness run` options that stay with the parent process: a worker's device is the fan-out's
# to choose, and the scale-out itself is not passed on.
PARENTS = {
    "device", "force", "devices", "workers", "per_device", "memory_fraction", "executor",
    "partition", "time_min", "gpus_per_job", "array_parallelism", "wait",
}  # fmt: skip
# RunOptions field -> the `harness run` parameter that takes it.
PARAMETER = {"compile_model": "compile_model", "overrides": "overrides"}

EVERYTHING = RunOptions(
    suite=Path("/s/suite.yaml"),
    results=Path("/r/results"),
    overrides=("training.weight_decay=0", "experiments.0.seeds=[0,1]"),
    only="*/seed1",
    data=Path("/d/data"),
    max_micro_batch=64,
    compile_model=False,
    stop_after=12.5,
    order="most-updates",
    track=("tensorboard", "mlflow"),
)


def _parsed(argv: list[str]) -> dict[str, object]:
    command = typer.main.get_command(app)
    run = command.commands["run"]  # type: ignore[attr-defined]
    return dict(run.make_context("run", list(argv)).params)


def _expected(options: RunOptions) -> dict[str, object]:
    out: dict[str, object] = {}
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        value = list(value) if field.name in ("overrides", "track") else value
        out[PARAMETER.get(field.name, field.name)] = value
    return out


def _check(options: RunOptions, argv: list[str]) -> None:
    params = _parsed(argv)
    for name, value in _expected(options).items():
        assert params[name] == value, (name, params[name], value)


def test_a_worker_gets_every_option() -> None:
    _check(EVERYTHING, EVERYTHING.to_argv())


def test_a_cluster_task_gets_every_option_for_its_cell() -> None:
    run = EVERYTHING.for_cell("abc123def456")
    argv = CellTask(run, None).command()
    assert argv[1:4] == ["-m", "harness", "run"]
    _check(run, argv[4:])
    assert _parsed(argv[4:])["only"] == "abc123def456"


def test_defaults_pass_as_defaults() -> None:
    bare = RunOptions(Path("s.yaml"), Path("r"))
    params = _parsed(bare.to_argv())
    assert params["compile_model"] is None and params["stop_after"] is None
    assert params["max_micro_batch"] is None and params["overrides"] in (None, [], ())
    assert params["track"] in (None, [], ())


def test_every_run_option_is_passed_on_or_named_as_the_parents() -> None:
    command = typer.main.get_command(app)
    run = command.commands["run"]  # type: ignore[attr-defined]
    names = {p.name for p in run.params}
    carried = {PARAMETER.get(f.name, f.name) for f in dataclasses.fields(RunOptions)}
    assert names - carried - PARENTS == set(), "a `harness run` option no worker or task gets"
    assert carried - names == set()
