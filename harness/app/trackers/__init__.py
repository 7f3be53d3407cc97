"""Trackers by name: where `harness run --track NAME` streams each cell while it trains.

The harness's record is its Parquet rows; a tracker is a view of them in the dashboard a
researcher already watches (TensorBoard, Weights & Biases, MLflow). One tracker run per cell,
named by its label and id, under the suite's name as project or experiment, with the resolved
configuration as hyper-parameters, one step per epoch (step = epoch, so a resumed cell
continues its run), and the run row as the summary.

Each tracker is an optional extra, imported only when a run asks for it: `require` says in one
line which extra to install before anything trains. `TRACKERS` has one entry per
`core.kinds.TRACKERS` (tests/test_tracking.py checks); an entry's module has `open_run`.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import numbers
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.errors import UserError


@dataclass(frozen=True)
class TrackedRun:
    """One cell as a tracker names and files it."""

    project: str  # the W&B project, the MLflow experiment: the suite's name by default
    cell_id: str
    label: str
    config: Mapping[str, Any]  # the resolved configuration (what the cell id hashes)
    logs: Path  # where local stores go: <results>/logs (tb/, wandb/, mlruns/)
    inside: Path  # the results folder: nothing in it is written through a link (fsio)
    resumed: bool  # the cell resumes from a checkpoint: continue its run where one can

    @property
    def name(self) -> str:
        return f"{self.label} {self.cell_id}"


class Tracker(Protocol):
    """One cell's run in one tracker."""

    def log(self, step: int, values: Mapping[str, float]) -> None:
        """One epoch's curve values at step = the epoch (1 .. epochs)."""

    def finish(self, summary: Mapping[str, Any] | None) -> None:
        """The run row as summary, and the run closed; None: the cell paused (resumable)."""


@dataclass(frozen=True)
class TrackerKind:
    package: str  # what `import` needs: its absence is the one-line error
    extra: str  # pip install 'batchsize-harness[EXTRA]'
    module: str  # ours, imported only when asked for; its `open_run(TrackedRun) -> Tracker`
    where: str  # where it writes by default (the CLI's help, the docs)


TRACKERS: dict[str, TrackerKind] = {  # one per core.kinds.TRACKERS (a test checks)
    "tensorboard": TrackerKind(
        package="tensorboard",
        extra="tensorboard",
        module="harness.app.trackers.tensorboard",
        where="event files under RESULTS/logs/tb/",
    ),
    "wandb": TrackerKind(
        package="wandb",
        extra="wandb",
        module="harness.app.trackers.wandb",
        where="offline runs under RESULTS/logs/wandb/ ($WANDB_MODE, $WANDB_DIR override)",
    ),
    "mlflow": TrackerKind(
        package="mlflow",
        extra="mlflow",
        module="harness.app.trackers.mlflow",
        where="a local store in RESULTS/logs/mlruns/ ($MLFLOW_TRACKING_URI overrides)",
    ),
}


def require(names: Iterable[str], flag: str = "--track") -> tuple[str, ...]:
    """`names` checked before anything trains: each a known tracker whose package is installed
    (found without importing it); else one line naming the extra to install."""
    checked: list[str] = []
    for name in names:
        kind = TRACKERS.get(name)
        if kind is None:
            raise UserError(f"{flag} {name}: unknown tracker; use one of {', '.join(TRACKERS)}")
        if importlib.util.find_spec(kind.package) is None:
            raise UserError(
                f"{flag} {name}: the {kind.package} package is not installed; "
                f"pip install 'batchsize-harness[{kind.extra}]'"
            )
        if name not in checked:
            checked.append(name)
    return tuple(checked)


def open_tracker(name: str, run: TrackedRun) -> Tracker:
    """A run of `run` in the tracker `name` (its package imported now)."""
    opened: Tracker = importlib.import_module(TRACKERS[name].module).open_run(run)
    return opened


# Curve columns that are no curve: identifiers, the step itself, and the audit's checksums
# (identities, whose 63-bit values a float32 scalar would not even hold).
_NOT_CURVES = frozenset(
    {"schema_version", "suite", "cell_id", "epoch", "order_checksum", "augment_checksum",
     "label_checksum"}
)  # fmt: skip


def curve_values(row: Mapping[str, Any]) -> dict[str, float]:
    """A `curves` row's numbers as a tracker logs them: every numeric column with a finite
    value (lr, batch size, momentum, noise scale, losses, accuracy, images/s, B_simple ...);
    a value the epoch did not measure (NaN, null) is left out, not logged as a gap."""
    return {
        key: float(value)
        for key, value in row.items()
        if key not in _NOT_CURVES and _number(value) and math.isfinite(float(value))
    }


# Run columns that say where and when, not how the cell did: left out of the summary.
_NOT_SUMMARY = frozenset({"schema_version", "config", "plan", "started_at", "finished_at"})


def run_summary(row: Mapping[str, Any]) -> dict[str, Any]:
    """A `runs` row as a tracker's summary: its finite numbers, and its words (status, error,
    names, versions) as text; nulls and NaN left out."""
    summary: dict[str, Any] = {}
    for key, value in row.items():
        if key in _NOT_SUMMARY or value is None:
            continue
        if _number(value):
            if math.isfinite(float(value)):
                summary[key] = float(value) if isinstance(value, float) else int(value)
        elif isinstance(value, str):
            summary[key] = value
    return summary


def _number(value: Any) -> bool:
    # numpy scalars too (a row read back from Parquet; not its arrays, the list columns); a
    # bool is a flag, not a curve.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """The nested configuration as dotted keys and text values (MLflow's parameters)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_config(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def safe_name(text: str, limit: int = 120) -> str:
    """`text` as one folder name or tracker name: letters, digits and ` ._=+,-` kept, every
    other character (a path separator, a control) an underscore."""
    return re.sub(r"[^A-Za-z0-9 ._=+,-]", "_", text).strip(" .")[:limit] or "_"
