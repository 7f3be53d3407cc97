"""Suites: YAML files validated into typed, frozen objects, expanded into cells.

A suite names a dataset, models, optimizers (each a recipe: kind, lr, momentum), a base
schedule, named schedules (each a realization of the base, possibly with a new lr or momentum
whose batch size follows from the scaling rules), and experiments: grids whose axes expand into
cells by product. Every cell gets a stable `cell_id`, a hash of what it will execute, so two
identical cells are one cell whatever they are called.

YAML only supplies values: an unknown key, a wrong type or an inconsistent value is a
`UserError` naming the file, line, field and the fix. No torch here: `plan` must be instant.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from harness.core.schedule import BaseSchedule, Plan, realize, scaled_batch_size
from harness.errors import UserError

DATASET_SIZES = {"cifar10": (50_000, 10_000, 10), "imagenet": (1_281_167, 50_000, 1000)}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(Strict):
    name: Literal["cifar10", "imagenet", "synthetic"]
    train_size: Annotated[int, Field(gt=0)] | None = None  # first n training examples
    test_size: Annotated[int, Field(gt=0)] | None = None  # first n test examples
    augment: bool = True  # reflection pad 4 + random 32x32 crop + horizontal flip

    @model_validator(mode="after")
    def _sizes(self) -> DatasetSpec:
        if self.name == "synthetic" and (self.train_size is None or self.test_size is None):
            raise ValueError("a synthetic dataset needs train_size and test_size")
        if self.name in DATASET_SIZES:
            full_train, full_test, _ = DATASET_SIZES[self.name]
            if self.train_size is not None and self.train_size > full_train:
                raise ValueError(f"train_size {self.train_size} exceeds {self.name}'s {full_train}")
            if self.test_size is not None and self.test_size > full_test:
                raise ValueError(f"test_size {self.test_size} exceeds {self.name}'s {full_test}")
        return self

    @property
    def n_train(self) -> int:
        return self.train_size or DATASET_SIZES[self.name][0]

    @property
    def num_classes(self) -> int:
        return DATASET_SIZES.get(self.name, (0, 0, 10))[2]


class WrnSpec(Strict):
    name: Literal["wrn"]
    depth: int = 16
    width: int = 4

    @field_validator("depth")
    @classmethod
    def _depth(cls, v: int) -> int:
        if v < 10 or (v - 4) % 6:
            raise ValueError("WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40 ...)")
        return v


class SmallCnnSpec(Strict):
    name: Literal["small_cnn"]
    width: Annotated[int, Field(gt=0)] = 16


class InceptionResNetV2Spec(Strict):
    """The paper's ImageNet model: declared so ImageNet suites can be planned; not trainable."""

    name: Literal["inception_resnet_v2"]


ModelSpec = Annotated[WrnSpec | SmallCnnSpec | InceptionResNetV2Spec, Field(discriminator="name")]


class OptimizerSpec(Strict):
    kind: Literal["sgd", "momentum", "nesterov", "adam"]
    lr: Annotated[float, Field(gt=0)]  # per optimizer step, for the mean loss over B examples
    momentum: Annotated[float, Field(ge=0, lt=1)] | None = None
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (
        0.9,
        0.999,
    )
    eps: Annotated[float, Field(gt=0)] = 1e-8
    weight_decay: Annotated[float, Field(ge=0)] | None = None  # None: training.weight_decay

    @model_validator(mode="after")
    def _momentum(self) -> OptimizerSpec:
        if self.kind in ("momentum", "nesterov") and self.momentum is None:
            raise ValueError(f"a '{self.kind}' optimizer needs momentum (e.g. momentum: 0.9)")
        if self.kind in ("sgd", "adam") and self.momentum not in (None, 0):
            raise ValueError(
                f"a '{self.kind}' optimizer has no momentum; use kind: momentum, or drop it"
            )
        return self

    @property
    def noise_momentum(self) -> float:
        """The m in g = lr/(1-m)(N/B-1).

        Adam's first moment is an average normalized by (1 - beta1), so it has no 1/(1-m) gain:
        its m is 0 here.
        """
        return self.momentum or 0.0


