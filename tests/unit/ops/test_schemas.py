"""The checked-in JSON Schemas in ``schemas/`` match the pydantic models of
``worker/core/events.py``."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from tests.clock import TEST_NOW
from worker.core.events import (
    INPUT_EVENT_TYPES,
    OUTPUT_EVENT_TYPES,
    DeadLetter,
    SegmentChanged,
    decode_input,
)
from worker.ops.schemas import (
    INPUT_UNION_FILENAME,
    JSON_SCHEMA_DIALECT,
    SCHEMA_BASE_URI,
    check_schemas,
    export_schemas,
    render,
    schema_documents,
    schema_filename,
)

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas"
HINT = "the event models changed: run `segworker schemas export` and check in schemas/"
#: Files in schemas/ that are not generated.
ALLOWED_EXTRA = {"README.md"}

_T = (TEST_NOW - timedelta(days=3)).isoformat()
INPUT_SAMPLES: list[dict[str, Any]] = [
    {
        "type": "order_placed",
        "event_id": "s-1",
        "occurred_at": _T,
        "account_id": "ACC-00001",
        "contact_id": "ACC-00001-C1",
        "order_id": "ACC-00001-O00001",
        "total": 130.0,
        "lines": [
            {"sku": "TOO-0001", "category": "tools", "quantity": 2, "unit_price": 40.0},
            {"sku": "FAS-0003", "category": "fasteners", "quantity": 100, "unit_price": 0.5},
        ],
        "channel": "edi",
    },
    {
        "type": "order_returned",
        "event_id": "s-2",
        "occurred_at": _T,
        "account_id": "ACC-00001",
        "order_id": "ACC-00001-O00001",
        "amount": 40.0,
        "category": "tools",
    },
    {
        "type": "campaign_interaction",
        "event_id": "s-3",
        "occurred_at": _T,
        "account_id": "ACC-00001",
        "campaign_id": "CMP-0001-newsletter",
        "contact_id": "ACC-00001-C2",
        "contact_role": "decider",
        "kind": "clicked",
    },
    {
        "type": "loyalty_points",
        "event_id": "s-4",
        "occurred_at": _T,
        "account_id": "ACC-00001",
        "kind": "earned",
        "points": 130,
        "reason": "purchase",
        "tier": "silver",
    },
    {
        "type": "account_profile",
        "event_id": "s-5",
        "occurred_at": _T,
        "account_id": "ACC-00001",
        "name": "Beispiel Maschinenbau GmbH",
        "industry": "manufacturing",
        "employees": 420,
        "country": "DE",
    },
]
OUTPUT_SAMPLES: list[BaseModel] = [
    SegmentChanged(
        change_id="c-1",
        account_id="ACC-00001",
        family="value",
        segment_id="A",
        change="entered",
        previous_segment_id="B1",
        reason="trailing-12-month revenue 182000 EUR is above the A cut-off 150000 EUR",
        features={"revenue_12m": 182000.0, "orders_12m": 41},
        occurred_at=TEST_NOW,
        definition_version="1",
        cause="s-1",
    ),
    DeadLetter(
        reason="not JSON",
        error_kind="malformed_json",
        source_topic="orders",
        source_partition=0,
        source_offset=17,
        raw="bm90IGpzb24=",
        received_at=TEST_NOW,
    ),
]


def test_checked_in_schemas_match_models() -> None:
    documents = schema_documents()
    for filename, document in documents.items():
        path = SCHEMA_DIR / filename
        assert path.exists(), f"{path} is missing; {HINT}"
        on_disk = json.loads(path.read_text(encoding="utf-8"))
        assert on_disk == document, f"{path} differs from its model; {HINT}"
        assert path.read_text(encoding="utf-8") == render(document), f"{path} not canonical; {HINT}"
    assert check_schemas(SCHEMA_DIR) == []


def test_no_stray_files_in_schemas_dir() -> None:
    expected = set(schema_documents()) | ALLOWED_EXTRA
    stray = sorted(p.name for p in SCHEMA_DIR.iterdir() if p.name not in expected)
    assert not stray, f"files in schemas/ without a model: {stray}; {HINT} (it removes stale ones)"


def test_one_document_per_model_plus_union() -> None:
    names = {schema_filename(m) for m in (*INPUT_EVENT_TYPES, *OUTPUT_EVENT_TYPES)}
    assert set(schema_documents()) == names | {INPUT_UNION_FILENAME}


def test_documents_have_id_and_dialect_and_required_type() -> None:
    for filename, document in schema_documents().items():
        assert document["$schema"] == JSON_SCHEMA_DIALECT
        assert document["$id"] == SCHEMA_BASE_URI + filename
        if filename != INPUT_UNION_FILENAME:
            assert "type" in document["required"], filename


def test_export_writes_and_cleans(tmp_path: Path) -> None:
    (tmp_path / "renamed_model.schema.json").write_text("{}\n")
    (tmp_path / "notes.txt").write_text("kept\n")
    paths = export_schemas(tmp_path)
    assert sorted(p.name for p in paths) == sorted(schema_documents())
    assert not (tmp_path / "renamed_model.schema.json").exists()
    assert (tmp_path / "notes.txt").exists()
    assert check_schemas(tmp_path) == []
    (tmp_path / INPUT_UNION_FILENAME).write_text("{}\n")
    assert check_schemas(tmp_path) == [f"outdated: {tmp_path / INPUT_UNION_FILENAME}"]


@pytest.mark.parametrize("sample", INPUT_SAMPLES, ids=lambda s: s["type"])
def test_input_sample_round_trips(sample: dict[str, Any]) -> None:
    event = decode_input(json.dumps(sample))
    assert event.type == sample["type"]
    again = decode_input(event.model_dump_json())
    assert again == event


@pytest.mark.parametrize("sample", OUTPUT_SAMPLES, ids=lambda s: type(s).__name__)
def test_output_sample_round_trips(sample: BaseModel) -> None:
    assert type(sample).model_validate_json(sample.model_dump_json()) == sample


def _check_shape(payload: dict[str, Any], schema: dict[str, Any]) -> None:
    """Required keys present, no keys outside ``properties``, discriminator ``const`` matches."""
    properties = schema["properties"]
    assert set(schema["required"]) <= set(payload), "required field missing"
    assert set(payload) <= set(properties), "field not in schema"
    assert payload["type"] == properties["type"]["const"]


@pytest.mark.parametrize("sample", INPUT_SAMPLES, ids=lambda s: s["type"])
def test_input_sample_fits_checked_in_schema(sample: dict[str, Any]) -> None:
    schema = json.loads((SCHEMA_DIR / f"{sample['type']}.schema.json").read_text())
    _check_shape(sample, schema)
    union = json.loads((SCHEMA_DIR / INPUT_UNION_FILENAME).read_text())
    ref = union["discriminator"]["mapping"][sample["type"]]
    _check_shape(sample, union["$defs"][ref.rsplit("/", 1)[1]])
    # What the worker re-serialises (all fields, derived ones filled in) fits as well.
    _check_shape(json.loads(decode_input(json.dumps(sample)).model_dump_json()), schema)


@pytest.mark.parametrize("sample", OUTPUT_SAMPLES, ids=lambda s: type(s).__name__)
def test_output_sample_fits_checked_in_schema(sample: BaseModel) -> None:
    schema = json.loads((SCHEMA_DIR / schema_filename(type(sample))).read_text())
    _check_shape(json.loads(sample.model_dump_json()), schema)


def test_every_input_schema_documents_the_event_time_floor_and_its_setting() -> None:
    for model in INPUT_EVENT_TYPES:
        description = schema_documents()[schema_filename(model)]["properties"]["occurred_at"][
            "description"
        ]
        assert "1980-01-01" in description and "SEGWORKER_EARLIEST_EVENT_TIME" in description
