"""Tier 1 of the regression gate: a float64 numeric fingerprint of the training recipe.

One tiny cell (suites/fingerprint.yaml: 256 training and 128 test images, 16 steps that
cross a batch drop and an lr drop, a 64-image batch stepped as micro-batches of ghost
batches) is trained in float64 on the CPU, and everything it did is compared with a committed
JSON file (results/fingerprint/<dataset>.json):

* per step, to a tight relative tolerance: the mean loss, the parameter norm after the step
  and the norm of the step's change (harness.train.probe.StepProbe);
* per evaluation, the float64 test loss, same tolerance; per epoch the test accuracy, exactly;
* per epoch, exactly: tier 0's applied values and checksums (harness.train.audit), checked
  both against the plan and against the file (harness.analysis.gate_applied.compare_applied).

In float64 every change of the recipe that moves a number moves it by far more than the
run-to-run and thread-count noise (measured in docs/gate.md), so the tolerance can be tight
and the whole check takes seconds. An intended change of the recipe regenerates the file
(`harness fingerprint --update --dataset all`) and the diff shows in review.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from harness.analysis.gate_applied import compare_applied
from harness.app import jobs
from harness.app.data_loading import load_data
from harness.config.suite import load_suite
from harness.errors import UserError
from harness.fsio import atomic_path
from harness.results.provenance import environment
from harness.results.record import AUDIT_COLUMNS
from harness.train.loop import train_cell
from harness.train.probe import StepProbe

FORMAT = 1
SUITE = Path("suites/fingerprint.yaml")
FOLDER = Path("results/fingerprint")
# The dataset kinds with a committed fingerprint (results/fingerprint/<kind>.json): which kinds
# the gate pins, not which exist (harness.core.datasets; a test keeps these registered).
FINGERPRINTED = ("cifar10", "synthetic")
UPDATE = "harness fingerprint --update --dataset all"
# Relative tolerance of every float64 series. Measured (docs/gate.md): repeated runs agree
# bit for bit, 1 vs 2 threads differ by at most 3.1e-16 (both datasets). 1e-9 leaves six
# orders of magnitude for other CPUs and torch builds, and is still orders of magnitude
# below what any of the mutation tests' one-line recipe bugs moves.
REL = 1e-9
SERIES = ("loss", "param_norm", "update_norm", "test_loss")
# Per-epoch columns compared exactly besides the tier-0 ones: the plan (tier 0) and the
# test accuracy (tier 1: a number the run computed).
PLANNED = ("epoch", "updates", "lr", "batch_size", "momentum")
EXACT = (*PLANNED, "test_acc")


def default_file(dataset: str) -> Path:
    return FOLDER / f"{dataset}.json"


def run_fingerprint(
    dataset: str, suite: Path = SUITE, data_root: Path | None = None, threads: int = 1
) -> dict[str, Any]:
    """Train the fingerprint cell on the CPU and return its fingerprint document.

    One thread by default: the numbers agree with any thread count to the tolerance, and a
    single thread is several times faster than two on a busy shared machine (the threads of
    float64 kernels this small mostly wait for each other).
    """
    if dataset not in FINGERPRINTED:
        raise UserError(f"--dataset {dataset}: choose one of {', '.join(FINGERPRINTED)} or all")
    loaded = load_suite(suite, overrides=[f"dataset.name={dataset}"])
    if len(loaded.cells) != 1:
        raise UserError(f"{suite}: a fingerprint suite has exactly one cell")
    cell = loaded.cells[0]
    device = torch.device("cpu")
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data, source = load_data(loaded, data_root, device, channels_last=False)
        job = jobs.train_job(cell)
        execution = jobs.execution(loaded.spec.execution, loaded.cells)
        probe = StepProbe()
        with tempfile.TemporaryDirectory(prefix="harness-fingerprint-") as scratch:
            result = train_cell(job, data, execution, Path(scratch) / "c.pt", probe=probe)
        probe.detach()
        env = environment(device)
    finally:
        torch.set_num_threads(saved_threads)
    if result.progress.status != "ok":
        raise UserError(f"fingerprint cell ended {result.progress.status}: {result.progress.error}")
    keep = (*EXACT, *AUDIT_COLUMNS)
    return {
        "format": FORMAT,
        "about": "harness tier-1 fingerprint (docs/gate.md); regenerate with: " + UPDATE,
        "suite": str(suite),
        "dataset": dataset,
        "data_source": source,
        "cell_id": cell.cell_id,
        "label": cell.label,
        "made_with": {k: env[k] for k in ("device_name", "torch_version", "git_commit")},
        "tolerance": {"rel": REL},
        "steps": {k: v for k, v in probe.result().items() if k != "test_loss"},
        "test_loss": probe.result()["test_loss"],
        "epochs": [{k: row.columns()[k] for k in keep} for row in result.progress.curves],
    }


@dataclass(frozen=True)
class Verdict:
    """The outcome of comparing a fresh fingerprint with a committed one."""

    failures: tuple[str, ...]  # one line each, "tier 0: ..." or "tier 1: ..."

    @property
    def ok(self) -> bool:
        return not self.failures


def compare_fingerprint(expected: dict[str, Any], actual: dict[str, Any]) -> Verdict:
    """Every difference between two fingerprint documents, one line each, tier 0 first."""
    failures: list[str] = []
    for key in ("format", "dataset", "cell_id"):
        if expected.get(key) != actual.get(key):
            failures.append(
                f"setup: {key} is {actual.get(key)!r}, the fingerprint's {expected.get(key)!r}; "
                f"if the change is intended, regenerate with `{UPDATE}`"
            )
    if failures:
        return Verdict(tuple(failures))
    label = str(actual.get("label", actual["cell_id"]))
    frames = [_curves(doc) for doc in (expected, actual)]
    tier0 = compare_applied(frames[0], frames[1], {actual["cell_id"]: label}, UPDATE)
    failures += [f"tier 0: {line}" for line in tier0.failures]
    for r in tier0.rows[tier0.rows["verdict"] != "ok"].to_dict("records"):
        failures.append(
            f"tier 0: {r['metric']} at {r['delta']}: {_whole(r['current'])}, "
            f"expected {_whole(r['baseline'])}"
        )
    exp_epochs, act_epochs = expected["epochs"], actual["epochs"]
    if len(exp_epochs) != len(act_epochs):
        failures.append(f"tier 0: {len(act_epochs)} epochs, the fingerprint has {len(exp_epochs)}")
    for e, a in zip(exp_epochs, act_epochs, strict=False):
        for column in EXACT:
            if e.get(column) != a.get(column):
                tier = 0 if column in PLANNED else 1
                failures.append(
                    f"tier {tier}: epoch {e.get('epoch')} {column}: {a.get(column)}, "
                    f"expected {e.get(column)}"
                )
    rel = float(expected.get("tolerance", {}).get("rel", REL))
    for name in SERIES:
        want = expected["test_loss"] if name == "test_loss" else expected["steps"][name]
        got = actual["test_loss"] if name == "test_loss" else actual["steps"][name]
        line = _first_difference(name, want, got, rel)
        if line:
            failures.append(f"tier 1: {line}")
    return Verdict(tuple(failures))


def _whole(v: object) -> object:
    """A whole number that a frame turned into a float (checksums, batch sizes) as an int."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _curves(doc: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame(doc["epochs"])
    frame["cell_id"] = doc["cell_id"]
    for column in AUDIT_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    return frame


