"""The typed, frozen shape of a suite file, and every check that needs only the file itself.

Each model lists the keys YAML may set (an unknown key is an error), with units and bounds
beside the values. Checks across fields are pydantic validators on the model that holds the
fields; a check whose error belongs deeper in the document raises `FieldError` with the path
it concerns, so the error still names the right line. The schedule rules are not here: they
live in `harness.core` and apply once a named schedule meets an optimizer (see `suite.py`).

Bounds are generous but finite: a suite is untrusted input, and a number like `epochs: 1e11`
or `seeds: [100000000000000000000]` must be refused, not planned for hours or crash a hash.

Not split: a suite file is one document, `SuiteSpec` holds every section's model and its
validators check across them; the models stand in the order of a suite file, each section's
together.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    Tag,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from harness.core.datasets import DATASET_FIELDS, DATASETS, DatasetKind, takers, unknown
from harness.core.execution import Execution
from harness.core.factory_spec import RESERVED_KWARGS, factory_problem
from harness.core.kinds import MOMENTUM_KINDS, BnStats, OptimizerKind, Precision, TrackerName
from harness.core.realizations import realization_kind, realization_names
from harness.core.schedule import (
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_TRAIN_SIZE,
    ScheduleError,
    Shape,
)
from harness.core.shapes import wrn_blocks
from harness.errors import printable

MAX_SEED = 2**63 - 1  # seeds feed 64-bit generators
SUITE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # the name is a results folder
NAME_MAX = 100  # characters of an experiment, optimizer, schedule or model name


def _name(v: str) -> str:
    """The one check of every name a suite gives (experiments, and the keys of optimizers,
    schedules and models): names reach terminals, reports and figures as they are, so they are
    printable text (no ESC, BEL, NUL, newline, U+202E or other control or format character)."""
    use = f"use 1-{NAME_MAX} printable characters (names are shown on terminals and in reports)"
    if not 1 <= len(v) <= NAME_MAX:
        raise ValueError(f"a name of {len(v)} characters; {use}")
    if not v.isprintable():
        raise ValueError(f"'{printable(v)}' holds control or format characters; {use}")
    return v


Name = Annotated[str, AfterValidator(_name)]

Epochs = Annotated[int, Field(gt=0, le=MAX_EPOCHS)]
BatchSize = Annotated[int, Field(gt=0, le=MAX_BATCH_SIZE)]
Examples = Annotated[int, Field(gt=0, le=MAX_TRAIN_SIZE)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Fraction = Annotated[float, Field(ge=0, lt=1)]


def _realization(v: str) -> str:
    """A registered realization's name (harness.core.realizations), read when validated, so
    one registered after this module was imported is accepted too."""
    try:
        return realization_kind(v).name
    except ScheduleError as exc:
        raise ValueError(exc.message) from None


def _realization_enum(schema: dict[str, Any]) -> None:
    schema["enum"] = list(realization_names())


RealizationName = Annotated[
    str, AfterValidator(_realization), Field(json_schema_extra=_realization_enum)
]


class FieldError(ValueError):
    """A validator's error that belongs at `where` (a path from the validated model).

    `cause`, when set, is the validation error of a nested model validated at `where`.
    """

    def __init__(
        self, where: tuple[Any, ...], message: str, cause: ValidationError | None = None
    ) -> None:
        super().__init__(message)
        self.where = where
        self.cause = cause


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, data: Any) -> Any:
        # pydantic's lax mode reads true as 1 and false as 0 in an int or float field, so
        # `batch_size: true` (or --set schedule.batch_size=true) trained with B = 1.
        if isinstance(data, dict):
            for name, value in data.items():
                info = cls.model_fields.get(name) if isinstance(name, str) else None
                where = None if info is None else _bool_for_a_number(info.annotation, value)
                if where is not None:
                    raise FieldError(
                        (name, *where), "true/false where a number belongs; write the number"
                    )
        return data


def _bool_for_a_number(annotation: Any, value: Any) -> tuple[Any, ...] | None:
    """The path in `value` to a bool that stands where `annotation` takes an int or a float,
    or None. Nested models check their own fields; a dataclass's (Execution) are checked here."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return _bool_for_a_number(args[0], value)
    if origin in (typing.Union, types.UnionType):
        if isinstance(value, bool) and any(_unwrapped(a) is bool for a in args):
            return None
        hits = (_bool_for_a_number(a, value) for a in args if a is not type(None))
        return next((h for h in hits if h is not None), None)
    if annotation in (int, float):
        return () if isinstance(value, bool) else None
    items: list[tuple[Any, Any, Any]] = []  # (key, annotation, value)
    if origin in (tuple, list) and isinstance(value, list | tuple):
        each = args[:1] * len(value) if origin is list or args[-1:] == (Ellipsis,) else args
        items = [(i, a, v) for i, (a, v) in enumerate(zip(each, value, strict=False))]
    elif origin is dict and isinstance(value, dict):
        items = [(k, args[1], v) for k, v in value.items()]
    elif dataclasses.is_dataclass(annotation) and isinstance(value, dict):
        hints = typing.get_type_hints(annotation)
        items = [(k, hints[k], v) for k, v in value.items() if k in hints]
    for key, inner, item in items:
        hit = _bool_for_a_number(inner, item)
        if hit is not None:
            return (key, *hit)
    return None


