"""The gate's comparisons on small frames, and tier 0's recording on small tensors.

Tier 0 (`compare_applied`), tier 2 (`compare_seed_means`), the environment warnings, the
audit's checksums and the fingerprint comparison's messages; the mutation tests
(test_gate_mutations.py) show the whole gate failing on real bugs.
"""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import torch

from harness.analysis.gate import compare_seed_means, environment_warnings, merge
from harness.analysis.gate_applied import compare_applied
from harness.app.fingerprint import compare_fingerprint, default_file, read_fingerprint
from harness.data.cifar10 import synthetic_cifar10
from harness.data.device import DeviceData
from harness.errors import UserError
from harness.models.small_cnn import SmallCNN
from harness.results.record import AUDIT_COLUMNS
from harness.train.audit import AuditedData, ghost_size
from tests.conftest import REPO

REGEN = "harness run suites/smoke.yaml --results results/smoke --force"


def _curves(cell_id: str = "c1", epochs: int = 3) -> pd.DataFrame:
    rows = []
    for e in range(1, epochs + 1):
        lr, batch = (0.1, 32) if e < 3 else (0.1, 128)
        rows.append(
            {
                "cell_id": cell_id,
                "epoch": e,
                "lr": lr,
                "batch_size": batch,
                "momentum": 0.9,
                "applied_lr": lr,
                "applied_momentum": 0.9,
                "applied_nesterov": False,
                "applied_weight_decay": 5e-4,
                "applied_batch_size": batch,
                "applied_micro_batch": batch,
                "ghost_size": 32,
                "order_checksum": 1000 + e,
                "augment_checksum": 2000 + e,
                "label_checksum": 3000 + e,
            }
        )
    return pd.DataFrame(rows)


LABELS = {"c1": "exp/momentum/hybrid/seed0"}


def _bad(result):  # type: ignore[no-untyped-def]
    return result.rows[result.rows["verdict"] != "ok"]


def test_identical_curves_pass_tier_0() -> None:
    result = compare_applied(_curves(), _curves(), LABELS, REGEN)
    assert result.ok and result.failures == ()
    assert result.checked == 3 + 6  # three plan pairs, six baseline columns


@pytest.mark.parametrize(
    ("column", "value", "metric"),
    [
        ("applied_lr", 0.05, "applied_lr vs plan"),
        ("applied_momentum", 0.0, "applied_momentum vs plan"),
        ("applied_batch_size", 32, "applied_batch_size vs plan"),
        ("order_checksum", 7, "order_checksum"),
        ("augment_checksum", 7, "augment_checksum"),
        ("label_checksum", 7, "label_checksum"),
        ("ghost_size", 64, "ghost_size"),
        ("applied_weight_decay", 0.0, "applied_weight_decay"),
        ("applied_nesterov", True, "applied_nesterov"),
    ],
)
def test_tier_0_names_cell_epoch_and_column(column: str, value: object, metric: str) -> None:
    current = _curves()
    current[column] = current[column].astype(object)
    current.loc[current["epoch"] == 3, column] = value
    result = compare_applied(_curves(), current, LABELS, REGEN)
    assert not result.ok
    bad = _bad(result)
    assert len(bad) == 1
    row = bad.iloc[0]
    assert (row["cell_id"], row["label"], row["metric"], row["delta"]) == (
        "c1",
        LABELS["c1"],
        metric,
        "epoch 3",
    )
    assert "epoch 3" in result.table() and metric in result.table()


def test_disagreeing_param_groups_nan_fails_against_the_plan() -> None:
    current = _curves()
    current.loc[0, "applied_lr"] = math.nan
    bad = _bad(compare_applied(_curves(), current, LABELS, REGEN))
    assert bad.iloc[0]["metric"] == "applied_lr vs plan" and bad.iloc[0]["delta"] == "epoch 1"


def test_a_float32_lr_reads_back_as_the_plan() -> None:
    current = _curves()
    current["applied_lr"] = [float(torch.tensor(v, dtype=torch.float32)) for v in current["lr"]]
    assert compare_applied(_curves(), current, LABELS, REGEN).ok


@pytest.mark.parametrize("how", ["columns absent", "columns null"])
def test_baseline_without_tier_0_columns_is_one_failure_line(how: str) -> None:
    old = _curves()
    if how == "columns absent":
        old = old.drop(columns=list(AUDIT_COLUMNS))
    else:
        old[list(AUDIT_COLUMNS)] = None
    result = compare_applied(old, _curves(), LABELS, REGEN)
    assert not result.ok
    assert result.failures == (f"baseline lacks tier-0 columns; regenerate it with `{REGEN}`",)
    assert result.table().startswith("FAILED: baseline lacks tier-0 columns")
    assert "1 failed" in result.summary()


