"""Users' own models (a suite's `factory:`), imported and built once before anything trains."""

from __future__ import annotations

from typing import Any

import torch

from harness.app import jobs
from harness.app.console import RunConsole
from harness.config.suite import Cell, Suite
from harness.models.factory import FactoryError, build_factory_model, load_factory
from harness.results.provenance import source_version


def check_factories(
    suite: Suite, cells: tuple[Cell, ...], say: RunConsole | None
) -> dict[str, dict[str, Any]]:
    """Each user's model (`factory:`) of `cells` imported and built once, before training:
    a bad one is the whole run's error (`FILE:LINE: models.NAME.factory: ...`, exit 2), a good
    one gets its note (what ghost batch norm changed) and its provenance for the rows."""
    seen: dict[str, dict[str, Any]] = {}
    for cell in cells:
        ref = jobs.model_config(cell).factory
        if ref is None or cell.model_name in seen:
            continue
        ghost = cell.training.ghost_batch_size
        try:
            _, source = load_factory(ref)
            with torch.random.fork_rng(devices=[]):
                _, conversion = build_factory_model(
                    ref, num_classes=cell.dataset.num_classes, ghost_size=ghost
                )
        except FactoryError as exc:
            raise suite.error(("models", cell.model_name, "factory"), str(exc)) from None
        seen[cell.model_name] = source_version(source)
        if say is not None:
            say.line(f"model {cell.model_name}: {ref.target}: {conversion.note(ghost)}")
    return seen