def _unwrapped(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _dataset_names(schema: dict[str, Any]) -> None:
    # The kinds registered when the schema is drawn (the reference page), in their order;
    # `_known` checks a name against the registry as it is when the suite is read.
    schema["enum"] = list(DATASETS)


class DatasetSpec(Strict):
    # The dataset kind (harness.core.datasets): its sizes, classes and which of the keys below
    # it takes or needs.
    name: Annotated[str, Field(json_schema_extra=_dataset_names)]
    train_size: Examples | None = None  # first n training examples
    test_size: Examples | None = None  # first n test examples
    # CIFAR-10: reflection pad 4 + random 32x32 crop + horizontal flip; ImageNet: random-resized
    # crop + flip (false: resize and centre crop, the evaluation transform).
    augment: bool = True
    # Image folders (imagenet, imagefolder). `path`: the folder holding train/<class>/ and
    # val/<class>/ (ImageNet's default: imagenet/ under --data or $HARNESS_DATA; an imagefolder
    # names it); where the files are is not what they are, so it is not in the cell id.
    # `image_size`: the crop side (default the model's: 299 for Inception-ResNet-V2, 224 for
    # ResNet-50); it changes the numbers, so when set it is in the cell id. An imagefolder also
    # gives `classes` (its number of class folders) and `train_size` (N, the plans' count).
    path: str | None = None
    image_size: Annotated[int, Field(ge=16, le=1024)] | None = None
    # name: arrays (harness.data.arrays): `path` is an .npz of train_x, train_y, test_x,
    # test_y (uint8 images NHWC or NCHW, integer labels), read with allow_pickle=False; where
    # it is, like ImageNet's, is not in the cell id (the row's data_source has its sha256).
    # `classes`: the number of labels (0..classes-1); `mean` / `std`: per-channel, pixel
    # values in [0, 1] (default: the training images'). In the cell id when set.
    classes: Annotated[int, Field(ge=2, le=100_000)] | None = None
    mean: tuple[Annotated[float, Field(ge=0, le=1)], ...] | None = None
    std: tuple[Annotated[float, Field(gt=0, le=1)], ...] | None = None
    # Sequence kinds (text, tokens; harness.core.sequences): `path` is the text file or the
    # folder of train.bin / val.bin; `block_size`: the tokens of one example (N is the training
    # windows of that many, counted from the files' sizes unless train_size caps it);
    # `vocab_size`: tokens' number of ids (text's is 256); `held_out`: text's validation part,
    # the last fraction of its bytes (default 0.1). In the cell id when set.
    block_size: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    vocab_size: Annotated[int, Field(ge=2, le=65_536)] | None = None  # uint16 ids
    held_out: Annotated[float, Field(gt=0, lt=1)] | None = None
    # (training, test) examples a kind with `counts` has, read from its files' sizes when
    # validated (harness plan needs N); None for other kinds or when train_size is given.
    _counted: tuple[int, int] | None = PrivateAttr(default=None)

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Unset ImageNet and arrays keys are left out, so that adding them changed no other
        # cell's id.
        out: dict[str, Any] = handler(self)
        out.pop("path", None)
        for key in ("image_size", "classes", "mean", "std", "block_size", "vocab_size", "held_out"):
            if out.get(key) is None:
                out.pop(key, None)
        # N counted from the files stands as train_size: the cell id and the row's config hold
        # the N the cell was planned for (another file, another N, another cell), the same as
        # a suite that states it.
        if self._counted is not None and out.get("train_size") is None:
            out["train_size"] = self._counted[0]
        return out

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in DATASETS:
            raise ValueError(unknown(name))
        return name

    @property
    def kind(self) -> DatasetKind:
        return DATASETS[self.name]

    @model_validator(mode="after")
    def _fields(self) -> DatasetSpec:
        kind = self.kind
        for field in DATASET_FIELDS:
            if field not in kind.takes and getattr(self, field) is not None:
                raise FieldError(
                    (field,), f"only dataset {takers(field)} takes it; drop it for {self.name}"
                )
        for need, fix in kind.needs:
            if getattr(self, need) is None:
                raise FieldError((need,), fix)
        if (self.mean is None) != (self.std is None) or (
            self.mean is not None and self.std is not None and len(self.mean) != len(self.std)
        ):
            raise FieldError(("std",), "give mean and std together, one value per channel")
        for split, full in (("train_size", kind.train_size), ("test_size", kind.test_size)):
            given = getattr(self, split)
            if given is not None and full is not None and given > full:
                raise ValueError(f"{split} {given} exceeds {self.name}'s {full}")
        if kind.storage == "sequences" and self.augment and "augment" in self.model_fields_set:
            raise FieldError(
                ("augment",), f"{self.name} has no augmentation; drop augment (or set false)"
            )
        if kind.counts is not None and self.train_size is None:
            try:
                counted = kind.counts(self)
            except ValueError as exc:
                raise FieldError(("path",), str(exc)) from None
            if counted[0] < 1:
                raise FieldError(
                    ("block_size",),
                    f"{self.path}: its training part is shorter than one example of "
                    f"block_size {self.block_size} + 1 tokens; give a longer file or a smaller "
                    "block_size",
                )
            self._counted = counted
        return self

    @property
    def n_train(self) -> int:
        """N: train_size, else the kind's full training set (or its files' count)."""
        size = self.train_size or self.kind.train_size
        if size is None and self._counted is not None:
            size = self._counted[0]
        assert size is not None  # a kind without a full size needs train_size
        return size

    @property
    def num_classes(self) -> int:
        classes = self.classes or self.vocab_size or self.kind.classes
        assert classes is not None  # a kind without its classes needs `classes`
        return classes


class WrnSpec(Strict):
    name: Literal["wrn"]
    depth: int = 16
    width: int = 4

    @field_validator("depth")
    @classmethod
    def _depth(cls, v: int) -> int:
        wrn_blocks(v)
        return v


class SmallCnnSpec(Strict):
    name: Literal["small_cnn"]
    width: Annotated[int, Field(gt=0)] = 16


Positive = Annotated[int, Field(gt=0, le=10_000)]


class InceptionResNetV2Spec(Strict):
    """The paper's ImageNet model (harness.models.inception_resnet); the defaults are the
    released network, smaller values are for tests and CPU suites."""

    name: Literal["inception_resnet_v2"]
    blocks_a: Positive = 10
    blocks_b: Positive = 20
    blocks_c: Positive = 10
    width_divisor: Positive = 1  # divides every channel count


class ResNet50Spec(Strict):
    """ResNet-50 v1.5 (harness.models.resnet); width 64 and max_blocks 6 are the real one."""

    name: Literal["resnet50"]
    width: Positive = 64
    max_blocks: Positive = 6  # caps the 3/4/6/3 blocks per stage
    # Each bottleneck's last batch norm starts at weight 0 (Goyal et al. 2017's recipe).
    zero_init_residual: bool = False


class GptSpec(Strict):
    """A small decoder-only transformer (harness.models.gpt) for the sequence kinds: its
    vocabulary is the dataset's, `block_size` its longest context (at least the dataset's)."""

    name: Literal["gpt"]
    n_layer: Positive
    n_head: Positive
    n_embd: Positive
    block_size: Annotated[int, Field(ge=1, le=1_000_000)]

    @model_validator(mode="after")
    def _heads(self) -> GptSpec:
        if self.n_embd % self.n_head:
            raise FieldError(
                ("n_head",), f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}"
            )
        return self


