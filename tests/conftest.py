"""Shared fixtures: the real CLI as a subprocess, and the CIFAR-10 folder when there is one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SUITES = REPO / "suites"


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """`python -m harness ARGS` in a fresh process, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=cwd or REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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