class ScheduleSpec(Strict):
    """One entry of `schedules:` or the suite's `schedule:` defaults; every field optional here."""

    epochs: Annotated[int, Field(gt=0)] | None = None
    shape: Literal["step", "cosine"] | None = None
    milestones: tuple[int, ...] | None = None  # epochs at which the noise scale drops
    factor: Annotated[float, Field(gt=1)] | None = None  # how much g drops at each milestone
    warmup_epochs: Annotated[int, Field(ge=0)] | None = None
    min_multiplier: Annotated[float, Field(ge=0, lt=1)] | None = None  # cosine: end value
    realization: Literal["lr", "batch", "hybrid"] | None = None
    batch_drops: Annotated[int, Field(ge=0)] | None = None  # hybrid: drops made by the batch
    batch_size: Annotated[int, Field(gt=0)] | None = None  # initial B (None: scaling rule)
    b_max: Annotated[int, Field(gt=0)] | None = None
    lr: Annotated[float, Field(gt=0)] | None = None  # new initial lr; B follows B ∝ lr
    momentum: Annotated[float, Field(ge=0, lt=1)] | None = None  # new m; B ∝ 1/(1-m)


class TrainingSpec(Strict):
    """Recipe options that change results: part of every cell's id."""

    ghost_batch_size: Annotated[int, Field(gt=0)] = 128
    weight_decay: Annotated[float, Field(ge=0)] = 5e-4
    drop_last: bool = True  # False keeps the partial batch: ceil(N/B) updates per epoch
    eval_every: Annotated[int, Field(gt=0)] = 1  # epochs between test evaluations
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast on the device


class ExecutionSpec(Strict):
    """How a cell runs, not what it computes: outside the cell id (results must not change)."""

    max_micro_batch: Annotated[int, Field(gt=0)] | None = None  # None: the whole batch
    channels_last: bool = False
    compile: bool = False
    eval_batch_size: Annotated[int, Field(gt=0)] = 1000


class PaperFigure(Strict):
    """What the paper reports for a cell, in its own words where it gives no exact number."""

    test_acc: Annotated[float, Field(ge=0, le=1)] | None = None  # fraction, not percent
    updates: str | None = None  # e.g. "~80000", "under 6500"
    source: str | None = None  # e.g. "Sec 5.2, Fig 5"


class ExperimentSpec(Strict):
    """A grid: cells = optimizers × schedules × models × seeds."""

    name: str
    optimizers: tuple[str, ...]
    schedules: tuple[str, ...]
    models: tuple[str, ...] | None = None  # None: every model of the suite
    seeds: tuple[int, ...] = (0,)
    training: dict[str, Any] = Field(default_factory=dict)  # overrides of `training:`
    paper: dict[str, PaperFigure] = Field(default_factory=dict)  # "optimizer/schedule" keys


class CheckSpec(Strict):
    """Absolute tolerances for `harness check`, per metric of the runs table."""

    final_test_acc: Annotated[float, Field(ge=0)] | None = None
    best_test_acc: Annotated[float, Field(ge=0)] | None = None
    final_train_loss: Annotated[float, Field(ge=0)] | None = None
    final_test_loss: Annotated[float, Field(ge=0)] | None = None


