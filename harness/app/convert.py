"""`harness convert`: an lr recipe in, its lr / hybrid / increasing-batch realizations out.

This module owns the *recipe*: the few numbers a reader of the paper has for their own run
(dataset size, epochs, batch size, lr, momentum, and a step or cosine lr schedule), how they
are validated (every mistake is a `UserError` that names the field and says how to fix it),
how they become three plans side by side, and the suite YAML that lets `harness plan` and
`harness run` take them over. The suite it writes states the recipe and the scaling rules
in the suite's own terms, so `harness plan FILE` recomputes the same plans independently.
No torch here.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from harness.config.yamlfile import parse_yaml, plain
from harness.core.schedule import BaseSchedule, Plan, ScheduleError, realize, scaled_batch_size
from harness.core.schedule import updates_per_epoch as _per_epoch
from harness.errors import UserError

REALIZATIONS = ("lr", "hybrid", "batch")
SCHEDULE_NAMES = {"lr": "decaying_lr", "hybrid": "hybrid", "batch": "increasing_batch"}
# Datasets a converted suite can name; any other size is written as a synthetic dataset.
KNOWN_SIZES = {"cifar10": 50_000, "imagenet": 1_281_167}
MODELS = {
    "cifar10": "{name: wrn, depth: 16, width: 4}",
    "imagenet": "{name: inception_resnet_v2}",
    "synthetic": "{name: small_cnn}",
}
DEFAULT_GHOST = 128  # the paper's ghost batch size on CIFAR-10


@dataclass(frozen=True)
class Recipe:
    """An lr recipe, in the units of the paper: lr per optimizer step on the mean loss of a
    batch of `batch_size` examples, epochs as passes over `train_size` examples.

    `new_lr` / `new_momentum` raise the initial lr or momentum and let the initial batch
    follow the scaling rules B ∝ lr and B ∝ 1/(1-m); `b_max` caps the batch (the lr takes the
    rest of each drop); `batch_drops` is how many drops the hybrid makes with the batch.
    """

    epochs: int
    train_size: int
    batch_size: int
    lr: float
    momentum: float = 0.0
    shape: Literal["step", "cosine"] = "step"
    milestones: tuple[int, ...] = ()
    factor: float = 10.0
    warmup_epochs: int = 0
    min_multiplier: float = 0.0
    b_max: int | None = None
    new_lr: float | None = None
    new_momentum: float | None = None
    batch_drops: int = 1
    ghost_batch_size: int | None = None
    drop_last: bool = True
    dataset: Literal["cifar10", "imagenet", "synthetic"] | None = None

    @property
    def start_lr(self) -> float:
        """The initial lr of every realization."""
        return self.lr if self.new_lr is None else self.new_lr

    @property
    def start_momentum(self) -> float:
        """The momentum of every realization."""
        return self.momentum if self.new_momentum is None else self.new_momentum

    @property
    def start_batch(self) -> int:
        """The initial batch: `batch_size`, scaled by the rules when lr or momentum change."""
        exact = scaled_batch_size(
            self.batch_size, self.lr, self.momentum, self.start_lr, self.start_momentum
        )
        return round(exact)

    @property
    def ghost(self) -> int:
        """Batch sizes are multiples of this (default 128, or B0 itself when 128 does not
        divide it), as in the suite the recipe becomes."""
        if self.ghost_batch_size is not None:
            return self.ghost_batch_size
        start = self.start_batch
        return DEFAULT_GHOST if start % DEFAULT_GHOST == 0 else start

    @property
    def dataset_name(self) -> str:
        """The suite's dataset: as given, else CIFAR-10 or ImageNet by size, else synthetic."""
        if self.dataset is not None:
            return self.dataset
        if self.train_size == KNOWN_SIZES["imagenet"]:
            return "imagenet"
        return "cifar10" if self.train_size <= KNOWN_SIZES["cifar10"] else "synthetic"

    @property
    def realizations(self) -> tuple[str, ...]:
        """lr, hybrid (step shapes only: it counts milestones) and batch, less any whose
        batch would outgrow the training set (see `infeasible`)."""
        names = REALIZATIONS if self.shape == "step" else ("lr", "batch")
        return tuple(n for n in names if n not in self.infeasible())

    def infeasible(self) -> dict[str, str]:
        """Realizations whose batch would exceed `train_size`, each with how to get it."""
        out = {}
        for name in REALIZATIONS if self.shape == "step" else ("lr", "batch"):
            try:
                phases = self.plan(name).phases
            except ScheduleError as exc:  # core refuses a batch beyond the training set
                out[name] = f"{_title(self, name)}: {exc.message}"
                continue
            for phase in phases:
                if phase.batch_size > self.train_size or phase.updates == 0:
                    out[name] = (
                        f"{_title(self, name)}: would reach a batch of {phase.batch_size} in "
                        f"epochs {phase.start_epoch}-{phase.end_epoch}, more than the "
                        f"{self.train_size} examples; set b_max (at most {self.train_size}) "
                        "to see it"
                    )
                    break
        return out

    def base(self) -> BaseSchedule:
        """The base schedule: how the noise scale falls, whatever realizes the fall."""
        return BaseSchedule(
            epochs=self.epochs,
            shape=self.shape,
            milestones=self.milestones,
            factor=self.factor,
            warmup_epochs=self.warmup_epochs,
            min_multiplier=self.min_multiplier,
        )

    def plan(self, realization: str) -> Plan:
        """One realization ('lr', 'hybrid' or 'batch') of the recipe."""
        return realize(
            self.base(),
            lr=self.start_lr,
            batch_size=self.start_batch,
            momentum=self.start_momentum,
            train_size=self.train_size,
            realization=realization,  # type: ignore[arg-type]
            batch_drops=self.batch_drops if realization == "hybrid" else 0,
            b_max=self.b_max,
            ghost=self.ghost,
            drop_last=self.drop_last,
        )

    def plans(self) -> dict[str, Plan]:
        """Every realization of the recipe, by name."""
        return {name: self.plan(name) for name in self.realizations}


