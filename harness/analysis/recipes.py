"""Recipes: what a run row trained, less its seed, so that seeds pool only within one recipe.

A cell's id hashes its resolved configuration (dataset, model, optimizer, schedule, training
and seed; `harness.config.suite.Cell.resolved_config`), and every run row carries that
configuration as JSON in `config`. The *recipe key* hashes the same configuration without the
seed: two rows are seeds of one recipe exactly when their keys are equal. Labels (experiment,
optimizer, schedule, model) are only the names a suite gives: change a value in the suite and
rerun into the same folder, and the new rows carry the old labels with another recipe. Those
must be shown apart, never counted as more seeds. Provenance (commit, host, device, execution
settings such as micro-batch or world size) is not in the configuration, so rows of one
recipe from two machines still pool.

A row whose configuration is missing or not JSON gets the key `UNRECORDED`: such rows pool
with each other as they did before recipes were compared.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

UNRECORDED = "unrecorded"
# A label group: rows with these equal are one line of the report, seeds pooled.
LABELS = ["suite", "experiment", "optimizer", "schedule", "model"]
_SHOWN_FIELDS = 2  # fields named in a schedule's tag; more are counted


def recipe_config(config: object) -> dict[str, Any] | None:
    """The resolved configuration less its seed, or None if it is missing or not JSON."""
    if isinstance(config, Mapping):
        parsed: object = dict(config)
    elif isinstance(config, str):
        try:
            parsed = json.loads(config)
        except json.JSONDecodeError:
            return None
    else:
        return None
    if not isinstance(parsed, dict):
        return None
    return {k: v for k, v in parsed.items() if k != "seed"}


def recipe_key(config: object) -> str:
    """12 hex digits of the configuration less its seed (hashed as the cell id is)."""
    recipe = recipe_config(config)
    if recipe is None:
        return UNRECORDED
    blob = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _flatten(value: object, prefix: str, out: dict[str, object]) -> None:
    if isinstance(value, Mapping):  # an empty mapping has no fields: {} equals absent
        for key in sorted(value, key=str):
            _flatten(value[key], f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


_ABSENT = object()


def _show(value: object) -> str:
    if value is _ABSENT:
        return "(absent)"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def differences(configs: Sequence[Mapping[str, Any] | None]) -> list[tuple[str, list[str]]]:
    """The dotted fields whose values are not all equal across `configs`, with each
    configuration's value as text ("(absent)" where it lacks the field), in field order.

    An unrecorded configuration (None) differs as a whole: ("config", [..., "not recorded"]).
    """
    if any(c is None for c in configs):
        return [("config", ["recorded" if c is not None else "not recorded" for c in configs])]
    flat: list[dict[str, object]] = []
    for config in configs:
        fields: dict[str, object] = {}
        _flatten(config, "", fields)
        flat.append(fields)
    paths = sorted({p for f in flat for p in f})
    out = []
    for path in paths:
        values = [_show(f.get(path, _ABSENT)) for f in flat]
        if len(set(values)) > 1:
            out.append((path, values))
    return out


def describe(diffs: Sequence[tuple[str, Sequence[str]]]) -> str:
    """ "optimizer.lr 0.05 vs 0.06, schedule.lr 0.05 vs 0.06"."""
    return ", ".join(f"{path} {' vs '.join(values)}" for path, values in diffs)


def tag(diffs: Sequence[tuple[str, Sequence[str]]], i: int) -> str:
    """Configuration i's values of the differing fields: "optimizer.lr 0.05, +1 more"."""
    shown = [f"{path} {values[i]}" for path, values in diffs[:_SHOWN_FIELDS]]
    if len(diffs) > _SHOWN_FIELDS:
        shown.append(f"+{len(diffs) - _SHOWN_FIELDS} more")
    return ", ".join(shown)


class RecipeClashWarning(UserWarning):
    """Rows of several recipes under one label group; the message is `Clash.line()`."""


@dataclass(frozen=True)
class Clash:
    """Rows of several recipes under one label group (oldest recipe first)."""

    suite: str
    experiment: str
    optimizer: str
    schedule: str
    model: str
    recipes: int
    difference: str  # describe(): "optimizer.lr 0.05 vs 0.06"

    @property
    def group(self) -> tuple[str, str, str, str]:
        """The equivalence group (suite, experiment, optimizer, model) it belongs to."""
        return (self.suite, self.experiment, self.optimizer, self.model)

    @property
    def name(self) -> str:
        return f"{self.suite}/{self.experiment}/{self.optimizer}/{self.schedule} ({self.model})"

    def line(self) -> str:
        return (
            f"{self.name}: rows of {self.recipes} recipes under one label ({self.difference}); "
            "shown apart, not pooled as seeds"
        )


