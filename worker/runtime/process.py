"""Running the worker process: Faust's worker, and the collector tuned for it."""

from __future__ import annotations

import gc

import faust

from worker.config.settings import Settings


def run_worker(app: object, settings: Settings) -> None:
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)  # type: ignore[arg-type]
    freeze_loaded_objects()
    worker.execute_from_commandline()


def freeze_loaded_objects() -> None:
    """Exempt what is loaded so far (faust, river, scipy, ...: it lives as long as the
    process) from garbage collection, so that the collector stops re-scanning it for the
    short-lived objects of every batch (measured: decoding states took half the time),
    and collect the young generation less often (``YOUNG_COLLECTION_THRESHOLD``)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)


#: Allocations between two collections of the young generation (CPython's default: 700).
#: Every decoded state allocates a few hundred lists and dicts, so by default a collection
#: ran every second state; the collector's share of decoding a state was measured at about
#: a quarter (``bench/latency.py``, 2026-11-29). At most this many extra objects (a few MB)
#: wait for the next collection.
YOUNG_COLLECTION_THRESHOLD = 50_000
