"""The paper's Appendix A estimate (epochs lost per phase) and the equivalence test (TOST)."""

from __future__ import annotations

import json

import pytest

from harness.core.schedule import epochs_lost
from tests.conftest import REPO, run_cli

CIFAR = str(REPO / "suites" / "cifar.yaml")


# ---------------------------------------------------------------------------------------------
# N_lost = B / (N (1 - m)), Appendix A eq. 12-13, on the Sec 5.2 schedules (N = 50000)


def test_epochs_lost_is_the_appendix_formula():
    # "Original training schedule": B = 128, m = 0.9: 128 / (50000 * 0.1)
    assert epochs_lost(128, 50000, 0.9) == pytest.approx(0.0256)
    # Plain SGD and Adam count m = 0: B / N
    assert epochs_lost(5000, 50000, 0.0) == pytest.approx(0.1)


SEC52 = {  # schedule: N_lost per phase, by hand from Sec 5.2's B0, m, factor 5, B_max 5120
    "decaying_lr": [0.0256] * 4,  # B = 128 throughout, m = 0.9
    "increasing_batch": [0.0256, 0.128, 0.64, 3.2],  # 128, 640, 3200, 16000; m = 0.9
    "increased_lr": [0.128, 0.64, 1.024, 1.024],  # 640, 3200, then B_max 5120
    "increased_momentum": [3.2, 5.12, 5.12, 5.12],  # 3200 / (50000 * 0.02), then 5120
}


def test_plan_json_gives_epochs_lost_per_phase_for_sec52():
    result = run_cli("plan", CIFAR, "--json", "--only", "sec5.2/*/*/seed0")
    assert result.returncode == 0, result.stderr
    cells = json.loads(result.stdout)["cells"]
    assert {c["schedule"] for c in cells} == set(SEC52)
    for cell in cells:
        lost = [p["epochs_lost"] for p in cell["phases"]]
        assert lost == pytest.approx(SEC52[cell["schedule"]]), cell["schedule"]


def test_plan_table_prints_the_epochs_lost_column():
    result = run_cli("plan", CIFAR, "--only", "sec5.2/momentum/increased_momentum/seed0")
    assert result.returncode == 0, result.stderr
    assert "epochs lost" in result.stdout
    rows = [line for line in result.stdout.splitlines() if "│" in line]
    assert [row.split("│")[-1].strip() for row in rows] == ["3.2", "5.12", "5.12", "5.12"]
