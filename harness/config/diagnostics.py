"""One line per bad input: `FILE:LINE: field.path: how to fix`, or the `--set` that caused it.

Validation reports a path into the document (pydantic's `loc`, a `FieldError`'s `where`, a
`ScheduleError`'s field under its schedule); this module turns the first such error into a
`UserError` that names where the value came from, so the user can go straight to it.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ValidationError

from harness.config import schema
from harness.config.schema import MODEL_TAGS, FieldError, SuiteSpec
from harness.config.yamlfile import Document
from harness.core.rules import ScheduleError
from harness.errors import UserError

# extra_forbidden from a pydantic model, unexpected_keyword_argument from a dataclass
UNKNOWN_KEY = ("extra_forbidden", "unexpected_keyword_argument")


@dataclass(frozen=True)
class Locator:
    """Where each value of a suite came from: a line of its file, or a `--set` override."""

    document: Document
    overrides: Mapping[tuple[Any, ...], str] = field(default_factory=dict)  # path -> K=V

    def error(self, where: tuple[Any, ...], message: str) -> UserError:
        field_name = ".".join(str(p) for p in where) or "(top level)"
        for length in range(len(where), 0, -1):
            override = self.overrides.get(tuple(where[:length]))
            if override is not None:
                return UserError(
                    f"--set {override} (on {self.document.path}): {field_name}: {message}"
                )
        line = self.document.line_of(where)
        at = f"{self.document.path}:{line}" if line else f"{self.document.path}"
        if self.overrides:
            # The file's value may be fine on its own; say which overrides it met.
            message += f" (with --set {', --set '.join(self.overrides.values())})"
        return UserError(f"{at}: {field_name}: {message}")

    def validation_error(
        self,
        exc: ValidationError,
        prefix: tuple[Any, ...] = (),
        root: type[BaseModel] = SuiteSpec,
    ) -> UserError:
        """The first error of `exc`, raised validating `root` at `prefix` of the document."""
        errors = exc.errors()
        # An unknown key is most often a misspelt one that is then also "missing"
        # (`experiment:` for `experiments:`): name it first, whatever pydantic's order.
        err = next((e for e in errors if e["type"] in UNKNOWN_KEY), errors[0])
        loc, tag = _drop_union_tag(tuple(err["loc"]), root)
        where = (*prefix, *loc)
        kind = err["type"]
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, FieldError):
            inner = (*where, *cause.where)
            if cause.cause is not None:
                # A nested model validated at `inner`; its fields are listed from that model.
                nested = _model_of(cause.cause)
                return self.validation_error(cause.cause, inner, nested or root)
            return self.error(inner, str(cause))
        if isinstance(cause, ScheduleError):  # a core dataclass's own check (core.execution)
            return self.error((*where, cause.field), cause.message)
        if kind in UNKNOWN_KEY:
            model = MODEL_TAGS[tag] if tag else _model_at(root, loc[:-1])
            fields = _fields(model) if model else []
            allowed = ", ".join(fields) or "see the suite documentation"
            close = difflib.get_close_matches(str(where[-1]), fields, n=1)
            meant = f" (did you mean '{close[0]}'?)" if close else ""
            return self.error(
                where, f"unknown key '{where[-1]}'{meant}; allowed keys here: {allowed}"
            )
        if kind == "missing":
            return self.error(where, "required field is missing; add it")
        message = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        if kind not in ("value_error", "model_type") and not isinstance(got, dict | list):
            message += f" (got {got!r})"
        return self.error(where, message)


def _drop_union_tag(loc: tuple[Any, ...], root: type[BaseModel]) -> tuple[tuple[Any, ...], str]:
    """pydantic puts the model's tag in the path (models.NAME.wrn.depth); the file does not."""
    if root is SuiteSpec and len(loc) >= 3 and loc[0] == "models" and loc[2] in MODEL_TAGS:
        return (*loc[:2], *loc[3:]), str(loc[2])
    return loc, ""


def _model_of(exc: ValidationError) -> type[BaseModel] | None:
    model = getattr(schema, exc.title, None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _model_at(model: type[BaseModel], where: tuple[Any, ...]) -> type | None:
    """The pydantic model (or core dataclass) validating the mapping at `where`: its keys."""
    current: Any = model
    for part in where:
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                return None
            current = _unwrap(info.annotation)
        else:
            current = _unwrap(current, part)
    return current if _is_schema(current) else None


def _fields(model: type) -> list[str]:
    if dataclasses.is_dataclass(model):
        return [f.name for f in dataclasses.fields(model)]
    return list(getattr(model, "model_fields", {}))


def _is_schema(value: Any) -> bool:
    """A pydantic model or a dataclass of the core that a suite validates into."""
    return isinstance(value, type) and (
        issubclass(value, BaseModel) or dataclasses.is_dataclass(value)
    )


def _unwrap(annotation: Any, key: Any = None) -> Any:
    """Step through dict / tuple / Optional annotations to the model they hold."""
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
        models = [a for a in args if _is_schema(a)]
        if len(models) == 1:
            return models[0]
    return annotation
