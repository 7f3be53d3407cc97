"""Dotted overrides (`--set training.weight_decay=0`) applied to a suite before validation.

An override changes the raw mapping read from the file, so it goes through exactly the same
validation, resolution and cell ids as a value written in the file. The path is checked
against the suite's schema before anything changes: a key that the schema does not have, a
name that the suite does not define or an index past a list's end is refused up front,
naming the override, rather than creating a half-entry that fails somewhere else.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel

from harness.config.schema import SuiteSpec
from harness.config.yamlfile import parse_yaml, plain
from harness.errors import UserError


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[tuple[Any, ...], str]:
    """Apply each `KEY=VALUE` to `data` in place; the path each one set -> its text."""
    applied: dict[tuple[Any, ...], str] = {}
    for text in overrides:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(
                f"--set {text}: expected KEY=VALUE with a dotted key, e.g. "
                "--set training.weight_decay=0 or --set experiments.0.seeds=[0,1,2]"
            )
        value = plain(parse_yaml(raw, f"--set {text}: the value", lines=False))
        where = _set(data, key.split("."), value, text)
        applied[where] = text
    return applied


def _set(data: dict[str, Any], parts: list[str], value: Any, text: str) -> tuple[Any, ...]:
    def refuse(message: str) -> UserError:
        return UserError(f"--set {text}: {message}")

    node: Any = data
    kind: str = "model"
    schema: Any = SuiteSpec
    where: list[Any] = []
    i = 0
    while True:
        here = ".".join(map(str, where)) or "the suite"
        key: Any = parts[i]
        if kind == "model":
            info = schema.model_fields.get(key)
            if info is None:
                keys = ", ".join(schema.model_fields)
                raise refuse(f"{here} has no key '{key}'; keys here: {keys}")
            kind, schema = _kind(info.annotation)
            i += 1
        elif kind == "dict":
            if not isinstance(node, dict):
                raise refuse(f"{here} is not a mapping in the suite file; set it whole")
            # Names may hold dots (e.g. schedule "momentum_0.9"): take the longest defined one.
            j = next((j for j in range(len(parts), i, -1) if ".".join(parts[i:j]) in node), 0)
            if not j:
                raise refuse(
                    f"{here} has no '{key}' (defined: {', '.join(map(str, node))}); an "
                    "override changes what the file defines, so add new entries to the file"
                )
            key = ".".join(parts[i:j])
            kind, schema = _kind(schema)
            i = j
        elif kind == "list":
            if not isinstance(node, list):
                raise refuse(f"{here} is not a list in the suite file; set it whole")
            if not key.isdigit() or int(key) >= len(node):
                raise refuse(f"{here} has {len(node)} entries; use an index in 0..{len(node) - 1}")
            key = int(key)
            kind, schema = _kind(schema)
            i += 1
        else:
            # A free-form mapping (an experiment's training overrides): validation checks it.
            kind, schema = "any", None
            i += 1
        where.append(key)
        if i == len(parts):
            node[key] = value
            return tuple(where)
        child = node[key] if isinstance(node, list) else node.get(key)
        if child is None and kind in ("model", "any") and isinstance(node, dict):
            child = node[key] = {}
        if child is None:
            raise refuse(f"{'.'.join(map(str, where))} is not in the suite file; add it there")
        if not isinstance(child, dict | list):
            raise refuse(f"{'.'.join(map(str, where))} holds a single value; set it whole")
        node = child


def _kind(annotation: Any) -> tuple[str, Any]:
    """What a field holds: a model, a named mapping, a list, or anything ("any")."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _kind(typing.get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "model", annotation
    if origin is dict:
        value = typing.get_args(annotation)[1]
        # dict[str, Any] is free-form (validated later); other dicts hold named entries.
        return ("any", None) if value is Any else ("dict", value)
    if origin in (tuple, list):
        return "list", typing.get_args(annotation)[0]
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            return _kind(inner[0])
    return "any", None