def _runs(values: dict[tuple[str, int], tuple[float, float]], device: str = "cpu") -> pd.DataFrame:
    rows = []
    for (schedule, seed), (acc, loss) in values.items():
        rows.append(
            {
                "cell_id": f"{schedule}{seed}",
                "experiment": "eq",
                "optimizer": "momentum",
                "schedule": schedule,
                "seed": seed,
                "final_test_acc": acc,
                "final_train_loss": loss,
                "finished_at": pd.Timestamp("2025-01-01", tz="UTC"),
                "device": "cpu",
                "device_name": device,
                "torch_version": "2.13.0+cpu",
            }
        )
    return pd.DataFrame(rows)


STD = {"hybrid": {"final_test_acc": 0.02, "final_train_loss": 0.034}}


def test_tier_2_compares_means_within_k_std() -> None:
    base = _runs({("hybrid", s): (0.5 + 0.01 * s, 1.0) for s in range(3)})
    near = _runs({("hybrid", s): (0.45 + 0.01 * s, 1.05) for s in range(3)})  # -0.05, +0.05
    result = compare_seed_means(base, near, k=3.0, std=STD)
    assert result.ok, result.table()
    assert sorted(result.rows["tolerance"]) == pytest.approx([0.06, 0.102])
    far = _runs({("hybrid", s): (0.42 + 0.01 * s, 1.0) for s in range(3)})  # -0.08 > 0.06
    bad = _bad(compare_seed_means(base, far, k=3.0, std=STD))
    assert list(bad["metric"]) == ["final_test_acc"]
    assert bad.iloc[0]["label"] == "eq/momentum/hybrid/seeds0,1,2"
    assert bad.iloc[0]["delta"] == pytest.approx(-0.08)


def test_tier_2_missing_seeds_or_std_is_a_failure_line() -> None:
    base = _runs({("hybrid", 0): (0.5, 1.0)})
    current = _runs({("hybrid", s): (0.5, 1.0) for s in range(3)})
    result = compare_seed_means(base, current, k=3.0, std=STD)
    assert not result.ok and "baseline lacks seeds" in result.failures[0]
    no_std = compare_seed_means(current, current, k=3.0, std={})
    assert not no_std.ok and "no measured seed std for schedule hybrid" in no_std.failures[0]


def test_tier_2_never_takes_another_recipes_seeds() -> None:
    base = _runs({("hybrid", s): (0.5, 1.0) for s in range(3)})
    base["config"] = '{"optimizer": {"lr": 0.05}}'
    current = base.assign(
        cell_id=[f"new{s}" for s in range(3)], config='{"optimizer": {"lr": 0.06}}'
    )
    result = compare_seed_means(base, current, k=3.0, std=STD)  # equal means, other recipe
    assert not result.ok and result.rows.empty
    (line,) = result.failures
    assert "baseline lacks seeds of eq/momentum/hybrid/seeds0,1,2 of this recipe" in line
    assert "optimizer.lr 0.05 vs 0.06" in line


def test_merge_keeps_every_tier() -> None:
    tier0 = compare_applied(_curves(), _curves(), LABELS, REGEN)
    base = _runs({("hybrid", 0): (0.5, 1.0)})
    tier2 = compare_seed_means(base, _runs({("hybrid", s): (0.5, 1.0) for s in range(2)}), 3, STD)
    merged = merge([tier0, tier2])
    assert not merged.ok and merged.checked == tier0.checked
    assert merged.failures == tier2.failures


def test_environment_change_is_a_warning_line() -> None:
    base = _runs({("hybrid", 0): (0.5, 1.0)}, device="AMD EPYC (2 threads)")
    same = environment_warnings(base, base)
    assert same == []
    other = _runs({("hybrid", 0): (0.5, 1.0)}, device="AMD EPYC (1 threads)")
    (line,) = environment_warnings(base, other)
    assert line.startswith("warning: device_name differs")
    assert "AMD EPYC (2 threads)" in line and "AMD EPYC (1 threads)" in line


# --- tier 0's recording -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def data() -> DeviceData:
    return DeviceData.from_arrays(synthetic_cifar10(64, 16, seed=0), torch.device("cpu"))


def _sums(data: DeviceData, batches: list[torch.Tensor], seed: int = 0) -> list[int]:
    audited = AuditedData(data, torch.float32, None)
    gen = torch.Generator().manual_seed(seed)
    for indices in batches:
        x, _ = audited.train_images(indices, gen)
        for part in x.split(8):
            audited.normalize(part)
    assert audited.batch == max(len(b) for b in batches) and audited.micro == 8
    return audited.sums.tolist()


