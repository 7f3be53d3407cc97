"""Suites and their cells: a validated suite file expanded into named, planned training runs.

A suite names a dataset, models, optimizers (each a recipe: kind, lr, momentum), a base
schedule, named schedules (each a realization of the base, possibly with a new lr or momentum
whose batch size follows from the scaling rules), and experiments: grids whose axes expand into
cells by product. Every cell gets a stable `cell_id`, a hash of what it will execute, so two
identical cells are one cell whatever they are called.

This module owns the expansion and the public entry points (`load_suite`, `select`); the file
format is `schema.py`, the schedule rules are `harness.core.schedule_request`, and every mistake
is a `UserError` naming the file, line (or `--set` override), field and the fix. No torch here:
`plan` must be instant.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from harness.config.diagnostics import Locator
from harness.config.overrides import apply_overrides
from harness.config.schema import (
    CheckSpec,
    DatasetSpec,
    Execution,
    ExperimentSpec,
    FactorySpec,
    GptSpec,
    InceptionResNetV2Spec,
    ModelSpec,
    OptimizerSpec,
    PaperFigure,
    ResNet50Spec,
    ScheduleSpec,
    SmallCnnSpec,
    SuiteSpec,
    SweepSpec,
    TrainingSpec,
    WrnSpec,
)
from harness.config.yamlfile import read_suite_file
from harness.core.decided import DecidedSchedule, Decision, plan_after
from harness.core.execution import micro_batch_problem
from harness.core.naming import cell_label, config_id
from harness.core.schedule import Plan, ScheduleError
from harness.core.schedule_request import ResolvedSchedule, ScheduleRequest, resolve_schedule
from harness.errors import UserError

__all__ = [
    "Cell",
    "CheckSpec",
    "DatasetSpec",
    "Execution",
    "ExperimentSpec",
    "FactorySpec",
    "GptSpec",
    "InceptionResNetV2Spec",
    "ModelSpec",
    "OptimizerSpec",
    "PaperFigure",
    "ResNet50Spec",
    "ScheduleSpec",
    "SmallCnnSpec",
    "Suite",
    "SuiteSpec",
    "SweepSpec",
    "TrainingSpec",
    "WrnSpec",
    "load_suite",
    "select",
]


@dataclass(frozen=True)
class Cell:
    """One training run: resolved, planned and named."""

    suite: str
    experiment: str
    optimizer_name: str
    schedule_name: str
    model_name: str
    seed: int
    dataset: DatasetSpec
    model: WrnSpec | SmallCnnSpec | InceptionResNetV2Spec | ResNet50Spec | GptSpec | FactorySpec
    optimizer: OptimizerSpec  # with the schedule's lr / momentum already applied
    schedule: dict[str, Any]  # the resolved schedule, every field set
    training: TrainingSpec
    execution: Execution
    plan: Plan  # adaptive: the plan before any decision (the batch never grows)
    paper: PaperFigure | None = None
    sweep: SweepSpec | None = None  # the experiment's batch-sweep target (not in the id)
    equivalence_margin: float | None = None  # the suite's report setting (not in the id)
    aliases: tuple[str, ...] = field(default=())  # other experiment/optimizer/schedule names
    folder: str = "."  # the suite file's folder: a model's `factory: file.py:fn` starts there
    # A realization decided while training: its rule (its fields are in `schedule`, so in the id)
    decided: DecidedSchedule | None = None

    def plan_after(self, decisions: Sequence[Decision]) -> Plan:
        """The plan training follows after a decided cell's `decisions`; else `plan`."""
        return plan_after(self.plan, self.decided, decisions)

    @property
    def label(self) -> str:
        return cell_label(self.experiment, self.optimizer_name, self.schedule_name, self.seed)

    def resolved_config(self) -> dict[str, Any]:
        """Everything that decides the cell's numbers; the cell id hashes exactly this."""
        return {
            "dataset": id_fields(self.dataset),
            "model": id_fields(self.model),
            "optimizer": id_fields(self.optimizer),
            "schedule": self.schedule,
            "training": _training_config(self.training),
            "seed": self.seed,
        }

    @functools.cached_property
    def cell_id(self) -> str:  # cached: a frozen cell's configuration never changes
        return config_id(self.resolved_config())