class FactorySpec(Strict):
    """A model from the user's own code (harness.core.factory_spec): `factory` builds it as
    ``factory(num_classes=..., **kwargs)``; every batch norm in it becomes a ghost batch norm.

    Both fields are in the cell id; only such a model has them, so no other cell id changed.
    Checked here for form alone: `harness plan` never imports the factory.
    """

    factory: str
    kwargs: dict[str, JsonValue] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        return "factory"

    @field_validator("factory")
    @classmethod
    def _form(cls, v: str) -> str:
        why = factory_problem(v)
        if why is not None:
            raise ValueError(why)
        return v

    @field_validator("kwargs")
    @classmethod
    def _own_keys(cls, v: dict[str, JsonValue]) -> dict[str, JsonValue]:
        for key in RESERVED_KWARGS:
            if key in v:
                raise FieldError((key,), "the harness passes it (from the dataset); drop it")
        return v

    def __hash__(self) -> int:  # kwargs is a dict: hash its JSON, the value the id hashes
        return hash(self.model_dump_json())


def _model_tag(value: Any) -> str | None:
    """The union's tag: "factory" for a mapping with a `factory:` key, else its `name`."""
    if isinstance(value, dict):
        return "factory" if "factory" in value else value.get("name")
    return getattr(value, "name", None)


