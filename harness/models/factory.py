"""A model from the user's own code: a suite's `factory:` (`core.factory_spec`) loaded and built.

This is the one place the harness imports code a suite names, exactly as a Python script that
imported it would; it is only reached by `harness run` (and the commands that train), never
by `plan`, `status` or `report`. Every mistake is a `FactoryError`: one line, for the caller
to put after the suite field (`models.NAME.factory`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from harness.core.factory_spec import ENTRY_POINT_GROUP, FactoryRef, split_target
from harness.errors import UserError
from harness.models.ghost_convert import Conversion, convert


class FactoryError(UserError):
    """The factory could not be imported or did not build an ``nn.Module``: one line."""


def load_factory(ref: FactoryRef) -> tuple[Callable[..., Any], str | None]:
    """The callable `ref` names and the file that defines it (None where Python cannot say)."""
    target = _entry_point(ref.target) if ref.kind == "entry_point" else ref.target
    where, attr = split_target(target)
    module = _load_file(where, ref.base) if where.endswith(".py") else _import(where)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise FactoryError(f"{target!r}: {where} has no attribute {part!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise FactoryError(f"{target!r}: {attr} is a {type(obj).__name__}, not a callable")
    return obj, _source_file(obj, module)


def build_factory_model(
    ref: FactoryRef, *, num_classes: int, ghost_size: int
) -> tuple[nn.Module, Conversion]:
    """``factory(num_classes=..., **kwargs)``, its batch norms made ghost batch norms."""
    build, _ = load_factory(ref)
    try:
        model = build(num_classes=num_classes, **ref.kwargs)
    except Exception as exc:
        message = " ".join(str(exc).split()) or "(no message)"
        raise FactoryError(
            f"{ref.target!r}(num_classes={num_classes}, **kwargs) raised "
            f"{type(exc).__name__}: {message}"
        ) from None
    if not isinstance(model, nn.Module):
        raise FactoryError(
            f"{ref.target!r} returned a {type(model).__name__}, not a torch.nn.Module; "
            "return the model"
        )
    return model, convert(model, ghost_size)


def _entry_point(name: str) -> str:
    registered = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    found = [ep for ep in registered if ep.name == name]
    if not found:
        known = sorted(ep.name for ep in registered)
        listed = ", ".join(known) if known else "none is installed"
        raise FactoryError(
            f"no installed package registers the model {name!r} (entry points "
            f"'{ENTRY_POINT_GROUP}': {listed}); install it, or write 'pkg.module:function'"
        )
    value = found[0].value
    if ":" not in value:
        raise FactoryError(f"entry point {name!r} = {value!r}: write it as 'pkg.module:function'")
    return value


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # the module itself may raise anything while it runs
        message = " ".join(str(exc).split())
        raise FactoryError(
            f"cannot import {name!r} ({type(exc).__name__}: {message}); put its folder on "
            "PYTHONPATH or install it, or name a file: 'path/to/file.py:function'"
        ) from None


def _load_file(where: str, base: str | None) -> Any:
    path = Path(where).expanduser()
    if not path.is_absolute():
        path = Path(base or ".") / path
    path = path.resolve()
    if not path.is_file():
        raise FactoryError(
            f"no file {path} (a .py path is relative to the suite file's folder, {base})"
        )
    name = f"harness_factory_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.append(folder)  # so that the file can import its neighbours
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FactoryError(f"{path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        message = " ".join(str(exc).split())
        raise FactoryError(f"importing {path} raised {type(exc).__name__}: {message}") from None
    return module


def _source_file(obj: Any, module: Any) -> str | None:
    for candidate in (obj, module):
        try:
            found = inspect.getsourcefile(candidate)
        except TypeError:
            continue
        if found:
            return str(Path(found).resolve())
    return None
