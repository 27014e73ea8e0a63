"""HTTP views of the ops surface (Faust web, bound to 127.0.0.1 by default).

GET /health                                   the process is up
GET /ready                                    Redis answers; definitions loaded
GET /metrics                                  Prometheus exposition
GET /accounts/{account_id}/segments           memberships with since and reason
GET /segments                                 every segment: size, description, profile
GET /segments/{family}/{segment}/members      members, paginated: ?cursor=0&count=100
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import faust

from worker.metrics import Metrics
from worker.processing import cluster_descriptions, membership_reasons
from worker.rules import Definitions
from worker.store import StateStore

MAX_PAGE = 1000


def register_views(
    app: faust.App, store: StateStore, definitions: Definitions, metrics: Metrics
) -> None:
    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        try:
            await store.redis.ping()
        except Exception as error:  # any failure means not ready
            return web.json({"ready": False, "redis": type(error).__name__}, status=503)
        return web.json({"ready": True, "definition_version": definitions.version})

    @app.page("/accounts/{account_id}/segments")
    async def account_segments(web: Any, request: Any, account_id: str) -> Any:
        state = await store.load(account_id)
        if state is None:
            return web.json({"error": f"unknown account {account_id!r}"}, status=404)
        reasons = membership_reasons(state, definitions, await store.load_globals())
        return web.json(
            {
                "account_id": account_id,
                "as_of": _iso(state.clock),
                "memberships": [
                    {
                        "family": family,
                        "segment_id": segment,
                        "since": _iso(entry["since"]),
                        "reason": reasons[(family, segment)],
                    }
                    for family, segments in sorted(state.memberships.items())
                    for segment, entry in sorted(segments.items())
                ],
            }
        )

    @app.page("/segments")
    async def segments(web: Any, request: Any) -> Any:
        return web.json({"segments": await segment_overview(store, definitions)})

    @app.page("/segments/{family}/{segment}/members")
    async def members(web: Any, request: Any, family: str, segment: str) -> Any:
        try:
            cursor = int(request.query.get("cursor", "0"))
            count = min(int(request.query.get("count", "100")), MAX_PAGE)
        except ValueError:
            return web.json({"error": "cursor and count must be integers"}, status=400)
        next_cursor, page = await store.redis.sscan(
            store.members_key(family, segment), cursor=cursor, count=count
        )
        return web.json(
            {
                "family": family,
                "segment_id": segment,
                "members": sorted(m.decode() for m in page),
                "next_cursor": int(next_cursor) or None,
            }
        )


async def segment_overview(store: StateStore, definitions: Definitions) -> list[dict[str, Any]]:
    """Size and description of every defined segment and every cluster of the models."""
    described: list[tuple[str, str, str]] = [
        (family.id, segment.id, segment.description or segment.when)
        for family in definitions.families
        for segment in family.segments
    ]
    for family, snapshot in (await store.load_globals()).clusters.items():
        if snapshot is not None:
            descriptions = cluster_descriptions(snapshot)
            described += [(family, c, descriptions[c]) for c in snapshot.ids]
    async with store.redis.pipeline(transaction=False) as pipe:
        for family, segment, _ in described:
            pipe.scard(store.members_key(family, segment))
        sizes = await pipe.execute()
    profiles = await store.load_profiles()
    return [
        {
            "family": family,
            "segment_id": segment,
            "size": size,
            "description": description,
            "profile": profiles.get(f"{family}/{segment}"),
        }
        for (family, segment, description), size in zip(described, sizes, strict=True)
    ]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()
