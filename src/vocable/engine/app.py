"""The HTTP side of an Engine: dashboard, health, sessions, config, metrics, plus each transport's routes,
and the middleware that hands transports the server's own ``send`` (``KeepWireSend``) and lets observers see
the request that opened a session (``RequestScope``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from vocable.engine.gate import Refused, check_session_id, state_refused
from vocable.engine.ledger import StateUnavailable
from vocable.engine.workers import merge_expositions, metrics_text, others
from vocable.recording.format import recording_path

if TYPE_CHECKING:
    from vocable.engine.engine import Engine


WIRE_SEND = "vocable.wire_send"  # scope key: the server's own ``send``, set by ``KeepWireSend``


class KeepWireSend:
    """Middleware that keeps the server's ``send`` in a WebSocket scope, for frames.

    Starlette's exception middleware wraps ``send`` to learn whether an HTTP response has started; on a
    WebSocket that wrapper decides nothing, yet costs a coroutine for every frame (tens a second for each
    session). A transport sends its frames with ``scope[WIRE_SEND]`` when present, and the handshake and
    close through Starlette as usual. Mounted inside another app, it keeps whatever ``send`` that app gave.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[WIRE_SEND] = send
        await self.app(scope, receive, send)


# The ASGI scope of the HTTP request or WebSocket being handled, set by ``RequestScope``: a session opened while
# handling it (and its ``session_started`` observers) sees its headers, e.g. a W3C ``traceparent``, whatever the
# transport. None outside a request (``Engine.conversation()``).
REQUEST_SCOPE: ContextVar[Scope | None] = ContextVar("vocable_request_scope", default=None)


