"""`harness convert`: an lr recipe in, its lr / hybrid / increasing-batch realizations out.

This module owns what is particular to converting a reader's own recipe: the recipe keys
(as flags or a flat YAML file), the default ghost batch size, the side-by-side table, and the
suite YAML that lets `harness plan` and `harness run` take the realizations over. Every rule
of the schedules themselves (ranges, milestones, scaling rules, caps, the ghost multiple, a
batch beyond the training set) is `harness.core.schedule_request.resolve_schedule`'s, the same
code a suite goes through: each realization is one `ScheduleRequest`, and a broken rule comes
back as `error: KEY: how to fix`, KEY being the recipe key (the flag without its dashes).
The suite it writes states the recipe and the scaling rules in the suite's own terms, so
`harness plan FILE` recomputes the same plans independently. No torch here.

Not split: the recipe's keys, its side-by-side table and the suite it writes are one
command's three views of one `Recipe`; every rule of the schedules is already core's.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from harness.config.yamlfile import MAX_SUITE_BYTES, parse_yaml, plain, read_regular
from harness.core.datasets import DATASETS
from harness.core.factory_spec import factory_problem
from harness.core.realizations import (
    REFERENCE,
    RealizationKind,
    realization_kind,
    realization_names,
)
from harness.core.schedule import Plan, Realization, ScheduleError, updates_per_epoch
from harness.core.schedule_request import ResolvedSchedule, ScheduleRequest, resolve_schedule
from harness.errors import UserError
from harness.fsio import atomic_path

# The models a converted suite can name: the registry's image models (harness.models.registry
# .MODELS with channels, kept equal by a test; this module imports no torch; a converted recipe
# is an image recipe), each with the parameters it is written with.
MODEL_ENTRIES = {
    "small_cnn": "{name: small_cnn}",
    "wrn": "{name: wrn, depth: 16, width: 4}",  # WRN-16-4, the paper's CIFAR-10 model
    "inception_resnet_v2": "{name: inception_resnet_v2}",  # the paper's ImageNet model
    "resnet50": "{name: resnet50}",
}
DEFAULT_GHOST = 128  # the paper's ghost batch size on CIFAR-10
B_MAX_SHARE = 10  # Sec 5.2: B_max ~ N/10; beyond it the increasing batch stops paying
G_DRIFT = 0.05  # a realization's g may differ from the lr realization's by this share


def datasets() -> list[str]:
    """The dataset kinds a converted suite can name: those a suite names with their sizes
    alone (harness.core.datasets); any other size is written as a synthetic dataset."""
    return [kind.name for kind in DATASETS.values() if kind.sized_only]


@dataclass(frozen=True)
class Recipe:
    """An lr recipe, in the units of the paper: lr per optimizer step on the mean loss of a
    batch of `batch_size` examples, epochs as passes over `train_size` examples.

    `new_lr` / `new_momentum` raise the initial lr or momentum and let the initial batch
    follow the scaling rules B ∝ lr and B ∝ 1/(1-m); `b_max` caps the batch (the lr takes the
    rest of each drop); `batch_drops` is how many drops the hybrid makes with the batch.
    Build it with `make_recipe`, which checks it; the plans are computed once, on first use.
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
    dataset: str | None = None  # one of `datasets()`
    model: str | None = None  # a registry name; needed to write a suite

    def request(self, realization: Realization, ghost: int, *, scaled: bool) -> ScheduleRequest:
        """The core's request for one realization; `scaled=False` leaves out the new lr and
        momentum and the cap, to check the recipe's own numbers first."""
        return ScheduleRequest(
            base_lr=self.lr,
            base_momentum=self.momentum or None,  # 0: plain SGD, whose momentum cannot change
            base_batch_size=self.batch_size,
            train_size=self.train_size,
            epochs=self.epochs,
            shape=self.shape,
            milestones=self.milestones,
            factor=self.factor,
            warmup_epochs=self.warmup_epochs,
            min_multiplier=self.min_multiplier,
            realization=realization,
            batch_drops=(
                self.batch_drops if "batch_drops" in realization_kind(realization).takes else None
            ),
            b_max=self.b_max if scaled else None,
            lr=self.new_lr if scaled else None,
            momentum=self.new_momentum if scaled else None,
            ghost=ghost,
            drop_last=self.drop_last,
        )

    @cached_property
    def start(self) -> ResolvedSchedule:
        """The lr realization with the scaling rules applied: the initial lr, momentum and B."""
        return _resolve(self, self.request(REFERENCE, self.ghost_batch_size or 1, scaled=True))

    @property
    def start_batch(self) -> int:
        """The initial batch: `batch_size`, scaled by the rules when lr or momentum change."""
        return self.start.batch_size

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
        """The suite's dataset: as given, else the first kind of exactly N training examples
        (CIFAR-10, ImageNet), else a subset of CIFAR-10, else synthetic."""
        if self.dataset is not None:
            return self.dataset
        for name in datasets():
            if DATASETS[name].train_size == self.train_size:
                return name
        cifar10 = DATASETS["cifar10"].train_size
        return "cifar10" if cifar10 and self.train_size <= cifar10 else "synthetic"

    @cached_property
    def outcomes(self) -> dict[str, Plan | str]:
        """Each planned realization's plan, or why it cannot be shown: a batch that would
        outgrow the training set with no `b_max`. Those that need a step shape (the hybrid)
        are shown for a step shape with milestones."""
        steps = self.shape == "step" and bool(self.milestones)
        names = [n for n in realization_names(planned=True) if steps or not _kind(n).step_shape]
        out: dict[str, Plan | str] = {}
        for name in names:
            request = self.request(name, self.ghost, scaled=True)
            try:
                out[name] = resolve_schedule(request).plan
            except ScheduleError as exc:
                if exc.field != "b_max" or self.b_max is not None:
                    raise _user_error(exc, self, scaled=True) from None
                out[name] = f"{_title(self, name)}: {exc.message}"
        return out

    @property
    def realizations(self) -> tuple[str, ...]:
        """The realizations shown: lr, hybrid (step shapes with milestones) and batch, less
        any whose batch would outgrow the training set (see `infeasible`)."""
        return tuple(n for n, got in self.outcomes.items() if isinstance(got, Plan))

    def infeasible(self) -> dict[str, str]:
        """Realizations whose batch would exceed `train_size`, each with how to get it."""
        return {n: got for n, got in self.outcomes.items() if isinstance(got, str)}

    def plan(self, realization: str) -> Plan:
        """One realization ('lr', 'hybrid' or 'batch') of the recipe; UserError if not shown."""
        got = self.outcomes.get(realization, f"{realization}: not a realization of this recipe")
        if isinstance(got, str):
            raise UserError(got)
        return got

    def plans(self) -> dict[str, Plan]:
        """Every realization shown, by name."""
        return {n: got for n, got in self.outcomes.items() if isinstance(got, Plan)}


