"""The pre-registered evidence study (suites/evidence-cpu.yaml, docs/paper.md): the suite keeps
the paper's proportions, its stated Appendix A check holds, and its claims name real cells."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config.suite import load_suite
from harness.core.schedule import epochs_lost
from tests.conftest import SUITES, run_cli

SUITE = SUITES / "evidence-cpu.yaml"
SEC_5_1 = ("decaying_lr", "increasing_batch", "hybrid")
EXEMPT = ("increased_momentum", "increased_momentum_extra", "n_over_10")  # the header says why


def test_paper_proportions_and_the_appendix_a_check() -> None:
    suite = load_suite(SUITE)
    base = suite.spec.schedule
    assert base.factor == 5
    assert [m / base.epochs for m in base.milestones] == [0.3, 0.6, 0.8]
    assert suite.spec.dataset.train_size == 50_000 and suite.spec.dataset.test_size == 10_000
    for cell in suite.cells:
        if cell.schedule_name in EXEMPT:
            continue
        n = cell.dataset.train_size
        for phase in cell.plan.phases:
            lost = epochs_lost(phase.batch_size, n, phase.momentum)
            assert lost <= 0.10 * phase.epochs + 1e-12, (cell.label, phase)
    # The primary arm's last phase is the check's tightest: 0.2 of its 2 epochs.
    (cell,) = [c for c in suite.cells if c.label.endswith("/momentum/increasing_batch/seed0")]
    last = cell.plan.phases[-1]
    assert (last.batch_size, last.epochs) == (1000, 2)
    # The starting noise scale is the paper's: g = lr/(1-m) (N/B - 1), 389.6 at B = 128.
    (ref,) = [c for c in suite.cells if c.label.endswith("/momentum/decaying_lr/seed0")]
    paper_g = 0.1 / (1 - 0.9) * (50000 / 128 - 1)
    assert ref.plan.phases[0].noise_scale == pytest.approx(paper_g, rel=0.005)
    assert ref.plan.updates == 62_500 and cell.plan.updates == 23_100


def test_the_preregistration_names_every_claims_cells() -> None:
    pre = load_suite(SUITE).spec.report.preregistration
    assert pre is not None
    stated = (pre.metric, pre.pairing, pre.alpha, pre.margin)
    assert stated == ("final_test_acc", "seed", 0.05, 0.01)
    assert pre.seeds == tuple(range(10))
    assert [c.id for c in pre.claims if c.primary] == ["sec5.1-momentum-batch"]
    assert set(pre.order) == {c.id for c in pre.claims}


def test_a_claim_naming_a_schedule_no_experiment_runs_is_refused(tmp_path: Path) -> None:
    text = SUITE.read_text().replace("schedule: first_drop_only", "schedule: hybrid", 1)
    text = text.replace(
        "optimizer: sgd\n        schedule: hybrid", "optimizer: sgd\n        schedule: nope"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    proc = run_cli("plan", str(bad))
    assert proc.returncode == 2
    assert "unknown schedule 'nope'" in proc.stderr and proc.stderr.count("\n") == 1


def test_the_tempered_comparison_shares_the_evidence_studys_reference_cells() -> None:
    """suites/tempered-cpu.yaml (issue 42) trains only its tempered arm: its decaying-lr and
    increasing-batch cells are the evidence study's, id for id, so an edit of either suite's
    recipe that would part them fails here, not silently in the claims table."""
    evidence = {c.cell_id: c for c in load_suite(SUITE).cells}
    tempered = load_suite(SUITES / "tempered-cpu.yaml")
    arms = {"decaying_lr", "increasing_batch"}
    shared = [c for c in tempered.cells if c.schedule_name in arms]
    assert len(shared) == 20 and all(c.cell_id in evidence for c in shared)
    own = [c for c in tempered.cells if c.schedule_name == "tempered"]
    assert len(own) == 10 and not any(c.cell_id in evidence for c in own)
    # The arm starts at the other arms' noise scale (B0 = 16 at twice the lr), up to the
    # (1 - B/N) factor of g = lr (N/B - 1) / (1 - m): 390.50 against 390.56.
    first = own[0].plan.phases[0]
    ref = evidence[shared[0].cell_id].plan.phases[0]
    assert first.noise_scale == pytest.approx(ref.noise_scale, rel=2e-4)