class RequestScope:
    """Middleware that sets ``REQUEST_SCOPE`` for the duration of each HTTP request and WebSocket."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        token = REQUEST_SCOPE.set(scope)
        try:
            await self.app(scope, receive, send)
        finally:
            REQUEST_SCOPE.reset(token)


def _dashboard_html() -> str:
    return resources.files("vocable.dashboard").joinpath("index.html").read_text(encoding="utf-8")


def build_app(engine: Engine) -> Starlette:
    async def dashboard(request: Request) -> Response:
        return HTMLResponse(_dashboard_html(), headers={"Cache-Control": "no-store"})

    async def health(request: Request) -> Response:
        """This process's readiness; with ``--workers``, also every worker's (``sessions``: the whole server)."""
        siblings = await others(engine)
        body: dict[str, Any] = {
            "status": "ok" if engine.ready else ("error" if engine.load_error else "loading"),
            "sessions": len(engine.sessions) + sum(len(w["sessions"]) for w in siblings.values()),
            "providers": {kind: [live.name for live in getattr(engine.runtime, kind)]
                          for kind in ("vad", "turn", "stt", "llm", "tts")},
            "transports": [t.name for t in engine.transports],
            # this process's circuit breakers: closed, open (skipped) or half_open (the next request probes)
            "breakers": {kind: {name: breaker.state for name, breaker in named.items()}
                         for kind, named in engine.runtime.breakers().items()},
        }
        if engine.worker_id is not None:
            body["worker"] = engine.worker_id
            body["workers"] = {engine.worker_id: {"ready": engine.ready, "sessions": len(engine.sessions)},
                               **{w: {"ready": s["ready"], "sessions": len(s["sessions"])} for w, s in siblings.items()}}
        if engine.load_error:
            body["error"] = engine.load_error
        return JSONResponse(body, status_code=200 if engine.ready else 503)

    def refusal(refused: Refused) -> Response:
        return JSONResponse({"error": refused.code, "message": refused.reason}, status_code=refused.status,
                            headers=refused.headers)

    def operator_only(handler: Callable[[Request], Awaitable[Response]], *, metrics: bool = False
                      ) -> Callable[[Request], Awaitable[Response]]:
        """With ``server.auth`` on, the wrapped route needs ``Authorization: Bearer <api key>``
        (``/metrics`` also takes ``server.metrics_token``)."""
        token = engine.config.server.metrics_token
        extra = token.get_secret_value() if metrics and token is not None else None

        async def guarded(request: Request) -> Response:
            try:
                engine.gate.check_reader(request.headers.get("authorization"), extra_key=extra)
            except Refused as refused:
                return refusal(refused)
            return await handler(request)
        return guarded

    async def sessions(request: Request) -> Response:
        mine = [{**s.summary(), **({"worker": engine.worker_id} if engine.worker_id else {})}
                for s in list(engine.sessions.values())]
        theirs = [{**s, "worker": w} for w, snap in (await others(engine)).items() for s in snap["sessions"]]
        return JSONResponse({"sessions": mine + theirs})

    async def transcript(request: Request) -> Response:
        session_id = request.path_params["session_id"]
        try:
            await engine.gate.check_session_reader(request.headers.get("authorization"), session_id)
        except Refused as refused:
            return refusal(refused)
        data = await engine.store.transcript(session_id) if engine.store is not None else None
        if data is None and engine.ledger.shared:  # a session of another node, or storage not shared
            try:
                data = await engine.ledger.transcript(session_id)
            except StateUnavailable as exc:
                return refusal(state_refused(exc))
        if data is None and engine.store is None and not engine.ledger.shared:
            return JSONResponse({"error": "persistence is off: set storage.url in the config"}, status_code=404)
        if data is None:
            return JSONResponse({"error": f"no session {session_id}"}, status_code=404)
        return JSONResponse(data)

    async def recording(request: Request) -> Response:
        """A session's recording (``storage.record``, docs/recording.md): the API key when auth is on."""
        session_id = request.path_params["session_id"]
        try:
            check_session_id(session_id)
        except Refused as refused:
            return refusal(refused)
        path = recording_path(engine.config.storage.recordings, session_id)
        if not path.is_file():
            missing = f"no recording of {session_id}" if engine.config.storage.record else \
                "recording is off: set storage.record in the config"
            return JSONResponse({"error": missing}, status_code=404)
        return FileResponse(path, media_type="application/x-ndjson")

    async def issue_token(request: Request) -> Response:
        try:
            await engine.gate.check_rate(request.client.host if request.client else None)
            engine.gate.check_api_key(request.headers.get("authorization"))
        except Refused as refused:
            return refusal(refused)
        return JSONResponse(engine.gate.issue())

    async def dashboard_token(request: Request) -> Response:
        """Tokens for the dashboard served by this server, when the operator allows it."""
        gate = engine.gate
        origin, host = request.headers.get("origin"), request.headers.get("host")
        same_origin = request.headers.get("sec-fetch-site") == "same-origin" or (
            origin is not None and host is not None and origin.split("://", 1)[-1] == host)
        if gate.enabled and not (gate.allow_dashboard and same_origin):
            return JSONResponse({"error": "unauthorized", "message": "dashboard tokens are not allowed"}, status_code=401)
        try:
            await gate.check_rate(request.client.host if request.client else None)
        except Refused as refused:
            return JSONResponse({"error": refused.code, "message": refused.reason}, status_code=refused.status)
        return JSONResponse({**gate.issue(), "required": gate.enabled})

    async def config(request: Request) -> Response:
        return JSONResponse(engine.redacted_config())

    async def client_config(request: Request) -> Response:
        return JSONResponse({
            "transports": {t.name: t.client_config() for t in engine.transports},
            "input_sample_rate": engine.config.pipeline.input_sample_rate,
        })

    async def metrics(request: Request) -> Response:
        """Prometheus text; with ``--workers``, the sum over every live worker."""
        siblings = await others(engine)
        text = merge_expositions([metrics_text(engine), *(s["metrics"] for s in siblings.values())]) if siblings \
            else metrics_text(engine)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    routes: list[BaseRoute] = [
        Route("/", dashboard),
        Route("/health", health),
        *engine.node.routes(),  # /health/live, /health/ready: for load balancers
        Route("/session", issue_token, methods=["POST"]),
        Route("/session/dashboard-token", dashboard_token, methods=["POST"]),
        Route("/sessions", operator_only(sessions)),
        Route("/sessions/{session_id}/transcript", transcript),
        Route("/sessions/{session_id}/recording", operator_only(recording)),
        Route("/config", operator_only(config)),
        Route("/client-config", client_config),
        Route("/metrics", operator_only(metrics, metrics=True)),
    ]
    for transport in engine.transports:
        routes.extend(transport.routes())
    app = Starlette(routes=routes, lifespan=engine.lifespan, middleware=[Middleware(RequestScope), Middleware(KeepWireSend)])
    app.state.engine = engine
    return app
