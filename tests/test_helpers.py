"""The test helpers themselves: no fixed wall-clock limit, and a slow fixture fails once."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import Once, _default_timeout, run_cli


def test_run_cli_has_no_wall_clock_limit_unless_asked(monkeypatch):
    monkeypatch.delenv("HARNESS_TEST_TIMEOUT", raising=False)
    assert _default_timeout() is None
    monkeypatch.setenv("HARNESS_TEST_TIMEOUT", "0")
    assert _default_timeout() is None
    monkeypatch.setenv("HARNESS_TEST_TIMEOUT", "7200")
    assert _default_timeout() == 7200.0


def test_the_configured_guard_reaches_the_subprocess(monkeypatch):
    monkeypatch.setenv("HARNESS_TEST_TIMEOUT", "0.001")
    with pytest.raises(subprocess.TimeoutExpired):
        run_cli("--help")


def test_a_failed_session_fixture_fails_one_test_and_skips_the_rest():
    def build() -> int:
        raise subprocess.TimeoutExpired(["harness", "run"], 900)

    once = Once("smoke_run", build)
    with pytest.raises(pytest.fail.Exception, match=r"smoke_run.*TimeoutExpired"):
        once.get()
    for _ in range(3):
        with pytest.raises(pytest.skip.Exception, match="failed in an earlier test"):
            once.get()
    assert Once("ok", lambda: 5).get() == 5