def _resolve(recipe: Recipe, request: ScheduleRequest) -> ResolvedSchedule:
    try:
        return resolve_schedule(request)
    except ScheduleError as exc:
        raise _user_error(
            exc, recipe, scaled=request.lr is not None or request.momentum is not None
        ) from None


def _user_error(exc: ScheduleError, recipe: Recipe, *, scaled: bool) -> UserError:
    """The core's error under the recipe key that set the offending value."""
    key = "ghost_batch_size" if exc.field == "ghost" else exc.field
    if scaled:
        # With a new lr or momentum the request's lr, momentum and B0 are those new values.
        rule = "new_lr" if recipe.new_lr is not None else "new_momentum"
        renamed = {"lr": "new_lr", "momentum": "new_momentum", "batch_size": rule}
        if key in renamed and getattr(recipe, renamed[key]) is not None:
            key = renamed[key]
    return UserError(f"{key}: {exc.message}")


_FIELDS = {f.name: f for f in fields(Recipe)}
_REQUIRED = ("epochs", "train_size", "batch_size", "lr")
_WHOLE = ("epochs", "train_size", "batch_size", "warmup_epochs", "b_max", "batch_drops",
          "ghost_batch_size")  # fmt: skip
_NUMBER = ("lr", "momentum", "factor", "min_multiplier", "new_lr", "new_momentum")


def load_recipe_file(path: Path) -> dict[str, Any]:
    """The values of a recipe YAML file (a flat mapping of Recipe fields), unchecked."""
    try:
        raw = read_regular(path, MAX_SUITE_BYTES + 1, "a recipe YAML file")
    except UserError as exc:
        raise UserError(f"recipe: {exc}") from None
    if len(raw) > MAX_SUITE_BYTES:
        raise UserError(f"recipe: {path}: larger than 1 MiB; a recipe is a short YAML file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"recipe: {path}: not a text file; give a recipe YAML file") from None
    data = plain(parse_yaml(text, f"recipe: {path}"))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"recipe: {path}: must be a mapping of recipe keys (epochs: 200, ...)")
    return data


