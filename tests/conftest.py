"""Shared fixtures: the real CLI as a subprocess, and the CIFAR-10 folder when there is one."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

import pytest

REPO = Path(__file__).resolve().parent.parent
SUITES = REPO / "suites"


def _default_timeout() -> float | None:
    """A guard against hangs only, never a speed limit: none unless HARNESS_TEST_TIMEOUT is set.

    A loaded CI machine makes the tests slower; a fixed wall-clock limit made them red there.
    """
    value = os.environ.get("HARNESS_TEST_TIMEOUT", "").strip()
    if not value or value in ("0", "none"):
        return None
    return float(value)


# A user's own model file (`factory: net.py:build`): one conv, a batch norm, a linear head.
TINY_BN_NET = (
    "from torch import nn\n\n"
    "def build(num_classes):\n"
    "    return nn.Sequential(\n"
    "        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),\n"
    "        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))\n"
)


def run_cli(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m harness ARGS` in a fresh process, as a user would run it.

    `timeout` defaults to HARNESS_TEST_TIMEOUT seconds (unset: no limit).
    """
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=cwd or REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout if timeout is not None else _default_timeout(),
    )


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`-n auto`, as CI runs) each worker takes its share of the cores.

    Every training subprocess would otherwise take all of them, as torch does by default: two
    workers at two threads each on two cores oversubscribe them, and OpenMP's spinning threads
    then burn several times the CPU. A variable the caller set is kept; a serial run is as
    before.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, _cpu_count() // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by every CLI subprocess
        import torch  # here, not at the top: collection in a serial run stays light

        torch.set_num_threads(threads)  # the tests that train in-process


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


T = TypeVar("T")


class Once(Generic[T]):
    """A slow session fixture's outcome, reported once.

    pytest re-raises a session fixture's cached exception as an error in every test that uses
    it (one slow `harness run` became 12 errors). A session fixture returns `Once(build)`
    instead and a function fixture calls `.get()`: the first test fails with the cause, every
    later one is skipped naming it.
    """

    def __init__(self, name: str, build: Callable[[], T]) -> None:
        self.name = name
        self.reported = False
        self.error: str | None = None
        try:
            self.value = build()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            if isinstance(exc, pytest.skip.Exception):
                raise
            text = str(exc).strip() or type(exc).__name__
            self.error = f"{type(exc).__name__}: {text}"

    def get(self) -> T:
        if self.error is None:
            return self.value
        if self.reported:
            first = self.error.splitlines()[0][:200]
            pytest.skip(f"session fixture {self.name!r} failed in an earlier test: {first}")
        self.reported = True
        pytest.fail(f"session fixture {self.name!r} failed: {self.error}", pytrace=False)


@pytest.fixture
def cli():
    return run_cli


def _data_root() -> Path | None:
    value = os.environ.get("HARNESS_DATA")
    if value and (Path(value) / "cifar-10-batches-py" / "data_batch_1").exists():
        return Path(value)
    return None


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    root = _data_root()
    if root is None:
        pytest.skip(
            "needs real CIFAR-10: set HARNESS_DATA to a folder holding cifar-10-batches-py "
            "(.ci/run unpacks ../shared/data/cifar10 there)"
        )
    return root