ModelSpec = Annotated[
    Annotated[WrnSpec, Tag("wrn")]
    | Annotated[SmallCnnSpec, Tag("small_cnn")]
    | Annotated[InceptionResNetV2Spec, Tag("inception_resnet_v2")]
    | Annotated[ResNet50Spec, Tag("resnet50")]
    | Annotated[GptSpec, Tag("gpt")]
    | Annotated[FactorySpec, Tag("factory")],
    Discriminator(
        _model_tag,
        custom_error_type="invalid_model",
        custom_error_message="a model needs name: one of gpt, inception_resnet_v2, resnet50, "
        "small_cnn, wrn; or factory: 'pkg.module:function' for your own",
    ),
]
MODEL_SPECS: dict[str, type[Strict]] = {  # the discriminator's tags: core.kinds.MODEL_NAMES
    "wrn": WrnSpec,
    "small_cnn": SmallCnnSpec,
    "inception_resnet_v2": InceptionResNetV2Spec,
    "resnet50": ResNet50Spec,
    "gpt": GptSpec,
}


# Every tag of the `models:` union: the registered names and the user's own factory.
MODEL_TAGS: dict[str, type[Strict]] = {**MODEL_SPECS, "factory": FactorySpec}


class OptimizerSpec(Strict):
    kind: OptimizerKind
    lr: Annotated[float, Field(gt=0)]  # per optimizer step, for the mean loss over B examples
    momentum: Fraction | None = None
    betas: tuple[Fraction, Fraction] = (0.9, 0.999)
    eps: Annotated[float, Field(gt=0)] = 1e-8
    weight_decay: Annotated[float, Field(ge=0)] | None = None  # None: training.weight_decay

    @model_validator(mode="after")
    def _momentum(self) -> OptimizerSpec:
        if self.kind in MOMENTUM_KINDS and self.momentum is None:
            raise ValueError(f"a '{self.kind}' optimizer needs momentum (e.g. momentum: 0.9)")
        if self.kind not in MOMENTUM_KINDS and self.momentum not in (None, 0):
            raise ValueError(
                f"a '{self.kind}' optimizer has no momentum; use kind: momentum, or drop it"
            )
        return self

    @property
    def has_momentum(self) -> bool:
        """Whether a schedule may change this optimizer's momentum."""
        return self.kind in MOMENTUM_KINDS

    @property
    def noise_momentum(self) -> float:
        """The m in g = lr/(1-m)(N/B-1).

        Adam's first moment is an average normalized by (1 - beta1), so it has no 1/(1-m) gain:
        its m is 0 here.
        """
        return self.momentum or 0.0