def make_recipe(values: dict[str, Any]) -> Recipe:
    """Check `values` (recipe key -> value) by the core's rules and build the Recipe, its
    plans computed; UserError, naming the key, on any mistake."""
    for key in values:
        if key not in _FIELDS:
            raise UserError(
                f"{key}: not a recipe key; use one of {', '.join(_FIELDS)} (or remove it)"
            )
    for key in _REQUIRED:
        if values.get(key) is None:
            flag = "--" + key.replace("_", "-")
            raise UserError(f"{key}: missing; give {flag} or set {key}: in the recipe file")
    recipe = Recipe(**{k: _coerce(k, v) for k, v in values.items() if v is not None})
    _resolve(recipe, recipe.request(REFERENCE, 1, scaled=False))  # the recipe's own numbers
    if recipe.shape == "step" and recipe.milestones and recipe.batch_drops > len(recipe.milestones):
        raise UserError(
            f"batch_drops: {recipe.batch_drops} is more than the {len(recipe.milestones)} "
            "milestones; the hybrid makes at most that many drops by the batch"
        )
    recipe.outcomes  # noqa: B018  (every realization planned: its errors surface here)
    return recipe


def _coerce(key: str, value: Any) -> Any:
    """The value in its key's type (flags and YAML give strings, ints and floats); ranges and
    cross-field rules are left to the core."""
    if key in _WHOLE:
        whole = _whole(value)
        if whole is None:
            raise UserError(f"{key}: {value!r} is not a whole number; write e.g. {key}: 128")
        return whole
    if key in _NUMBER:
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError, OverflowError):
            raise UserError(f"{key}: {value!r} is not a number; write e.g. {key}: 0.1") from None
    if key == "milestones":
        items = value if isinstance(value, list | tuple) else re.split(r"[,\s]+", str(value))
        epochs = [_whole(m) for m in items if str(m).strip()]
        if None in epochs:
            raise UserError(f"milestones: {value!r} must be whole epochs, e.g. [60, 120, 160]")
        return tuple(epochs)
    if key == "drop_last" and not isinstance(value, bool):
        raise UserError(f"drop_last: {value!r} must be true or false")
    if key == "dataset" and value not in datasets():
        raise UserError(f"dataset: {value!r} is not one of {', '.join(datasets())}; pick one")
    if key == "model" and value not in MODEL_ENTRIES:
        if ":" in str(value) and factory_problem(str(value)) is None:
            return value  # the user's own model, "pkg.module:build" or "file.py:build"
        raise UserError(
            f"model: {value!r} is not a model; choose one of {_model_names()}, or name your "
            "own as pkg.module:build or file.py:build (relative to the written suite)"
        )
    return value


def _model_names() -> str:
    return ", ".join(sorted(MODEL_ENTRIES))


def _model_entry(model: str) -> str:
    """The suite's `models:` entry: a registered model, or the user's factory (not imported
    here: `harness run` imports and builds it, and refuses a bad one before training)."""
    if model in MODEL_ENTRIES:
        return MODEL_ENTRIES[model]
    return f"{{factory: {json.dumps(model)}}}"