# How a cell id stays the same as the suite schema grows. Each part of the id hashes the fields
# it had when ids were first fixed (ID_FIELDS, frozen: never edit a set) always, and a field
# added since only where its value differs from its default; so a new field with a default
# changes no existing id, and a cell that sets it is another cell. tests/test_cell_ids.py fails
# when a model gains a field without a default, and when a committed row's cell id is no
# longer the one its suite gives. (The schedule part is `ResolvedSchedule.as_dict`, whose
# keys are fixed the same way in harness.core.schedule_request.)
ID_FIELDS: dict[type, frozenset[str]] = {
    DatasetSpec: frozenset({"augment", "name", "test_size", "train_size"}),
    WrnSpec: frozenset({"depth", "name", "width"}),
    SmallCnnSpec: frozenset({"name", "width"}),
    InceptionResNetV2Spec: frozenset({"blocks_a", "blocks_b", "blocks_c", "name", "width_divisor"}),
    ResNet50Spec: frozenset({"max_blocks", "name", "width", "zero_init_residual"}),
    GptSpec: frozenset({"block_size", "n_embd", "n_head", "n_layer", "name"}),
    FactorySpec: frozenset({"factory", "kwargs"}),
    OptimizerSpec: frozenset({"betas", "eps", "kind", "lr", "momentum", "weight_decay"}),
    TrainingSpec: frozenset(
        {"drop_last", "eval_every", "ghost_batch_size", "precision", "weight_decay"}
    ),
}


def id_fields(spec: BaseModel) -> dict[str, Any]:
    """`spec` as a cell id hashes it: ID_FIELDS always, any later field only off its default."""
    dumped: dict[str, Any] = spec.model_dump(mode="json")
    always = ID_FIELDS[type(spec)]
    fields = type(spec).model_fields
    for name in [k for k in dumped if k not in always and k in fields]:
        if dumped[name] == _default_dump(type(spec), name):
            del dumped[name]
    return dumped


@functools.cache
def _default_dump(model: type[BaseModel], name: str) -> Any:
    """The JSON dump of `model`'s default for field `name` (a TypeAdapter is built once per
    field, not once per cell: building it was a quarter of planning 10,000 cells)."""
    field = model.model_fields[name]
    default = field.get_default(call_default_factory=True)
    shape = TypeAdapter(field.annotation if field.annotation is not None else Any)
    return shape.dump_python(default, mode="json")


def _training_config(training: TrainingSpec) -> dict[str, Any]:
    """The training spec as the cell id hashes it (`id_fields`); `bn_stats_images` only where
    the statistics are recomputed (bn_stats "ema" never reads it)."""
    dumped = id_fields(training)
    if training.bn_stats == "ema":
        dumped.pop("bn_stats_images", None)
    return dumped


@dataclass(frozen=True)
class Suite:
    spec: SuiteSpec
    path: Path
    cells: tuple[Cell, ...]
    locator: Locator | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def error(self, where: tuple[Any, ...], message: str) -> UserError:
        """A mistake found after loading (a factory that does not import): `FILE:LINE: field:`."""
        if self.locator is None:
            return UserError(f"{self.path}: {'.'.join(map(str, where))}: {message}")
        return self.locator.error(where, message)