def test_checksums_are_deterministic_and_see_order_augmentation_and_labels(
    data: DeviceData,
) -> None:
    order = torch.randperm(64, generator=torch.Generator().manual_seed(1))
    steps = list(order.split(16))
    first = _sums(data, steps)
    assert _sums(data, steps) == first  # the same draws, the same sums
    swapped = _sums(data, [steps[1], steps[0], *steps[2:]])
    assert swapped[0] != first[0] and swapped[2] != first[2]  # order-dependent
    assert _sums(data, steps, seed=1)[1] != first[1]  # other crops and flips
    assert _sums(data, steps, seed=1)[0] == first[0]


def test_fp64_audited_data_feeds_float64(data: DeviceData) -> None:
    audited = AuditedData(data, torch.float64, None)
    x, _ = audited.train_batch(torch.arange(4), torch.Generator().manual_seed(0))
    assert x.dtype == torch.float64
    assert next(audited.test_batches(8))[0].dtype == torch.float64


def test_ghost_size_is_read_from_the_modules() -> None:
    model = SmallCNN(width=2, ghost_size=16)
    assert ghost_size(model) == 16
    model.features[1].ghost_size = 8  # type: ignore[union-attr]
    assert ghost_size(model) == -1
    assert ghost_size(torch.nn.Sequential(torch.nn.BatchNorm2d(3))) == 0


# --- the fingerprint's messages ---------------------------------------------------------------


def test_fingerprint_comparison_names_tier_series_and_step() -> None:
    doc = read_fingerprint(REPO / default_file("synthetic"))
    assert compare_fingerprint(doc, copy.deepcopy(doc)).ok
    moved = copy.deepcopy(doc)
    moved["steps"]["update_norm"][4] *= 1 + 1e-8
    (line,) = compare_fingerprint(doc, moved).failures
    assert line.startswith("tier 1: update_norm at step 5:") and "> 1e-09" in line
    within = copy.deepcopy(doc)
    within["steps"]["loss"][0] *= 1 + 1e-12
    assert compare_fingerprint(doc, within).ok
    other = dict(doc, cell_id="feedface")
    assert "regenerate" in compare_fingerprint(doc, other).failures[0]


def test_unreadable_fingerprint_file_is_a_user_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserError, match="no fingerprint file"):
        read_fingerprint(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="not a fingerprint file"):
        read_fingerprint(tmp_path / "bad.json")


# --- the commands, as processes, on the tiny fingerprint cell with synthetic data -------------

TINY = [
    str(REPO / "suites" / "fingerprint.yaml"),
    "--set",
    "dataset.name=synthetic",
    "--set",
    "training.precision=fp32",
]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # small kernels: one thread is the fast one on 2 cores


def test_check_command_runs_tier_0_and_reports_an_old_baseline(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    from tests.conftest import run_cli

    base = tmp_path / "base"
    made = run_cli("run", *TINY, "--results", str(base), "--device", "cpu", env=ONE_THREAD)
    assert made.returncode == 0, made.stderr
    cur = ["--results", str(tmp_path / "cur"), "--device", "cpu"]  # trained once, then reused
    same = run_cli("check", *TINY, "--baseline", str(base), *cur, env=ONE_THREAD)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "0 regressions" in same.stdout and "FAILED" not in same.stdout

    (curve_file,) = (base / "curves").glob("*.parquet")
    table = pq.read_table(curve_file)
    pq.write_table(table.drop_columns(list(AUDIT_COLUMNS)), curve_file)
    old = run_cli("check", *TINY, "--baseline", str(base), *cur, env=ONE_THREAD)
    assert old.returncode == 1, old.stdout + old.stderr
    assert "FAILED: baseline lacks tier-0 columns; regenerate it with `harness run" in old.stdout
    assert "Traceback" not in old.stderr

    seeds = run_cli(
        "check", *TINY, "--baseline", str(base), *cur, "--seeds", "0,1",
        "--set", "check.seeds={k: 3, std: {hybrid: {final_test_acc: 0.1}}}",
        env=ONE_THREAD,
    )  # fmt: skip
    assert seeds.returncode == 1, seeds.stdout + seeds.stderr
    assert "tier 2: the baseline lacks seeds of fingerprint/momentum/hybrid/seeds0,1" in (
        seeds.stdout
    )
    no_rule = run_cli("check", *TINY, "--baseline", str(base), "--seeds", "0,1")
    assert no_rule.returncode == 2 and "check.seeds" in no_rule.stderr
