"""The options of `harness run` that travel to another process: one definition, one argv.

A `--workers`/`--devices` worker and a cluster task (`--executor slurm|local`) each run
`harness run` again in a process of their own. Both get their options from `RunOptions.to_argv`,
so an option cannot reach one way of scaling out and silently miss another (it did: the cluster
task dropped --max-micro-batch, --compile and --stop-after). tests/test_run_options.py parses
the argv with the real command and fails on a `harness run` option that is neither here nor
named as one that stays with the parent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class RunOptions:
    """What a worker or task runs: the suite, where its rows go, and how each cell trains."""

    suite: Path
    results: Path
    overrides: tuple[str, ...] = ()
    only: str | None = None
    data: Path | None = None
    max_micro_batch: int | None = None
    compile_model: bool | None = None
    stop_after: float | None = None
    order: str = "suite"
    track: tuple[str, ...] = ()  # --track: each worker streams its cells (the suite's own too)

    def to_argv(self) -> list[str]:
        """`harness run` arguments (after "run"), --device and the scale-out's own left out."""
        args = [str(self.suite), "--results", str(self.results), "--order", self.order]
        for item in self.overrides:
            args += ["--set", item]
        for flag, value in (
            ("--only", self.only),
            ("--data", self.data),
            ("--max-micro-batch", self.max_micro_batch),
            ("--stop-after", self.stop_after),
        ):
            if value is not None:
                args += [flag, str(value)]
        for name in self.track:
            args += ["--track", name]
        if self.compile_model is not None:
            args.append("--compile" if self.compile_model else "--no-compile")
        return args

    def for_cell(self, cell_id: str) -> RunOptions:
        """These options for one cell (a cluster task), with absolute paths: the task may start
        in another folder, on another machine that shares the file system."""
        return replace(
            self,
            suite=self.suite.resolve(),
            results=self.results.resolve(),
            data=None if self.data is None else self.data.resolve(),
            only=cell_id,
        )
