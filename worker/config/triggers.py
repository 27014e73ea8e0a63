"""The campaign triggers file the worker runs with, checked against its segments."""

from __future__ import annotations

from collections.abc import Set
from pathlib import Path

from worker.config.families import configured_families
from worker.config.settings import Settings
from worker.core.definitions import Definitions
from worker.core.families import Families
from worker.core.features import NO_GLOBALS, VOCABULARY
from worker.core.triggers.config import TriggersConfig, load_triggers


def known_segments(families: Families) -> dict[str, Set[str] | None]:
    """Every family's segment ids; a model family's (a clustering) are only known once
    its model is trained."""
    segments: dict[str, Set[str] | None] = dict.fromkeys(families.ids(NO_GLOBALS))
    for family in families.static():
        segments[family.id] = {segment for segment, _ in family.segments()}
    return segments


def load_configured_triggers(
    settings: Settings, definitions: Definitions, path: Path | None = None
) -> TriggersConfig:
    """``path`` (default: ``settings.triggers_path``), every family and segment it names
    checked against the families the worker runs (``TriggersError``)."""
    families = configured_families(settings, definitions)
    return load_triggers(path or settings.triggers_path, VOCABULARY, known_segments(families))