def warnings_for(r: Recipe) -> list[str]:
    """What the tables show but a reader could miss: a realization whose batch grows past the
    paper's B_max ~ N/10 (Sec 5.2), or one whose noise scale g strays more than 5 % from the
    lr realization's in some epoch (a cap, a rounding or a partial batch)."""
    plans = r.plans()
    out = []
    limit = r.train_size / B_MAX_SHARE
    for name, plan in plans.items() if r.b_max is None else ():
        top = max(p.batch_size for p in plan.phases)
        if top > limit and top > plan.phases[0].batch_size:
            cap = max(r.ghost, int(limit) // r.ghost * r.ghost)
            out.append(
                f"{realization_kind(name).title}: B reaches {top} = {top / r.train_size:.0%} "
                f"of N = {r.train_size}; Sec 5.2 advises B_max ~ N/10 (add --b-max {cap}, the "
                "lr takes the rest of each drop)"
            )
    reference = plans[REFERENCE]
    for name, plan in plans.items():
        if name == REFERENCE:
            continue
        drifted = []
        for epoch in range(r.epochs):
            want = reference.phase_at(epoch).noise_scale
            got = plan.phase_at(epoch).noise_scale
            if want > 0 and abs(got / want - 1) > G_DRIFT:
                drifted.append((epoch, got / want - 1))
        if drifted:
            first, share = max(drifted, key=lambda item: abs(item[1]))
            out.append(
                f"{_title(r, name)}: g differs from decaying lr's by more than "
                f"{G_DRIFT:.0%} in {len(drifted)} epoch(s), most ({share:+.1%}) in epoch "
                f"{first} (0-based); the realizations are not equivalent there"
            )
    return out


def _whole(value: Any) -> int | None:
    """`value` as an int (128, 128.0 or "128"), or None if it is not a whole number."""
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# ---------------------------------------------------------------------------------------------
# Output


def _kind(name: str) -> RealizationKind:
    return realization_kind(name)


def _title(r: Recipe, name: str) -> str:
    kind = _kind(name)
    return kind.titled({field: getattr(r, field) for field in kind.takes})


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
            steps = updates_per_epoch(r.train_size, p.batch_size, r.drop_last) * (end - start)
            values = (f"{p.lr:.4g}", str(p.batch_size), f"{p.momentum:g}",
                      f"{p.noise_scale:.4g}", str(steps))  # fmt: skip
            cells.append(" ".join(f"{v:>{w}}" for v, w in zip(values, widths)))
        lines.append(f"{f'{start}-{end}':>9} | " + " | ".join(cells))
    lines.append("-" * len(lines[-2]))
    base = plans[REFERENCE].updates
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
        shape += f", {r.warmup_epochs} warm-up epochs (an lr ramp at B0 in every realization)"
    text = (
        f"recipe: N = {r.train_size} examples, {r.epochs} epochs, {shape}; "
        f"lr {r.lr:g}, momentum {r.momentum:g}, B {r.batch_size}"
    )
    start = f"start: lr {r.start.lr:g}, momentum {r.start.momentum:g}, B {r.start_batch}"
    rules = ["B ∝ lr"] if r.new_lr is not None else []
    rules += ["B ∝ 1/(1-m)"] if r.new_momentum is not None else []
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
    if r.model is None:
        raise UserError(
            f"model: needed to write a suite; give --model NAME, one of {_model_names()} "
            "(the paper's: wrn, as WRN-16-4, on CIFAR-10; inception_resnet_v2 on ImageNet)"
        )
    dataset = r.dataset_name
    full = DATASETS[dataset].train_size
    if full is None:  # a kind of no fixed size (synthetic) is given both
        data = f"{{name: {dataset}, train_size: {r.train_size}, test_size: 1000}}"
    elif r.train_size == full:
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
    names = [_kind(n).suite_name for n in r.realizations]
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
        f"  model: {_model_entry(r.model)}",
        "",
        "optimizers:",
        f"  recipe: {optimizer}",
        "",
        "schedule:",
        *(f"  {line}" for line in schedule),
        "",
        "schedules:",
        *(f"  {_kind(n).suite_name}: {_entry(r, n)}" for n in r.realizations),
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


def _entry(r: Recipe, name: str) -> str:
    """A schedule entry of the written suite: the realization and its own fields' values."""
    own = "".join(f", {field}: {getattr(r, field)}" for field in _kind(name).takes)
    return f"{{realization: {name}{own}}}"


def suite_name(path: Path) -> str:
    """A suite name from an output file name: its stem, with odd characters as '-'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip("-") or "converted"


def convert_command(recipe: Path | None, flags: dict[str, Any], out: Path | None) -> None:
    """`harness convert`: the flags over the recipe file; the table on stdout, the suite in out."""
    values = load_recipe_file(recipe) if recipe is not None else {}
    values.update({k: v for k, v in flags.items() if v is not None})
    converted = make_recipe(values)
    text = suite_yaml(converted, suite_name(out)) if out is not None else None  # errors first
    sys.stdout.write(side_by_side(converted))
    for line in warnings_for(converted):
        print(f"warning: {line}", file=sys.stderr)
    if out is not None and text is not None:
        with atomic_path(out) as tmp:
            tmp.write_text(text, encoding="utf-8")
        print(f"wrote {out}; see it with `harness plan {out}`", file=sys.stderr)
