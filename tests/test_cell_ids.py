"""Cell ids stay the same as the suite schema grows (harness.config.suite.ID_FIELDS).

A cell id is the hash of its resolved configuration; committed rows and baselines are keyed by
it. The rule: each part hashes its original fields always and any later field only off its
default. These tests fail when a model gains a field the rule cannot keep out of old ids (one
without a default), and when a committed row's id is not the one its suite gives today.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydantic import Field

from harness.config import suite as suite_module
from harness.config.schema import TrainingSpec
from harness.config.suite import ID_FIELDS, id_fields, load_suite
from tests.conftest import REPO, SUITES

# Results folders whose every row is a cell of the suite of the same name, as it is today.
WHOLE = ("smoke", "cifar-cpu", "adaptive-cpu", "noise-sweep")


def test_every_field_added_since_ids_were_fixed_has_a_default() -> None:
    for model, original in ID_FIELDS.items():
        assert original <= set(model.model_fields), model.__name__
        for name, field in model.model_fields.items():
            if name not in original:
                assert not field.is_required(), (
                    f"{model.__name__}.{name} has no default: every existing cell id would "
                    "change; give it a default (the id leaves it out there)"
                )


def test_a_new_field_at_its_default_leaves_the_id_and_off_it_makes_another_cell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Grown(TrainingSpec):
        label_smoothing: float = Field(default=0.0, ge=0)

    monkeypatch.setitem(ID_FIELDS, Grown, ID_FIELDS[TrainingSpec])
    assert id_fields(Grown()) == id_fields(TrainingSpec())
    assert id_fields(Grown(label_smoothing=0.1))["label_smoothing"] == 0.1


def _rows(folder: Path) -> list[tuple[str, str]]:
    return [
        (t.column("cell_id")[0].as_py(), t.column("config")[0].as_py())
        for t in (pq.read_table(f, columns=["cell_id", "config"]) for f in folder.glob("*.parquet"))
    ]


@pytest.mark.parametrize("name", WHOLE)
def test_committed_rows_keep_the_ids_their_suites_give(name: str) -> None:
    ids = {c.cell_id for c in load_suite(SUITES / f"{name}.yaml").cells}
    rows = _rows(REPO / "results" / name / "runs")
    assert rows and {cell for cell, _ in rows} <= ids


def test_every_committed_row_hashes_its_stored_config_to_its_id() -> None:
    rows = [r for folder in (REPO / "results").glob("**/runs") for r in _rows(folder)]
    assert len(rows) > 50
    for cell, config in rows:
        blob = json.dumps(json.loads(config), sort_keys=True, separators=(",", ":"))
        assert hashlib.sha256(blob.encode()).hexdigest()[:12] == cell


def test_the_id_rule_is_the_only_dump_the_cell_id_reads() -> None:
    source = Path(suite_module.__file__).read_text()
    body = source.split("def resolved_config", 1)[1].split("def cell_id", 1)[0]
    assert "model_dump" not in body  # every part goes through id_fields