def _first_difference(name: str, want: list[float], got: list[float], rel: float) -> str | None:
    where = "step" if name != "test_loss" else "evaluation"
    if len(want) != len(got):
        return f"{name}: {len(got)} values, the fingerprint has {len(want)}"
    for i, (w, g) in enumerate(zip(want, got, strict=True)):
        if math.isnan(w) and math.isnan(g):
            continue
        diff = abs(g - w) / max(abs(w), 1e-300)
        if not diff <= rel:  # NaN fails
            return (
                f"{name} at {where} {i + 1}: {g!r}, expected {w!r} "
                f"(relative difference {diff:.3g} > {rel:g})"
            )
    return None


def read_fingerprint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path}: no fingerprint file; make it with `{UPDATE}`")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{path}: not a fingerprint file ({exc}); regenerate with `{UPDATE}`"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UserError(f"{path}: not a format-{FORMAT} fingerprint; regenerate with `{UPDATE}`")
    return doc


def write_fingerprint(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def fingerprint_command(
    update: bool, dataset: str, file: Path | None, data: Path | None, threads: int
) -> bool:
    """`harness fingerprint`: check (or with `update` rewrite) each file; True when all match."""
    names = list(FINGERPRINTED) if dataset == "all" else [dataset]
    if file is not None and len(names) > 1:
        raise UserError("--file: names one file; pass --dataset cifar10 or synthetic with it")
    failed = False
    for name in names:
        path = file or default_file(name)
        expected = None if update else read_fingerprint(path)
        actual = run_fingerprint(name, data_root=data, threads=threads)
        if expected is None:
            write_fingerprint(path, actual)
            print(f"wrote {path}; commit it with the change that moved it")
            continue
        verdict = compare_fingerprint(expected, actual)
        for line in verdict.failures:
            print(f"FAILED: {path}: {line}")
        steps = len(actual["steps"]["loss"])
        print(f"{path}: {'ok' if verdict.ok else 'MOVED'} ({steps} steps compared)")
        failed |= not verdict.ok
    if failed:
        print(f"if the change is intended, regenerate with `{UPDATE}` and commit the files")
    return not failed
