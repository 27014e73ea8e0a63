"""HTTP views of the ops surface (Faust web, bound to 127.0.0.1 by default).

GET /health                                   the process is up
GET /ready                                    Redis answers; definitions loaded
GET /metrics                                  Prometheus exposition
GET /accounts/{account_id}/segments           memberships with since, origin, live and
                                              reason; entries pending (enter_after)  (data)
GET /segments                                 every segment: size, description, profile (data)
GET /segments/{family}/{segment}/members      members, paginated: ?cursor=0&count=100 (data)
GET /accounts/{account_id}/triggers           recent trigger decisions with reasons   (data)

With ``SEGWORKER_WEB_TOKEN`` set, the data endpoints answer only a request that carries it
(``Authorization: Bearer <token>``, compared in constant time) and give 401 otherwise;
``check_binding`` refuses to serve them on a non-loopback address without a token.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from worker.config.security import bearer_token_matches, is_loopback
from worker.config.settings import Settings
from worker.core.events import epoch_text
from worker.core.families import Families
from worker.core.processing import membership_reasons
from worker.ports import StateStore
from worker.runtime.metrics import Metrics
from worker.runtime.overview import segment_overview
from worker.runtime.triggers import TriggerRouter, decision_rows

MAX_PAGE = 1000


Handler = Callable[..., Awaitable[Any]]


def check_binding(settings: Settings) -> None:
    """Refuse to serve account data to a network without a token (ValueError)."""
    if (
        settings.web_token is None
        and not settings.web_allow_unauthenticated
        and not is_loopback(settings.web_host)
    ):
        raise ValueError(
            f"refusing to serve account data on {settings.web_host} without a token: set "
            "SEGWORKER_WEB_TOKEN (clients send Authorization: Bearer <token>), bind "
            "SEGWORKER_WEB_HOST=127.0.0.1, or set SEGWORKER_WEB_ALLOW_UNAUTHENTICATED=true "
            "behind a proxy that authenticates"
        )


def data_endpoint(token: str | None) -> Callable[[Handler], Handler]:
    """A view that answers only a request carrying ``token`` (when there is one)."""

    def decorate(handler: Handler) -> Handler:
        if token is None:
            return handler

        @functools.wraps(handler)
        async def guarded(web: Any, request: Any, **params: Any) -> Any:
            if not bearer_token_matches(request.headers.get("Authorization"), token):
                return web.json(
                    {"error": "this endpoint needs Authorization: Bearer <SEGWORKER_WEB_TOKEN>"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="segworker"'},
                )
            return await handler(web, request, **params)

        return guarded

    return decorate


def register_views(
    app: faust.App,
    store: StateStore,
    families: Families,
    metrics: Metrics,
    settings: Settings,
    router: TriggerRouter | None = None,
) -> None:
    token = settings.web_token.get_secret_value() if settings.web_token is not None else None
    data = data_endpoint(token)

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        try:
            await store.ping()
        except Exception as error:  # any failure means not ready
            return web.json({"ready": False, "redis": type(error).__name__}, status=503)
        return web.json({"ready": True, "definition_version": families.version})

    @app.page("/accounts/{account_id}/segments")
    @data
    async def account_segments(web: Any, request: Any, account_id: str) -> Any:
        state = await store.load(account_id)
        if state is None:
            return web.json({"error": f"unknown account {account_id!r}"}, status=404)
        reasons = membership_reasons(state, families, await store.load_globals())
        return web.json(
            {
                "account_id": account_id,
                "as_of": epoch_text(state.clock),
                "memberships": [
                    {
                        "family": family,
                        "segment_id": segment,
                        "since": epoch_text(entry["since"]),
                        # how the entry arose and whether it was live (None: not recorded)
                        "origin": entry.get("origin"),
                        "live": entry.get("live"),
                        "reason": reasons[(family, segment)],
                    }
                    for family, segments in sorted(state.memberships.items())
                    for segment, entry in sorted(segments.items())
                ],
                "pending": [
                    {
                        "family": family,
                        "segment_id": segment,
                        "qualifying_since": epoch_text(since),
                    }
                    for family, segments in sorted(state.pending.items())
                    for segment, since in sorted(segments.items())
                ],
            }
        )

    @app.page("/segments")
    @data
    async def segments(web: Any, request: Any) -> Any:
        return web.json({"segments": await segment_overview(store, families)})

    @app.page("/segments/{family}/{segment}/members")
    @data
    async def members(web: Any, request: Any, family: str, segment: str) -> Any:
        try:
            cursor = int(request.query.get("cursor", "0"))
            count = min(int(request.query.get("count", "100")), MAX_PAGE)
        except ValueError:
            return web.json({"error": "cursor and count must be integers"}, status=400)
        next_cursor, page = await store.members_page(family, segment, cursor, count)
        return web.json(
            {
                "family": family,
                "segment_id": segment,
                "members": page,
                "next_cursor": next_cursor or None,
            }
        )

    @app.page("/accounts/{account_id}/triggers")
    @data
    async def account_triggers(web: Any, request: Any, account_id: str) -> Any:
        if router is None:
            return web.json({"error": "the trigger router is not enabled"}, status=404)
        state = await router.store.load(account_id)
        return web.json({"account_id": account_id, "decisions": decision_rows(state)})