class SuiteSpec(Strict):
    name: str
    description: str = ""
    dataset: DatasetSpec
    models: dict[str, ModelSpec]
    optimizers: dict[str, OptimizerSpec]
    schedule: ScheduleSpec = ScheduleSpec()
    schedules: dict[str, ScheduleSpec]
    training: TrainingSpec = TrainingSpec()
    execution: ExecutionSpec = ExecutionSpec()
    experiments: tuple[ExperimentSpec, ...]
    check: CheckSpec = CheckSpec()


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
    model: WrnSpec | SmallCnnSpec | InceptionResNetV2Spec
    optimizer: OptimizerSpec  # with the schedule's lr / momentum already applied
    schedule: dict[str, Any]  # the resolved schedule, every field set
    training: TrainingSpec
    execution: ExecutionSpec
    plan: Plan
    paper: PaperFigure | None = None
    aliases: tuple[str, ...] = field(default=())  # other experiment/optimizer/schedule names

    @property
    def label(self) -> str:
        return f"{self.experiment}/{self.optimizer_name}/{self.schedule_name}/seed{self.seed}"

    def resolved_config(self) -> dict[str, Any]:
        """Everything that decides the cell's numbers; the cell id hashes exactly this."""
        return {
            "dataset": self.dataset.model_dump(mode="json"),
            "model": self.model.model_dump(mode="json"),
            "optimizer": self.optimizer.model_dump(mode="json"),
            "schedule": self.schedule,
            "training": self.training.model_dump(mode="json"),
            "seed": self.seed,
        }

    @property
    def cell_id(self) -> str:
        blob = json.dumps(self.resolved_config(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Suite:
    spec: SuiteSpec
    path: Path
    cells: tuple[Cell, ...]

    @property
    def name(self) -> str:
        return self.spec.name


# ---------------------------------------------------------------------------------------------
# Loading with line numbers


class _Lines:
    """Maps a key path in the YAML document to its line, for error messages."""

    def __init__(self, path: Path, root: yaml.Node | None) -> None:
        self.path = path
        self.lines: dict[tuple[Any, ...], int] = {}
        if root is not None:
            self._walk(root, ())

    def _walk(self, node: yaml.Node, where: tuple[Any, ...]) -> None:
        self.lines.setdefault(where, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                here = (*where, key.value)
                self.lines[here] = key.start_mark.line + 1
                self._walk(value, here)
                self.lines[here] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, (*where, i))

    def error(self, where: tuple[Any, ...], message: str) -> UserError:
        loc = tuple(where)
        while loc and loc not in self.lines:
            loc = loc[:-1]
        line = self.lines.get(loc)
        field_name = ".".join(str(p) for p in where) or "(top level)"
        at = f"{self.path}:{line}" if line else f"{self.path}"
        return UserError(f"{at}: {field_name}: {message}")


def _pydantic_error(lines: _Lines, exc: ValidationError, prefix: tuple[Any, ...] = ()) -> UserError:
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
    where = (*prefix, *loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        model = _model_at(SuiteSpec, where[:-1])
        allowed = ", ".join(model.model_fields) if model else "see the suite documentation"
        return lines.error(where, f"unknown key '{where[-1]}'; allowed keys here: {allowed}")
    if kind == "missing":
        return lines.error(where, "required field is missing; add it")
    message = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    if kind not in ("value_error", "model_type") and not isinstance(got, dict | list):
        message += f" (got {got!r})"
    return lines.error(where, message)


_UNION_TAGS = {"wrn", "small_cnn", "inception_resnet_v2"}


def _model_at(model: type[BaseModel], where: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at `where`, for listing allowed keys."""
    current: Any = model
    for part in where:
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                return None
            current = _unwrap(info.annotation)
        else:
            current = _unwrap(current, part)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any, key: Any = None) -> Any:
    """Step through dict / tuple / Optional annotations to the model they hold."""
    import typing

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return _unwrap(args[0], key)
    if origin in (dict, Mapping) and key is not None:
        return _unwrap(args[1])
    if origin is dict:
        return annotation
    if origin is tuple and key is not None:
        return _unwrap(args[0])
    if args:
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(models) == 1:
            return models[0]
    return annotation


def _read_yaml(path: Path) -> tuple[Any, _Lines]:
    if not path.exists():
        raise UserError(f"{path}: no such suite file; give the path to a suite YAML file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the path to a suite YAML file")
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file; a suite is a YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}{line}: not valid YAML: {problem}") from None
    lines = _Lines(path, root)
    if not isinstance(data, dict):
        raise UserError(f"{path}: a suite must be a YAML mapping (name:, dataset:, ...)")
    return data, lines


def load_suite(path: str | Path) -> Suite:
    """Read, validate, resolve and plan a suite file; `UserError` on any bad input."""
    path = Path(path)
    data, lines = _read_yaml(path)
    try:
        spec = SuiteSpec.model_validate(data)
    except ValidationError as exc:
        raise _pydantic_error(lines, exc) from None
    return Suite(spec=spec, path=path, cells=_expand(spec, lines))


# ---------------------------------------------------------------------------------------------
# Resolution and expansion

_SCHEDULE_DEFAULTS: dict[str, Any] = {
    "shape": "step",
    "milestones": (),
    "factor": 10.0,
    "warmup_epochs": 0,
    "min_multiplier": 0.0,
    "realization": "lr",
    "batch_drops": None,
    "b_max": None,
    "lr": None,
    "momentum": None,
    "batch_size": None,
}


def _resolve_schedule(
    spec: SuiteSpec,
    name: str,
    optimizer: OptimizerSpec,
    training: TrainingSpec,
    lines: _Lines,
) -> tuple[dict[str, Any], OptimizerSpec, Plan]:
    """Merge defaults into the named schedule, apply the scaling rules and plan it."""
    base = spec.schedule.model_dump(exclude_none=True)
    own = spec.schedules[name].model_dump(exclude_none=True)
    merged = {**_SCHEDULE_DEFAULTS, **base, **own}
    where = ("schedules", name)

    def fail(key: str, message: str) -> UserError:
        at = where if key in own or key not in base else ("schedule",)
        return lines.error((*at, key), message)

    if "epochs" not in merged:
        raise fail("epochs", "required field is missing; set it here or under schedule:")
    epochs = merged["epochs"]
    milestones = tuple(merged["milestones"])
    if merged["shape"] == "step":
        if list(milestones) != sorted(set(milestones)):
            raise fail("milestones", f"{list(milestones)} must be strictly increasing epochs")
        if milestones and not milestones[0] > 0:
            raise fail("milestones", f"{list(milestones)} must be epochs after 0")
        if milestones and milestones[-1] >= epochs:
            raise fail(
                "milestones",
                f"milestone {milestones[-1]} is not before the last epoch ({epochs}); "
                "drop it or raise epochs",
            )
    elif milestones:
        raise fail("milestones", "only a step shape has milestones; remove them or use step")
    if merged["warmup_epochs"] >= epochs:
        raise fail("warmup_epochs", f"must be below epochs ({epochs})")

    realization = merged["realization"]
    if realization == "hybrid":
        if merged["shape"] != "step":
            raise fail("realization", "hybrid needs a step shape with milestones")
        if merged["batch_drops"] is None:
            raise fail("batch_drops", "hybrid needs batch_drops: the drops made by the batch")
    elif merged["batch_drops"] is not None:
        raise fail("batch_drops", "only a hybrid realization takes batch_drops; remove it")

    base_momentum = optimizer.noise_momentum
    lr = merged["lr"] if merged["lr"] is not None else optimizer.lr
    momentum = merged["momentum"] if merged["momentum"] is not None else base_momentum
    if merged["momentum"] is not None and optimizer.kind not in ("momentum", "nesterov"):
        raise fail("momentum", f"optimizer '{optimizer.kind}' has no momentum to change")
    ghost = training.ghost_batch_size
    if "batch_size" in own or (merged["lr"] is None and merged["momentum"] is None):
        if merged["batch_size"] is None:
            raise fail("batch_size", "required field is missing; set it under schedule:")
        batch = merged["batch_size"]
    else:
        if base.get("batch_size") is None:
            raise fail("batch_size", "the scaling rule needs a base batch_size under schedule:")
        exact = scaled_batch_size(base["batch_size"], optimizer.lr, base_momentum, lr, momentum)
        batch = round(exact)
        if not math.isclose(batch, exact, rel_tol=1e-9) or batch % ghost:
            raise fail(
                "batch_size",
                f"the scaling rule gives B = {exact:g}, not a multiple of the ghost batch "
                f"size {ghost}; state batch_size explicitly",
            )
    if batch % ghost:
        raise fail(
            "batch_size",
            f"{batch} is not a multiple of the ghost batch size {ghost}; "
            f"use {max(ghost, round(batch / ghost) * ghost)}",
        )
    b_max = merged["b_max"]
    if b_max is not None:
        if b_max < batch:
            raise fail("b_max", f"{b_max} is below the initial batch size {batch}; raise it")
        if b_max % ghost:
            raise fail("b_max", f"{b_max} is not a multiple of the ghost batch size {ghost}")

    base_schedule = BaseSchedule(
        epochs=epochs,
        shape=merged["shape"],
        milestones=milestones,
        factor=float(merged["factor"]),
        warmup_epochs=merged["warmup_epochs"],
        min_multiplier=merged["min_multiplier"],
    )
    n_train = spec.dataset.n_train
    plan = realize(
        base_schedule,
        lr=lr,
        batch_size=batch,
        momentum=momentum,
        train_size=n_train,
        realization=realization,
        batch_drops=merged["batch_drops"] or 0,
        b_max=b_max,
        ghost=ghost,
        drop_last=training.drop_last,
    )
    for phase in plan.phases:
        if phase.batch_size > n_train or phase.updates == 0:
            raise fail(
                "b_max",
                f"batch size {phase.batch_size} in epochs {phase.start_epoch}-{phase.end_epoch} "
                f"exceeds the training set ({n_train} examples); set b_max <= {n_train}",
            )
    resolved = {
        "epochs": epochs,
        "shape": merged["shape"],
        "milestones": list(milestones),
        "factor": float(merged["factor"]),
        "warmup_epochs": merged["warmup_epochs"],
        "min_multiplier": merged["min_multiplier"],
        "realization": realization,
        "batch_drops": merged["batch_drops"],
        "batch_size": batch,
        "b_max": b_max,
        "lr": lr,
        "momentum": momentum,
    }
    updates = {"lr": lr}
    if merged["momentum"] is not None:
        updates["momentum"] = momentum
    return resolved, optimizer.model_copy(update=updates), plan


def _expand(spec: SuiteSpec, lines: _Lines) -> tuple[Cell, ...]:
    cells: dict[str, Cell] = {}
    names_seen: set[str] = set()
    for i, exp in enumerate(spec.experiments):
        where = ("experiments", i)
        if exp.name in names_seen:
            raise lines.error((*where, "name"), f"experiment '{exp.name}' is defined twice")
        names_seen.add(exp.name)
        for axis, table in (("optimizers", spec.optimizers), ("schedules", spec.schedules)):
            for j, key in enumerate(getattr(exp, axis)):
                if key not in table:
                    raise lines.error(
                        (*where, axis, j),
                        f"unknown name '{key}'; define it under {axis}: ({', '.join(table)})",
                    )
        models = exp.models if exp.models is not None else tuple(spec.models)
        for j, key in enumerate(models):
            if key not in spec.models:
                raise lines.error(
                    (*where, "models", j),
                    f"unknown name '{key}'; define it under models: ({', '.join(spec.models)})",
                )
        try:
            training = TrainingSpec.model_validate({**spec.training.model_dump(), **exp.training})
        except ValidationError as exc:
            raise _pydantic_error(lines, exc, (*where, "training")) from None
        for key in exp.paper:
            opt, _, sched = key.partition("/")
            if opt not in exp.optimizers or sched not in exp.schedules:
                raise lines.error(
                    (*where, "paper", key),
                    "paper figures are keyed 'optimizer/schedule' of this experiment's grid",
                )
        for opt_name, sched_name, model_name, seed in itertools.product(
            exp.optimizers, exp.schedules, models, exp.seeds
        ):
            schedule, optimizer, plan = _resolve_schedule(
                spec, sched_name, spec.optimizers[opt_name], training, lines
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
                schedule=schedule,
                training=training,
                execution=spec.execution,
                plan=plan,
                paper=exp.paper.get(f"{opt_name}/{sched_name}"),
            )
            known = cells.get(cell.cell_id)
            if known is None:
                cells[cell.cell_id] = cell
            else:
                alias = cell.label
                paper = known.paper or cell.paper
                cells[cell.cell_id] = _replace(known, aliases=(*known.aliases, alias), paper=paper)
    return tuple(cells.values())


def _replace(cell: Cell, **changes: Any) -> Cell:
    from dataclasses import replace

    return replace(cell, **changes)


def select(cells: tuple[Cell, ...], pattern: str | None) -> tuple[Cell, ...]:
    """Cells whose id or label (or an alias) matches the shell-style `pattern`."""
    if not pattern:
        return cells
    from fnmatch import fnmatchcase

    def hit(cell: Cell) -> bool:
        names = (cell.cell_id, cell.label, *cell.aliases)
        return any(fnmatchcase(n, pattern) or pattern in n for n in names)

    return tuple(c for c in cells if hit(c))