_FIELDS = {f.name: f for f in fields(Recipe)}
_REQUIRED = ("epochs", "train_size", "batch_size", "lr")


def load_recipe_file(path: Path) -> dict[str, Any]:
    """The values of a recipe YAML file (a flat mapping of Recipe fields), unchecked."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"recipe: {path}: no such file; give a recipe YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"recipe: {path}: cannot read it ({exc}); give a YAML file") from None
    data = plain(parse_yaml(text, f"recipe: {path}"))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"recipe: {path}: must be a mapping of recipe keys (epochs: 200, ...)")
    return data


def make_recipe(values: dict[str, Any]) -> Recipe:
    """Check `values` (recipe field -> value) and build the Recipe; UserError on any mistake."""
    for key in values:
        if key not in _FIELDS:
            raise UserError(
                f"{key}: not a recipe key; use one of {', '.join(_FIELDS)} (or remove it)"
            )
    for key in _REQUIRED:
        if values.get(key) is None:
            flag = "--" + key.replace("_", "-")
            raise UserError(f"{key}: missing; give {flag} or set {key}: in the recipe file")
    clean = {k: _coerce(k, v) for k, v in values.items() if v is not None}
    try:
        recipe = Recipe(**clean)
    except TypeError as exc:  # a wrong literal value slipped through _coerce
        raise UserError(f"recipe: {exc}") from None
    _check(recipe)
    return recipe


def _coerce(key: str, value: Any) -> Any:
    # YAML and flags give strings, ints and floats; each field gets its type or a clear error.
    if key in ("epochs", "train_size", "batch_size", "warmup_epochs", "b_max", "batch_drops",
               "ghost_batch_size"):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise UserError(f"{key}: {value!r} is not a whole number; write e.g. {key}: 128")
        return int(value)
    if key in ("lr", "momentum", "factor", "min_multiplier", "new_lr", "new_momentum"):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise UserError(f"{key}: {value!r} is not a number; write e.g. {key}: 0.1")
        try:
            number = float(value)
        except ValueError:
            raise UserError(f"{key}: {value!r} is not a number; write e.g. {key}: 0.1") from None
        if not math.isfinite(number):
            raise UserError(f"{key}: {value!r} is not finite; give a finite number such as 0.1")
        return number
    if key == "milestones":
        items = value if isinstance(value, list | tuple) else re.split(r"[,\s]+", str(value))
        try:
            return tuple(int(m) for m in items if str(m).strip() != "")
        except ValueError:
            raise UserError(
                f"milestones: {value!r} must be whole epochs, e.g. [60, 120, 160]"
            ) from None
    if key == "drop_last":
        if not isinstance(value, bool):
            raise UserError(f"drop_last: {value!r} must be true or false")
        return value
    choices = {"shape": ("step", "cosine"), "dataset": tuple(MODELS)}[key]
    if value not in choices:
        raise UserError(f"{key}: {value!r} is not one of {', '.join(choices)}; pick one")
    return value


def _check(r: Recipe) -> None:
    """Cross-field checks, each naming the field to change."""
    if r.epochs < 1:
        raise UserError(f"epochs: {r.epochs} must be at least 1")
    if r.train_size < 1:
        raise UserError(f"train_size: {r.train_size} must be at least 1 (examples per epoch)")
    if r.batch_size < 1:
        raise UserError(f"batch_size: {r.batch_size} must be at least 1")
    if r.batch_size > r.train_size:
        raise UserError(
            f"batch_size: {r.batch_size} exceeds train_size {r.train_size}; "
            f"use at most {r.train_size}"
        )
    for key in ("lr", "new_lr"):
        value = getattr(r, key)
        if value is not None and value <= 0:
            raise UserError(f"{key}: {value:g} must be > 0 (per optimizer step)")
    for key in ("momentum", "new_momentum"):
        value = getattr(r, key)
        if value is not None and not 0 <= value < 1:
            raise UserError(f"{key}: {value:g} must be in [0, 1), e.g. 0.9")
    if r.new_momentum is not None and r.momentum == 0:
        raise UserError(
            "new_momentum: the recipe has no momentum to raise; set momentum (e.g. 0.9) first"
        )
    if r.shape == "step":
        if r.factor <= 1:
            raise UserError(
                f"factor: {r.factor:g} must be > 1 (how much the noise scale drops at each "
                "milestone, e.g. 5 or 10)"
            )
        ms = list(r.milestones)
        if ms != sorted(set(ms)) or (ms and (ms[0] <= 0 or ms[-1] >= r.epochs)):
            raise UserError(
                f"milestones: {ms} must be strictly increasing epochs between 1 and {r.epochs - 1}"
            )
        if not 0 <= r.batch_drops <= len(ms):
            raise UserError(
                f"batch_drops: {r.batch_drops} must be between 0 and the {len(ms)} milestones"
            )
    else:
        if r.milestones:
            raise UserError("milestones: only a step shape has milestones; remove them")
        if not 0 <= r.min_multiplier < 1:
            raise UserError(f"min_multiplier: {r.min_multiplier:g} must be in [0, 1)")
    if not 0 <= r.warmup_epochs < r.epochs:
        raise UserError(f"warmup_epochs: {r.warmup_epochs} must be in [0, {r.epochs})")
    exact = scaled_batch_size(r.batch_size, r.lr, r.momentum, r.start_lr, r.start_momentum)
    which = "new_lr" if r.new_lr is not None else "new_momentum"
    if not math.isclose(exact, round(exact), rel_tol=1e-9):
        raise UserError(
            f"{which}: the scaling rule gives an initial batch of {exact:g} examples; pick a "
            "value that makes it a whole number"
        )
    start = round(exact)
    if start > r.train_size:
        raise UserError(
            f"{which}: the scaling rule gives an initial batch of {start}, more than "
            f"train_size {r.train_size}; lower it"
        )
    if r.ghost_batch_size is not None and (r.ghost_batch_size < 1 or start % r.ghost):
        raise UserError(
            f"ghost_batch_size: {r.ghost_batch_size} must divide the initial batch {start}"
        )
    if r.b_max is not None:
        if r.b_max < start:
            raise UserError(
                f"b_max: {r.b_max} is below the initial batch size {start}; raise it to at "
                f"least {start} or remove it"
            )
        if r.b_max > r.train_size:
            raise UserError(f"b_max: {r.b_max} exceeds train_size {r.train_size}; lower it")
        if r.b_max % r.ghost:
            down = r.b_max // r.ghost * r.ghost
            raise UserError(
                f"b_max: {r.b_max} is not a multiple of the ghost batch size {r.ghost}; "
                f"use {down} (or set ghost_batch_size)"
            )


# ---------------------------------------------------------------------------------------------
# Output


def _title(r: Recipe, name: str) -> str:
    if name == "hybrid":
        return f"hybrid ({r.batch_drops} batch drop{'s' if r.batch_drops != 1 else ''})"
    return {"lr": "decaying lr", "batch": "increasing batch"}[name]


def side_by_side(r: Recipe) -> str:
    """The realizations as one text table: a row per stretch of epochs in which none changes,
    per realization lr, B, momentum, noise scale g and optimizer steps; then the totals."""
    plans = r.plans()
    cuts = sorted({p.start_epoch for plan in plans.values() for p in plan.phases} | {r.epochs})
    cols = ("lr", "B", "m", "g", "updates")
    widths = (9, 7, 6, 9, 8)
    block = sum(widths) + len(widths) - 1
    lines = [_describe(r), ""]
    lines.append(f"{'':>9} | " + " | ".join(f"{_title(r, n):<{block}}" for n in plans))
    lines.append(
        f"{'epochs':>9} | "
        + " | ".join(" ".join(f"{c:>{w}}" for c, w in zip(cols, widths)) for _ in plans)
    )
    lines.append("-" * len(lines[-1]))
    for start, end in itertools.pairwise(cuts):
        cells = []
        for plan in plans.values():
            p = plan.phase_at(start)
            steps = _per_epoch(r.train_size, p.batch_size, r.drop_last) * (end - start)
            values = (f"{p.lr:.4g}", str(p.batch_size), f"{p.momentum:g}",
                      f"{p.noise_scale:.4g}", str(steps))  # fmt: skip
            cells.append(" ".join(f"{v:>{w}}" for v, w in zip(values, widths)))
        lines.append(f"{f'{start}-{end}':>9} | " + " | ".join(cells))
    lines.append("-" * len(lines[-2]))
    base = plans["lr"].updates
    totals = [
        f"{plan.updates:>{block - 9}} ({plan.updates / base:4.2f}x)" for plan in plans.values()
    ]
    lines.append(f"{'updates':>9} | " + " | ".join(totals))
    lines += [f"not shown: {why}" for why in r.infeasible().values()]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _describe(r: Recipe) -> str:
    if r.shape == "step":
        shape = f"step, g / {r.factor:g} at epochs {list(r.milestones)}"
    else:
        shape = f"cosine to {r.min_multiplier:g}"
    if r.warmup_epochs:
        shape += f", {r.warmup_epochs} warm-up epochs"
    text = (
        f"recipe: N = {r.train_size} examples, {r.epochs} epochs, {shape}; "
        f"lr {r.lr:g}, momentum {r.momentum:g}, B {r.batch_size}"
    )
    start = f"start: lr {r.start_lr:g}, momentum {r.start_momentum:g}, B {r.start_batch}"
    rules = [
        rule
        for rule, used in (
            ("B ∝ lr", r.new_lr is not None),
            ("B ∝ 1/(1-m)", r.new_momentum is not None),
        )
        if used
    ]
    if rules:
        start += f" ({' and '.join(rules)})"
    start += f"; b_max {r.b_max if r.b_max is not None else 'none'}; ghost batch {r.ghost}; "
    start += "partial batch dropped" if r.drop_last else "partial batch kept"
    return f"{text}\n{start}"


def suite_yaml(r: Recipe, name: str) -> str:
    """A suite that `harness plan` / `harness run` accept, holding the recipe's realizations.

    The optimizer keeps the recipe's own lr and momentum; a new lr or momentum is stated in
    `schedule:` so the suite's scaling rule, not this module, derives the initial batch.
    """
    dataset = r.dataset_name
    if dataset == "synthetic":
        data = f"{{name: synthetic, train_size: {r.train_size}, test_size: 1000}}"
    elif r.train_size == KNOWN_SIZES[dataset]:
        data = f"{{name: {dataset}}}"
    else:
        data = f"{{name: {dataset}, train_size: {r.train_size}}}  # its first examples"
    kind = "momentum" if r.momentum > 0 else "sgd"
    optimizer = f"{{kind: {kind}, lr: {r.lr!r}" + (
        f", momentum: {r.momentum!r}}}" if r.momentum > 0 else "}"
    )
    schedule = [f"epochs: {r.epochs}", f"shape: {r.shape}"]
    if r.shape == "step":
        schedule += [f"milestones: {list(r.milestones)}", f"factor: {r.factor!r}"]
    else:
        schedule.append(f"min_multiplier: {r.min_multiplier!r}")
    schedule += [f"warmup_epochs: {r.warmup_epochs}", f"batch_size: {r.batch_size}"]
    if r.new_lr is not None:
        schedule.append(f"lr: {r.new_lr!r}  # B follows B ∝ lr: {r.start_batch}")
    if r.new_momentum is not None:
        schedule.append(f"momentum: {r.new_momentum!r}  # B ∝ 1/(1-m): {r.start_batch}")
    if r.b_max is not None:
        schedule.append(f"b_max: {r.b_max}")
    entries = {
        "lr": "{realization: lr}",
        "hybrid": f"{{realization: hybrid, batch_drops: {r.batch_drops}}}",
        "batch": "{realization: batch}",
    }
    names = [SCHEDULE_NAMES[n] for n in r.realizations]
    out = [
        "# Written by `harness convert`; check it with `harness plan` on this file.",
        "# Units: lr per optimizer step on the mean loss of a batch; batch sizes in examples.",
        f"name: {name}",
        "description: "
        + json.dumps(
            f"The lr recipe {r.lr:g} / B {r.batch_size} realized as "
            + ", ".join(_title(r, n) for n in r.realizations)
        ),
        "",
        f"dataset: {data}",
        "",
        "models:",
        f"  model: {MODELS[dataset]}  # replace with your model",
        "",
        "optimizers:",
        f"  recipe: {optimizer}",
        "",
        "schedule:",
        *(f"  {line}" for line in schedule),
        "",
        "schedules:",
        *(f"  {SCHEDULE_NAMES[n]}: {entries[n]}" for n in r.realizations),
        "",
        "training:",
        f"  ghost_batch_size: {r.ghost}",
        f"  drop_last: {'true' if r.drop_last else 'false'}",
        "",
        "experiments:",
        "  - name: converted",
        "    optimizers: [recipe]",
        f"    schedules: [{', '.join(names)}]",
        "    seeds: [0]",
    ]
    return "\n".join(out) + "\n"


def suite_name(path: Path) -> str:
    """A suite name from an output file name: its stem, with odd characters as '-'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip("-") or "converted"
