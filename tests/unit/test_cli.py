from __future__ import annotations

import gc

from worker.cli import YOUNG_COLLECTION_THRESHOLD, freeze_loaded_objects


def test_the_worker_freezes_what_is_loaded_and_collects_the_young_generation_less_often():
    before = gc.get_threshold()
    try:
        freeze_loaded_objects()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
