"""Language-neutral JSON Schemas of every event in and out, generated from ``worker.core.events``.

The pydantic models in :mod:`worker.core.events` are the single source of truth; the files in
``schemas/`` are generated from them (``segworker schemas export``) and checked in so that
producers and consumers in other languages can validate against them. A unit test fails when
the checked-in files and the models disagree.

Each document is pydantic's JSON Schema (validation mode for input events, i.e. what the
worker accepts; serialization mode for output events, i.e. what it emits) plus ``$schema``
(draft 2020-12) and ``$id``. The ``type`` discriminator is listed as required, because every
event on the wire must carry it (``decode_input`` cannot dispatch without it), even though the
Python models give it a default.

Examples
--------
>>> documents = schema_documents()
>>> sorted(documents)[:3]
['account_erased.schema.json', 'account_profile.schema.json', 'campaign_interaction.schema.json']
>>> documents["order_placed.schema.json"]["$id"]
'https://segworker.example/schemas/order_placed.schema.json'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter

from worker.core.events import INPUT_EVENT_TYPES, OUTPUT_EVENT_TYPES, AnyInputEvent

#: JSON Schema dialect of every generated document.
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: Base of every document's ``$id`` (the ``.example`` TLD is reserved; nothing is served there).
SCHEMA_BASE_URI = "https://segworker.example/schemas/"
#: File name suffix of generated documents; other files in the directory are left alone.
SCHEMA_SUFFIX = ".schema.json"
#: File name of the discriminated union of all input events.
INPUT_UNION_FILENAME = f"input_event{SCHEMA_SUFFIX}"
#: Where the checked-in schemas live in a source checkout.
DEFAULT_SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

JsonMode = Literal["validation", "serialization"]


def event_type_name(model: type[BaseModel]) -> str:
    """The ``type`` discriminator value of an event model (its literal default).

    >>> from worker.core.events import OrderPlaced
    >>> event_type_name(OrderPlaced)
    'order_placed'
    """
    default = model.model_fields["type"].default
    if not isinstance(default, str):
        raise TypeError(f"{model.__name__}.type has no string default")
    return default


def schema_filename(model: type[BaseModel]) -> str:
    """File name of a model's schema document.

    >>> from worker.core.events import SegmentChanged
    >>> schema_filename(SegmentChanged)
    'segment_changed.schema.json'
    """
    return f"{event_type_name(model)}{SCHEMA_SUFFIX}"


def _finish(schema: dict[str, Any], filename: str) -> dict[str, Any]:
    """Add ``$schema``/``$id`` and make the ``type`` discriminator required."""
    _require_type(schema)
    for definition in schema.get("$defs", {}).values():
        _require_type(definition)
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": SCHEMA_BASE_URI + filename, **schema}


def _require_type(schema: dict[str, Any]) -> None:
    properties = schema.get("properties", {})
    if "const" in properties.get("type", {}):
        required = schema.setdefault("required", [])
        if "type" not in required:
            required.append("type")


def _model_document(model: type[BaseModel], mode: JsonMode) -> dict[str, Any]:
    return _finish(model.model_json_schema(mode=mode), schema_filename(model))


def schema_documents() -> dict[str, dict[str, Any]]:
    """Every schema document, keyed by file name, in a stable order.

    Returns
    -------
    dict
        ``{"order_placed.schema.json": {...}, ..., "input_event.schema.json": {...}}``:
        one document per input and output event model plus the input union.

    Examples
    --------
    >>> union = schema_documents()[INPUT_UNION_FILENAME]
    >>> union["discriminator"]["propertyName"]
    'type'
    """
    documents: dict[str, dict[str, Any]] = {}
    for model in INPUT_EVENT_TYPES:
        documents[schema_filename(model)] = _model_document(model, "validation")
    for output_model in OUTPUT_EVENT_TYPES:
        documents[schema_filename(output_model)] = _model_document(output_model, "serialization")
    union = TypeAdapter(AnyInputEvent).json_schema(mode="validation")  # type: ignore[arg-type,unused-ignore]
    union.setdefault("title", "InputEvent")
    union.setdefault("description", "Any input event; dispatched on its `type` field.")
    documents[INPUT_UNION_FILENAME] = _finish(union, INPUT_UNION_FILENAME)
    return dict(sorted(documents.items()))


def render(document: dict[str, Any]) -> str:
    """The stable text of a document as written to disk.

    >>> render({"b": 1, "a": [1, 2]})
    '{\\n  "a": [\\n    1,\\n    2\\n  ],\\n  "b": 1\\n}\\n'
    """
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export_schemas(directory: Path = DEFAULT_SCHEMA_DIR) -> list[Path]:
    """Write every schema document to ``directory``; remove stale ``*.schema.json`` files.

    Files are only rewritten when their content changes, so the export is idempotent.

    Parameters
    ----------
    directory
        Target directory, created if missing.

    Returns
    -------
    list of Path
        The paths of all current schema documents (written or already up to date).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     paths = export_schemas(Path(tmp))
    ...     check_schemas(Path(tmp))
    []
    """
    directory.mkdir(parents=True, exist_ok=True)
    documents = schema_documents()
    paths = []
    for filename, document in documents.items():
        path = directory / filename
        text = render(document)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        paths.append(path)
    for stale in directory.glob(f"*{SCHEMA_SUFFIX}"):
        if stale.name not in documents:
            stale.unlink()
    return paths


def check_schemas(directory: Path = DEFAULT_SCHEMA_DIR) -> list[str]:
    """Differences between the models and the schema files in ``directory``.

    Returns
    -------
    list of str
        One line per missing, outdated or stray ``*.schema.json`` file; empty when in sync.
    """
    documents = schema_documents()
    problems = []
    for filename, document in documents.items():
        path = directory / filename
        if not path.exists():
            problems.append(f"missing: {path}")
        elif path.read_text(encoding="utf-8") != render(document):
            problems.append(f"outdated: {path}")
    for path in sorted(directory.glob(f"*{SCHEMA_SUFFIX}")):
        if path.name not in documents:
            problems.append(f"stray (no model): {path}")
    return problems


if __name__ == "__main__":  # pragma: no cover - `python -m worker.ops.schemas [dir]`
    import sys

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SCHEMA_DIR
    for written in export_schemas(target):
        print(written)