def load_suite(path: str | Path, overrides: Sequence[str] = ()) -> Suite:
    """Read, validate, resolve and plan a suite file; `UserError` on any bad input.

    `overrides` are `KEY=VALUE` strings (`training.weight_decay=0`, `experiments.0.seeds=[0,1]`)
    applied to the file's values before validation; VALUE is read as YAML.
    """
    path = Path(path)
    document = read_suite_file(path)
    locator = Locator(document, apply_overrides(document.data, overrides))
    try:
        spec = SuiteSpec.model_validate(document.data)
    except ValidationError as exc:
        raise locator.validation_error(exc) from None
    cells = _expand(spec, locator, str(path.parent.absolute()))
    return Suite(spec=spec, path=path, cells=cells, locator=locator)


def select(cells: tuple[Cell, ...], pattern: str | None) -> tuple[Cell, ...]:
    """Cells whose id or label (or an alias) matches the shell-style `pattern`."""
    if not pattern:
        return cells

    def hit(cell: Cell) -> bool:
        names = (cell.cell_id, cell.label, *cell.aliases)
        return any(fnmatchcase(n, pattern) or pattern in n for n in names)

    return tuple(c for c in cells if hit(c))


def select_some(suite: Suite, pattern: str | None) -> tuple[Cell, ...]:
    """`select` on a suite's cells for a command that needs at least one: a `UserError`
    naming the pattern and the cure when none matches, or the suite when it has no cells.

    The one rule of `--only` for plan, run, status and check."""
    if not suite.cells:
        raise UserError(
            f"{suite.path}: experiments: the suite defines no experiments, so no cells; "
            "add one (name, optimizers, schedules, seeds)"
        )
    cells = select(suite.cells, pattern)
    if not cells:
        raise UserError(
            f"--only {pattern!r}: matches no cell of {suite.path}; see `harness plan "
            f"{suite.path}` for the ids and labels"
        )
    return cells


# ---------------------------------------------------------------------------------------------
# Resolution and expansion


def _resolve_schedule(
    spec: SuiteSpec,
    name: str,
    optimizer: OptimizerSpec,
    training: TrainingSpec,
    locator: Locator,
) -> tuple[ResolvedSchedule, OptimizerSpec]:
    """The named schedule for this optimizer and recipe, and the optimizer it trains with."""
    base = spec.schedule.model_dump(exclude_none=True)
    own = spec.schedules[name].model_dump(exclude_none=True)
    merged = {**base, **own}
    request = ScheduleRequest(
        **{k: v for k, v in merged.items() if k != "batch_size"},
        batch_size=own.get("batch_size"),
        base_batch_size=base.get("batch_size"),
        base_lr=optimizer.lr,
        base_momentum=optimizer.noise_momentum if optimizer.has_momentum else None,
        ghost=training.ghost_batch_size,
        drop_last=training.drop_last,
        train_size=spec.dataset.n_train,
    )
    try:
        resolved = resolve_schedule(request)
    except ScheduleError as exc:
        raise locator.error(_where(exc.field, name, own, base), exc.message) from None
    updates: dict[str, Any] = {"lr": resolved.lr}
    if request.momentum is not None:
        updates["momentum"] = resolved.momentum
    return resolved, optimizer.model_copy(update=updates)


# Request fields that a suite sets outside `schedule:` / `schedules:`.
_FIELD_HOMES = {
    "ghost": ("training", "ghost_batch_size"),
    "drop_last": ("training", "drop_last"),
    "train_size": ("dataset", "train_size"),
    "base_lr": ("optimizers",),
    "base_momentum": ("optimizers",),
}


def _where(key: str, name: str, own: dict[str, Any], base: dict[str, Any]) -> tuple[Any, ...]:
    """The document path of a schedule field: the named schedule's, or the shared default's."""
    if key in _FIELD_HOMES:
        return _FIELD_HOMES[key]
    if key == "base_batch_size":
        key = "batch_size"
    if key in own or key not in base:
        return ("schedules", name, key)
    return ("schedule", key)


# The largest grid a suite may expand to: 20,000 cells took 5 s and 185 MB to plan (and
# 200,000 ten times that); the paper's suites have a few dozen. $HARNESS_MAX_CELLS raises it.
MAX_CELLS = 10_000
MAX_CELLS_VARIABLE = "HARNESS_MAX_CELLS"