class ScheduleSpec(Strict):
    """One entry of `schedules:` or the suite's `schedule:` defaults; every field optional here.

    None means "not set here"; the defaults are `harness.core.schedule_request.SCHEDULE_DEFAULTS`.
    """

    epochs: Epochs | None = None
    shape: Shape | None = None
    milestones: tuple[Annotated[int, Field(ge=0, le=MAX_EPOCHS)], ...] | None = None
    factor: Annotated[float, Field(gt=1)] | None = None  # how much g drops at each milestone
    warmup_epochs: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] | None = None
    min_multiplier: Fraction | None = None  # cosine: end value
    realization: RealizationName | None = None
    batch_drops: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] | None = None  # hybrid
    batch_size: BatchSize | None = None  # initial B (None: scaling rule)
    b_max: BatchSize | None = None
    lr: Annotated[float, Field(gt=0)] | None = None  # new initial lr; B follows B ∝ lr
    momentum: Fraction | None = None  # new m; B ∝ 1/(1-m)
    # realization: adaptive or tempered: B = target x measured B_simple, decided every `every`
    # epochs; adaptive (harness.core.adaptive) clamps it to [B_prev, b_max] (grow_only) or
    # [B0, b_max]
    target: Annotated[float, Field(gt=0, le=1e6)] | None = None
    every: Epochs | None = None
    grow_only: bool | None = None
    # realization: tempered (harness.core.tempered): g follows the schedule, B = target x
    # B_simple pooled over `window` epochs, at most x`max_step` per decision, not moved by
    # less than `hysteresis`; lr = the schedule's lr/B times B, at most `lr_max`
    window: Epochs | None = None
    max_step: Annotated[float, Field(gt=1, le=1e3)] | None = None
    hysteresis: Annotated[float, Field(ge=0, lt=1)] | None = None
    lr_max: Annotated[float, Field(gt=0)] | None = None


class TrainingSpec(Strict):
    """Recipe options that change results: part of every cell's id."""

    ghost_batch_size: BatchSize = 128
    weight_decay: Annotated[float, Field(ge=0)] = 5e-4
    drop_last: bool = True  # False keeps the partial batch: ceil(N/B) updates per epoch
    eval_every: Epochs = 1  # epochs between test evaluations
    precision: Precision = "fp32"  # bf16: autocast; fp64: exactness
    # The batch-norm statistics evaluation uses: "ema" (the running average, moved once per
    # optimizer step: the paper's reading) or "precise" (recomputed before each evaluation
    # from the first `bn_stats_images` training images, unaugmented, in ghost slices;
    # harness.models.ghost_bn). Both are in the cell id only when bn_stats is "precise"
    # (harness.config.suite.Cell.resolved_config), so ema cells keep their ids.
    bn_stats: BnStats = "ema"
    bn_stats_images: Annotated[int, Field(gt=0, le=10_000_000)] = 4096


