"""The segment families the worker runs: its definitions, its clusterings, and any
further kinds the settings name (``SEGWORKER_FAMILY_KINDS``)."""

from __future__ import annotations

import importlib

from worker.config.clusterings import clusterings
from worker.config.settings import Settings
from worker.core.definitions import Definitions
from worker.core.families import Families, FamilyKind, worker_families


def configured_families(settings: Settings, definitions: Definitions) -> Families:
    """The rule families of ``definitions``, the configured cluster families, then the
    kinds of ``settings.family_kinds``: ``module:attribute`` names of a callable
    ``(settings, definitions) -> FamilyKind`` (ValueError when one cannot be loaded)."""
    more = [_load_kind(name, settings, definitions) for name in settings.family_kinds]
    return worker_families(
        definitions, *more, clusterings=[c.family for c in clusterings(settings)]
    )


def _load_kind(name: str, settings: Settings, definitions: Definitions) -> FamilyKind:
    module_name, _, attribute = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"family kind {name!r} cannot be loaded: {error}") from error
    kind = factory(settings, definitions)
    if not isinstance(kind, FamilyKind):
        raise ValueError(f"family kind {name!r} gave {type(kind).__name__}, not a FamilyKind")
    return kind