def max_cells() -> int:
    """The cap on a suite's grid: $HARNESS_MAX_CELLS, else `MAX_CELLS`."""
    value = os.environ.get(MAX_CELLS_VARIABLE, "").strip()
    if not value:
        return MAX_CELLS
    try:
        cap = int(value)
    except ValueError:
        cap = 0
    if cap < 1:
        raise UserError(
            f"${MAX_CELLS_VARIABLE}={value!r}: must be a whole number of cells, at least 1 "
            f"(default {MAX_CELLS})"
        )
    return cap


def _check_grid_size(spec: SuiteSpec, locator: Locator) -> None:
    """Refuse a grid over the cap before planning any of it (counted before duplicates merge)."""
    size = 0
    for exp in spec.experiments:
        models = exp.models if exp.models is not None else tuple(spec.models)
        size += len(exp.optimizers) * len(exp.schedules) * len(models) * len(exp.seeds)
    cap = max_cells()
    if size > cap:
        raise locator.error(
            ("experiments",),
            f"the grid has {size:,} cells (optimizers x schedules x models x seeds, summed "
            f"over experiments), over the limit of {cap:,}; split the suite, or raise the "
            f"limit with {MAX_CELLS_VARIABLE}={size}",
        )


def _expand(spec: SuiteSpec, locator: Locator, folder: str = ".") -> tuple[Cell, ...]:
    _check_grid_size(spec, locator)
    cells: dict[str, Cell] = {}
    micro = spec.execution.max_micro_batch
    if micro is not None:
        ghosts = [spec.training_of(exp).ghost_batch_size for exp in spec.experiments]
        why = micro_batch_problem(micro, ghosts)
        if why is not None:
            raise locator.error(("execution", "max_micro_batch"), f"{micro}: {why}")
    for index, exp in enumerate(spec.experiments):
        models = exp.models if exp.models is not None else tuple(spec.models)
        training = spec.training_of(exp)
        # A schedule depends on the optimizer and recipe only: plan it once, not once per seed.
        resolved: dict[tuple[str, str], tuple[ResolvedSchedule, OptimizerSpec]] = {}
        for opt_name, sched_name, model_name, seed in itertools.product(
            exp.optimizers, exp.schedules, models, exp.seeds
        ):
            if (opt_name, sched_name) not in resolved:
                resolved[opt_name, sched_name] = _resolve_schedule(
                    spec, sched_name, spec.optimizers[opt_name], training, locator
                )
            schedule, optimizer = resolved[opt_name, sched_name]
            if exp.sweep is not None and len(schedule.plan.phases) > 1:
                raise locator.error(
                    ("experiments", index, "sweep"),
                    f"a batch sweep needs constant schedules; '{sched_name}' has "
                    f"{len(schedule.plan.phases)} phases (give it milestones: [] and no warm-up)",
                )
            cell = Cell(
                suite=spec.name,
                experiment=exp.name,
                optimizer_name=opt_name,
                schedule_name=sched_name,
                model_name=model_name,
                seed=seed,
                dataset=spec.dataset,
                model=spec.models[model_name],
                optimizer=optimizer,
                schedule=schedule.as_dict(),
                training=training,
                execution=spec.execution,
                plan=schedule.plan,
                decided=schedule.decided,
                paper=exp.paper.get(f"{opt_name}/{sched_name}"),
                sweep=exp.sweep,
                equivalence_margin=spec.report.equivalence_margin,
                folder=folder,
            )
            known = cells.get(cell.cell_id)
            if known is None:
                cells[cell.cell_id] = cell
            else:
                paper = known.paper or cell.paper
                cells[cell.cell_id] = replace(
                    known,
                    aliases=(*known.aliases, cell.label),
                    paper=paper,
                    sweep=known.sweep or cell.sweep,
                )
    return tuple(cells.values())