class ClusterSpec(Strict):
    """Where `harness run --executor slurm` sends the cells: one array task per unfinished
    cell. Outside the cell id, like `execution`; every field can be given as a flag instead."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: Annotated[int, Field(gt=0, le=60 * 24 * 14)] = 240  # per task; requeued after
    gpus_per_job: Annotated[int, Field(ge=0, le=64)] = 1  # > 1: the cell runs under torchrun
    cpus_per_gpu: Annotated[int, Field(gt=0, le=256)] = 8
    mem_gb: Annotated[int, Field(gt=0, le=4096)] | None = None
    array_parallelism: Annotated[int, Field(gt=0, le=10_000)] = 64  # tasks running at once
    setup: tuple[str, ...] = ()  # shell lines run before each task (module load, venv ...)


class TrackingSpec(Strict):
    """Where `harness run` streams each cell's curves while it trains (harness.app.trackers):
    TensorBoard, Weights & Biases, MLflow. Outside the cell id, like `execution`; `--track
    NAME` adds to `track`. `project`: the W&B project and MLflow experiment (default: the
    suite's name)."""

    track: tuple[TrackerName, ...] = ()
    project: Annotated[str, Field(min_length=1, max_length=128)] | None = None

    @field_validator("track")
    @classmethod
    def _once(cls, v: tuple[TrackerName, ...]) -> tuple[TrackerName, ...]:
        return tuple(dict.fromkeys(v))  # a tracker named twice streams once

    @field_validator("project")
    @classmethod
    def _printable_project(cls, v: str | None) -> str | None:
        if v is not None and not v.isprintable():
            raise ValueError("use printable characters")
        return v


class PaperFigure(Strict):
    """What the paper reports for a cell, in its own words where it gives no exact number.

    `test_acc_runs` holds each run's accuracy where the paper gives them (Sec 5.3 runs some
    schedules twice); `test_acc` is then their mean, and a check keeps the two in agreement.
    """

    test_acc: Annotated[float, Field(ge=0, le=1)] | None = None  # fraction, not percent
    test_acc_runs: tuple[Annotated[float, Field(ge=0, le=1)], ...] | None = None  # fractions
    updates: str | None = None  # e.g. "~80000", "under 6500"
    source: str | None = None  # e.g. "Sec 5.2, Fig 5"

    @model_validator(mode="after")
    def _runs(self) -> PaperFigure:
        runs = self.test_acc_runs
        if runs is not None and len(runs) == 0:
            raise ValueError("test_acc_runs lists each run's accuracy; drop it or list them")
        if runs and self.test_acc is not None:
            mean = sum(runs) / len(runs)
            if abs(mean - self.test_acc) > 5e-4:  # the paper rounds to 0.1 %: mean to 0.05 %
                raise ValueError(
                    f"test_acc {self.test_acc} is not the mean {mean:.4f} of test_acc_runs; "
                    "set test_acc to the runs' mean, or fix the runs"
                )
        return self


class SweepSpec(Strict):
    """A batch-size sweep's target (harness.analysis.sweep): what "reaching the target" means.

    The experiment's schedules are constant (one phase each: no milestones, no warm-up), one
    per batch size; the report counts the steps and epochs each took to reach `target` and
    fits the critical batch size. An analysis setting: not part of any cell id.
    """

    # train_loss: the epoch's mean minibatch loss (train mode), placed at the epoch's middle
    # step; the others are evaluations, placed at the epoch's end.
    metric: Literal["train_loss", "train_eval_loss", "test_loss", "test_acc"] = "train_loss"
    target: float  # a loss in nats (reached at or below) or an accuracy fraction (at or above)


class ExperimentSpec(Strict):
    """A grid: cells = optimizers × schedules × models × seeds."""

    name: Name  # names the report's figure files (harness.analysis.figures) and headings
    optimizers: tuple[str, ...]
    schedules: tuple[str, ...]
    models: tuple[str, ...] | None = None  # None: every model of the suite
    seeds: tuple[Seed, ...] = (0,)
    training: dict[str, Any] = Field(default_factory=dict)  # overrides of `training:`
    paper: dict[str, PaperFigure] = Field(default_factory=dict)  # "optimizer/schedule" keys
    sweep: SweepSpec | None = None  # a batch-size sweep: constant schedules, one target

    @model_validator(mode="after")
    def _paper_keys(self) -> ExperimentSpec:
        for key in self.paper:
            opt, _, sched = key.partition("/")
            if opt not in self.optimizers or sched not in self.schedules:
                raise FieldError(
                    ("paper", key),
                    "paper figures are keyed 'optimizer/schedule' of this experiment's grid",
                )
        return self


class SeedSpreadSpec(Strict):
    """Tier 2 of `harness check --seeds`: a mean over seeds may move by `k` × its seed std.

    `std` maps a schedule name to the measured seed standard deviation of each runs metric
    (e.g. {decaying_lr: {final_test_acc: 0.013}}); docs/gate.md says how to measure it.
    """

    k: Annotated[float, Field(gt=0)] = 3.0
    std: dict[str, dict[str, Annotated[float, Field(ge=0)]]] = {}


class CheckSpec(Strict):
    """Absolute tolerances for `harness check`, per metric of the runs table."""

    final_test_acc: Annotated[float, Field(ge=0)] | None = None
    best_test_acc: Annotated[float, Field(ge=0)] | None = None
    final_train_loss: Annotated[float, Field(ge=0)] | None = None
    final_test_loss: Annotated[float, Field(ge=0)] | None = None
    seeds: SeedSpreadSpec | None = None  # tier 2; not a per-cell tolerance


ClaimTest = Literal["equivalent", "lower"]
CLAIM_ID_PATTERN = r"^[a-z0-9][a-z0-9.-]{0,63}$"


class ClaimSpec(Strict):
    """One claim of the paper and the test that decides it (harness.analysis.claims).

    `test: equivalent`: the paired TOST of `schedule` minus `versus` against the margin;
    `lower`: the paper says `schedule` ends lower, a one-sided paired test of a difference
    below 0. Rows are paired by seed within `optimizer`.
    """

    id: str
    section: str
    paper: str  # the paper's words, or as close as a line allows
    test: ClaimTest
    optimizer: str
    schedule: str
    versus: str
    primary: bool = False

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not re.fullmatch(CLAIM_ID_PATTERN, v):
            raise ValueError(f"claim id {v!r}: use 1-64 lower-case letters, digits, '.' or '-'")
        return v

    @field_validator("section", "paper")
    @classmethod
    def _printable(cls, v: str) -> str:
        v = " ".join(v.split())
        if not v or not v.isprintable() or len(v) > 400:
            raise ValueError("use 1-400 printable characters")
        return v


class PreregistrationSpec(Strict):
    """What decides the claims, committed before the rows it judges (docs/paper.md).

    `metric` is the primary metric, `pairing` what pairs two cells, `alpha` each one-sided
    test's level (the interval shown is 1 - 2 alpha), `margin` the equivalence margin (a
    fraction) with its reason, `seeds` the seeds every claim needs before it gets a verdict,
    `planning_sd` and `power` the power calculation that chose them, `order` the order in which
    the claims' cells run.
    """

    metric: Literal["final_test_acc"] = "final_test_acc"
    pairing: Literal["seed"] = "seed"
    alpha: Annotated[float, Field(gt=0, le=0.25)] = 0.05
    margin: Annotated[float, Field(gt=0, lt=1)]
    margin_reason: str
    seeds: tuple[Seed, ...] = Field(min_length=2)
    planning_sd: Annotated[float, Field(gt=0, lt=1)]
    power: Annotated[float, Field(gt=0, lt=1)]
    order: tuple[str, ...] = ()
    claims: tuple[ClaimSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _claims(self) -> PreregistrationSpec:
        ids = [c.id for c in self.claims]
        for i, claim in enumerate(self.claims):
            if ids.index(claim.id) != i:
                raise FieldError(("claims", i, "id"), f"claim '{claim.id}' is stated twice")
        for i, name in enumerate(self.order):
            if name not in ids:
                raise FieldError(("order", i), f"unknown claim '{name}'; state it under claims:")
        if sum(c.primary for c in self.claims) > 1:
            raise FieldError(("claims",), "at most one claim is primary: true")
        if len(set(self.seeds)) != len(self.seeds):
            raise FieldError(("seeds",), "a seed is listed twice")
        return self


class ReportSpec(Strict):
    """Settings of `harness report` (harness.analysis.seeds): not part of any cell id.

    `equivalence_margin` is the margin of the equivalence test (TOST) of each schedule's
    final test accuracy against decaying lr's, a fraction (0.005: half a percentage point);
    None: the report's default. It rides in each run row, so it is the margin a cell ran under.
    `preregistration` states the claims and the tests that decide them (the report's claims
    table), committed before the runs.
    """

    equivalence_margin: Annotated[float, Field(gt=0, lt=1)] | None = None
    preregistration: PreregistrationSpec | None = None


class SuiteSpec(Strict):
    name: str
    description: str = ""
    dataset: DatasetSpec
    models: dict[Name, ModelSpec]
    optimizers: dict[Name, OptimizerSpec]
    schedule: ScheduleSpec = ScheduleSpec()
    schedules: dict[Name, ScheduleSpec]
    training: TrainingSpec = TrainingSpec()
    execution: Execution = Execution()  # a core dataclass: pydantic validates its fields
    cluster: ClusterSpec = ClusterSpec()
    tracking: TrackingSpec = TrackingSpec()
    experiments: tuple[ExperimentSpec, ...]
    check: CheckSpec = CheckSpec()
    report: ReportSpec = ReportSpec()

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not re.fullmatch(SUITE_NAME_PATTERN, v):
            raise ValueError(
                f"{v!r} is not a safe suite name (it names the results folder); use 1-64 "
                "letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        return v

    @model_validator(mode="after")
    def _references(self) -> SuiteSpec:
        seen: set[str] = set()
        for i, exp in enumerate(self.experiments):
            where = ("experiments", i)
            if exp.name in seen:
                raise FieldError((*where, "name"), f"experiment '{exp.name}' is defined twice")
            seen.add(exp.name)
            tables = (
                ("optimizers", exp.optimizers, self.optimizers),
                ("schedules", exp.schedules, self.schedules),
                ("models", exp.models or (), self.models),
            )
            for axis, names, table in tables:
                for j, key in enumerate(names):
                    if key not in table:
                        raise FieldError(
                            (*where, axis, j),
                            f"unknown name '{key}'; define it under {axis}: ({', '.join(table)})",
                        )
            try:
                self.training_of(exp)
            except ValidationError as exc:
                raise FieldError((*where, "training"), "invalid training", exc) from None
        return self

    @model_validator(mode="after")
    def _claims_name_cells(self) -> SuiteSpec:
        pre = self.report.preregistration
        if pre is None:
            return self
        for i, claim in enumerate(pre.claims):
            where = ("report", "preregistration", "claims", i)
            if claim.optimizer not in self.optimizers:
                raise FieldError((*where, "optimizer"), f"unknown optimizer '{claim.optimizer}'")
            for axis in ("schedule", "versus"):
                name = getattr(claim, axis)
                if name not in self.schedules:
                    raise FieldError((*where, axis), f"unknown schedule '{name}'")
            for axis in ("schedule", "versus"):
                name = getattr(claim, axis)
                if not any(
                    claim.optimizer in e.optimizers
                    and name in e.schedules
                    and set(pre.seeds) <= set(e.seeds)
                    for e in self.experiments
                ):
                    raise FieldError(
                        (*where, axis),
                        f"no experiment runs {claim.optimizer}/{name} with every "
                        "pre-registered seed; add it to an experiment",
                    )
        return self

    @model_validator(mode="after")
    def _models_fit_the_data(self) -> SuiteSpec:
        # An image model cannot read token ids, nor a GPT images; a GPT's context must hold
        # one example of the dataset.
        sequences = self.dataset.kind.storage == "sequences"
        for key, model in self.models.items():
            if isinstance(model, FactorySpec):
                continue
            if sequences != isinstance(model, GptSpec):
                what = "token sequences" if sequences else "images"
                raise FieldError(
                    ("models", key, "name"),
                    f"model {model.name} cannot read dataset {self.dataset.name}'s {what}; "
                    f"use {'gpt' if sequences else 'an image model'}",
                )
            block = self.dataset.block_size
            if isinstance(model, GptSpec) and block is not None and model.block_size < block:
                raise FieldError(
                    ("models", key, "block_size"),
                    f"{model.block_size} is shorter than dataset.block_size {block}; give at "
                    f"least {block}",
                )
        return self

    @model_validator(mode="after")
    def _precise_bn_on_cifar(self) -> SuiteSpec:
        # Precise statistics take the first training images in index order: CIFAR-10's are
        # shuffled, an image folder's are sorted by class (a few classes' statistics).
        if self.dataset.kind.sorted_by_class:
            for i, exp in enumerate(self.experiments):
                if self.training_of(exp).bn_stats == "precise":
                    where = ("training",) if not exp.training else ("experiments", i, "training")
                    raise FieldError(
                        (*where, "bn_stats"),
                        "precise statistics take the first training images, which an image "
                        f"folder sorts by class; use bn_stats: ema for {self.dataset.name}",
                    )
        return self

    def training_of(self, experiment: ExperimentSpec) -> TrainingSpec:
        """The suite's `training:` with the experiment's overrides applied."""
        if not experiment.training:
            return self.training
        return TrainingSpec.model_validate({**self.training.model_dump(), **experiment.training})