def mark_recipes(views: pd.DataFrame) -> tuple[pd.DataFrame, tuple[Clash, ...]]:
    """`views` (one row per cell and label) grouped by recipe, and the clashes found.

    Adds a `recipe` column. Keeps one row per (label group, recipe, seed): the newest by
    `finished_at` (an original row over its alias copy on a tie), so each seed counts once.
    Where a label group holds several recipes, each recipe's `schedule` becomes
    "name (field value, ...)", naming the fields in which the recipes differ, so every view
    that groups by schedule (summary, figures) shows them apart; `Clash` says which.
    """
    if views.empty:
        return views.assign(recipe=pd.Series(dtype=object)), ()
    configs = views["config"] if "config" in views else pd.Series(None, index=views.index)
    views = views.assign(recipe=[recipe_key(c) for c in configs])
    if "finished_at" not in views:  # frames built by hand; every row then ties
        views = views.assign(finished_at=pd.Series(pd.NaT, index=views.index))
    original = ~views["is_alias"] if "is_alias" in views else True
    ordered = views.assign(_original=original).sort_values(
        ["finished_at", "_original"], kind="stable", na_position="first"
    )
    views = (
        ordered.drop_duplicates([*LABELS, "recipe", "seed"], keep="last")
        .sort_index()
        .drop(columns="_original")
    )
    clashes = []
    schedules = views["schedule"].astype(object).copy()
    counts = views.groupby(LABELS, sort=False, dropna=False)["recipe"].transform("nunique")
    for key, group in views[counts > 1].groupby(LABELS, sort=True, dropna=False):
        first = group.groupby("recipe")["finished_at"].min().sort_values(kind="stable")
        keys = list(first.index)
        chosen = [recipe_config(group.loc[group["recipe"] == k, "config"].iloc[0]) for k in keys]
        diffs = differences(chosen)
        for i, k in enumerate(keys):
            rows = group.index[group["recipe"] == k]
            schedules.loc[rows] = f"{key[3]} ({tag(diffs, i)})"
        suite, experiment, optimizer, schedule, model = (str(part) for part in key)
        clashes.append(
            Clash(suite, experiment, optimizer, schedule, model, len(keys), describe(diffs))
        )
    return views.assign(schedule=schedules), tuple(clashes)


@dataclass(frozen=True)
class Stale:
    """Rows of a folder under the labels of a suite's cell but of another recipe."""

    name: str  # suite/experiment/optimizer/schedule (model)
    rows: int
    difference: str  # the folder's recipes against the suite's: "optimizer.lr 0.05 vs 0.06"


def other_recipes(
    views: pd.DataFrame, current: Mapping[tuple[str, str, str, str, str], Mapping[str, Any]]
) -> list[Stale]:
    """Per label group of `current` (LABELS -> the suite's resolved configuration, seed or
    not), the rows of `views` under those labels whose recipe is another, oldest first."""
    if views.empty:
        return []
    configs = views["config"] if "config" in views else pd.Series(None, index=views.index)
    keyed = views.assign(recipe=[recipe_key(c) for c in configs])
    out = []
    for key, group in keyed.groupby(LABELS, sort=True, dropna=False):
        suite, experiment, optimizer, schedule, model = (str(part) for part in key)
        mine = current.get((suite, experiment, optimizer, schedule, model))
        if mine is None:
            continue
        others = group[group["recipe"] != recipe_key(mine)]
        if others.empty:
            continue
        seen = others.sort_values("finished_at", kind="stable").drop_duplicates("recipe")
        diffs = differences([*(recipe_config(c) for c in seen["config"]), recipe_config(mine)])
        name = f"{suite}/{experiment}/{optimizer}/{schedule} ({model})"
        out.append(Stale(name, len(others), describe(diffs)))
    return out


def stale_line(stale: Iterable[Stale], folder: object, suite_file: object) -> str | None:
    """One line for `harness run`: how many rows of other recipes the folder keeps, or None."""
    stale = list(stale)
    if not stale:
        return None
    rows = sum(s.rows for s in stale)
    first = stale[0]
    where = "one of this suite's labels" if len(stale) == 1 else f"{len(stale)} of its labels"
    return (
        f"note: {folder} holds {rows} row(s) of other recipes under {where} "
        f"({first.name}: {first.difference}, the last the suite's now); they are kept, "
        f"and `harness report {suite_file}` leaves them out of the tables"
    )
