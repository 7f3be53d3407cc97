"""The harness's own commit in the rows, from git or, in a copy without .git, from the commit
that travelled with it (scripts/prepare_gpu.sh records it, scripts/gpu_campaign.sh exports it)."""

from __future__ import annotations

import subprocess

import pytest

from harness.results import provenance
from tests.conftest import REPO


def test_a_checkout_names_its_own_commit_whatever_the_environment(monkeypatch):
    monkeypatch.setenv("HARNESS_GIT_COMMIT", "f" * 40)
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if head.returncode != 0:
        pytest.skip(f"{REPO} is no git checkout (a copy without .git): it has no commit to name")
    found = provenance.code_version.__wrapped__()
    assert found["git_commit"] == head.stdout.strip()
    assert found["git_dirty"] in (True, False)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"HARNESS_GIT_COMMIT": "a" * 40, "HARNESS_GIT_DIRTY": "1"}, ("a" * 40, True)),
        ({"HARNESS_GIT_COMMIT": "b" * 40, "HARNESS_GIT_DIRTY": "0"}, ("b" * 40, False)),
        ({"HARNESS_GIT_COMMIT": "c" * 40}, ("c" * 40, None)),  # dirtiness unknown
        ({}, ("unknown", None)),
    ],
)
def test_a_copy_without_git_names_the_commit_it_was_made_from(monkeypatch, env, expected):
    monkeypatch.setattr(provenance, "_git", lambda *args, **kwargs: None)  # no git here
    for name in ("HARNESS_GIT_COMMIT", "HARNESS_GIT_DIRTY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    found = provenance.code_version.__wrapped__()
    assert (found["git_commit"], found["git_dirty"]) == expected
