"""The WebRTC transport's routes: offers over HTTP or WebSocket, the event socket, and per-peer stats.

Two ways to negotiate, one kind of peer:

- ``POST /webrtc/offer`` answers a complete offer with ``session_id``; the client then opens
  ``WS /ws/webrtc/{session_id}`` to trickle candidates and get events (or opens a data channel instead).
- ``WS /ws/webrtc`` carries everything, offer first: the session lives in the process that holds the socket,
  so several server processes can share a port without sharing state.

Refusals are cheap and early: the engine's gate (origin, rate limit, session token when ``server.auth`` is
on) and the peer cap are checked before the body is read or the socket accepted, and the SDP is checked
before a session or a peer connection exists. The token travels as ``?token=`` on the offer or the socket;
``?resume=<session_id>`` resumes a conversation that dropped within ``server.resume_grace_s``.
"""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from typing import TYPE_CHECKING, Any, ClassVar

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from vocable.engine.engine import CapacityError, NotReady
from vocable.engine.gate import Admission, Refused, admit_websocket
from vocable.engine.workers import owner_of, relay
from vocable.transports.base import Transport
from vocable.transports.webrtc.settings import WebRTCSettings

if TYPE_CHECKING:
    from vocable.engine.engine import Engine
    from vocable.transports.webrtc.peer import Peer

log = structlog.get_logger("vocable.webrtc")

OFFER_TIMEOUT_S = 10.0  # a WS-only client has this long to send its offer


class NoRoom(Exception):
    """No room or not ready: HTTP 503 / close 1013, sent at once."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class WebRTCTransport(Transport):
    name: ClassVar[str] = "webrtc"
    Settings: ClassVar[type[WebRTCSettings]] = WebRTCSettings  # type: ignore[assignment]
    settings: WebRTCSettings

    def __init__(self, engine: Engine, settings: WebRTCSettings | None = None) -> None:
        _require_aiortc()
        super().__init__(engine, settings)
        self.peers: dict[str, Peer] = {}
        self._opening = 0
        self._refused = 0

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/webrtc/offer", self._offer_http, methods=["POST"]),
            Route("/webrtc/stats", self._stats_http, methods=["GET"]),
            Route("/webrtc/client.js", _client_module, methods=["GET"]),
            WebSocketRoute("/ws/webrtc", self._signalling_socket),
            WebSocketRoute("/ws/webrtc/{session_id}", self._event_socket),
        ]

    def client_config(self) -> dict[str, Any]:
        return {
            "ice_servers": [server.browser() for server in self.settings.ice_servers],
            "offer_path": "/webrtc/offer",
            "socket_path": "/ws/webrtc",
        }

    def stats(self) -> dict[str, Any]:
        return {"peer_count": len(self.peers), "opening": self._opening, "refused_total": self._refused}

    async def aclose(self) -> None:
        peers = list(self.peers.values())
        await asyncio.gather(*(peer.close("server_shutdown") for peer in peers), return_exceptions=True)

    # ------------------------------------------------------------------------------------ opening a peer

    def _check_room(self) -> None:
        if len(self.peers) + self._opening >= self.settings.max_peers:
            self._refused += 1
            raise NoRoom("capacity", f"the server is at its limit of {self.settings.max_peers} WebRTC peers")
        if self.engine.load_error:
            raise NoRoom("not_ready", f"the models failed to load: {self.engine.load_error}")

    async def _open_peer(self, sdp: str, admission: Admission) -> tuple[Peer, str]:
        """Session, peer connection, answer; on any failure everything opened so far is closed again."""
        from vocable.transports.webrtc.peer import Peer

        self._check_room()
        self._opening += 1
        try:
            try:
                session = await self.engine.open_session(
                    transport=self.name, input_sample_rate=48000, admission=admission)
            except CapacityError as exc:
                self._refused += 1
                raise NoRoom("capacity", str(exc)) from None
            except (NotReady, TimeoutError) as exc:
                raise NoRoom("not_ready", f"the models are not ready: {exc}") from None
            peer = Peer(self.engine, session, self.settings, on_closed=self._forget)
            try:
                answer = await peer.answer(sdp)
            except BaseException:
                await peer.close("start_failed")
                raise
            self.peers[peer.id] = peer
            peer.start()
            peer.log.info("webrtc_peer_opened", peers=len(self.peers))
            return peer, answer
        finally:
            self._opening -= 1

    def _forget(self, peer: Peer) -> None:
        self.peers.pop(peer.id, None)

    # ------------------------------------------------------------------------------------ routes

    async def _offer_http(self, request: Request) -> Response:
        from vocable.transports.webrtc.signalling import BadOffer, offer_from_json

        admission: Admission | None = None
        try:
            admission = await self.engine.gate.admit(
                token=request.query_params.get("token"), origin=request.headers.get("origin"),
                host=request.headers.get("host"), client=request.client.host if request.client else None,
                resume_session_id=request.query_params.get("resume"))
            self._check_room()
            body = await request.body()
            sdp = offer_from_json(body, max_bytes=self.settings.max_sdp_bytes)
            peer, answer = await self._open_peer(sdp, admission)
        except Refused as refused:
            self._refused += 1
            return JSONResponse({"error": refused.code, "message": refused.reason}, status_code=refused.status)
        except NoRoom as exc:
            await self.engine.gate.release(admission)
            return JSONResponse({"error": exc.code, "message": exc.message}, status_code=503,
                                headers={"Retry-After": "5"})
        except BadOffer as exc:
            await self.engine.gate.release(admission)
            log.info("webrtc_offer_refused", reason=str(exc))
            return JSONResponse({"error": "bad_offer", "message": str(exc)}, status_code=400)
        return JSONResponse({"sdp": answer, "type": "answer", "session_id": peer.id})

    async def _stats_http(self, request: Request) -> Response:
        """Operator data (it names live sessions): with ``server.auth`` on, it needs the API key."""
        from vocable.transports.webrtc.stats import peer_stats

        try:
            self.engine.gate.check_api_key(request.headers.get("authorization"))
        except Refused as refused:
            return JSONResponse({"error": refused.code, "message": refused.reason}, status_code=refused.status)

        peers = list(self.peers.values())
        reports = await asyncio.gather(*(peer_stats(peer.pc) for peer in peers))
        body = [
            {"session_id": peer.id, "created_at": peer.created_at, "session_state": peer.session.state,
             "playout_buffered_ms": round(peer.playback.buffered_ms, 1), **report}
            for peer, report in zip(peers, reports)
        ]
        return JSONResponse({"peers": body, **self.stats()})

    async def _signalling_socket(self, websocket: WebSocket) -> None:
        """``WS /ws/webrtc``: the offer arrives on the socket, the answer and everything else go back on it."""
        from vocable.transports.webrtc.signalling import BadOffer, offer_from_message

        try:
            admission = await admit_websocket(self.engine.gate, websocket)
        except Refused as refused:
            await self._deny(websocket, refused)
            return
        await websocket.accept()
        try:
            self._check_room()
            async with asyncio.timeout(OFFER_TIMEOUT_S):
                text = await websocket.receive_text()
            try:
                data = json.loads(text)
            except (ValueError, RecursionError):
                raise BadOffer("the first message must be a JSON offer {\"type\": \"offer\", \"sdp\": ...}") from None
            sdp = offer_from_message(data, max_bytes=self.settings.max_sdp_bytes)
            peer, answer = await self._open_peer(sdp, admission)
        except NoRoom as exc:
            await self.engine.gate.release(admission)
            await _refuse(websocket, exc.code, exc.message, 1013)
            return
        except BadOffer as exc:
            await self.engine.gate.release(admission)
            await _refuse(websocket, "bad_offer", str(exc), 1008)
            return
        except TimeoutError:
            await self.engine.gate.release(admission)
            await _refuse(websocket, "no_offer", f"no offer within {OFFER_TIMEOUT_S:g} s", 1008)
            return
        except (WebSocketDisconnect, RuntimeError):
            await self.engine.gate.release(admission)
            return  # the client left before its offer
        try:
            await websocket.send_json({"type": "answer", "sdp": answer, "session_id": peer.id})
        except Exception:  # noqa: BLE001 - the client left while we answered
            await peer.close("signalling_closed")
            return
        await self._serve(peer, websocket)

    async def _event_socket(self, websocket: WebSocket) -> None:
        """``WS /ws/webrtc/{session_id}``: candidates and events for a peer made by ``POST /webrtc/offer``.

        The origin is checked as everywhere. With ``server.auth`` on, the socket must present the token that
        made the offer (``?token=``): session ids are listed by ``GET /sessions``, so an id alone must not
        let a stranger take over a call's events.
        """
        session_id = websocket.path_params["session_id"]
        gate = self.engine.gate
        try:
            gate.check_origin(websocket.headers.get("origin"), websocket.headers.get("host"))
            await gate.check_owner(token=websocket.query_params.get("token"), session_id=session_id)
        except Refused as refused:
            await self._deny(websocket, refused)
            return
        await websocket.accept()
        peer = self.peers.get(session_id)
        if peer is None:
            owner = await owner_of(self.engine, session_id)
            if owner is not None and owner[1] is not None:  # checked here already; the owner serves it
                log.info("webrtc_relayed", session_id=session_id, to_worker=owner[0])
                try:
                    await relay(websocket, owner[1], f"{self.relay_prefix}{session_id}")
                except OSError as exc:
                    log.warning("webrtc_relay_failed", session_id=session_id, worker=owner[0], error=str(exc))
                    await _refuse(websocket, "other_worker", "the worker holding this session cannot be reached", 1011)
                return
            await _refuse(websocket, "unknown_session", "no WebRTC session with this id", 4404)
            return
        await self._serve(peer, websocket)

    relay_prefix = "/ws/webrtc/"

    async def serve_relayed(self, path: str, websocket: Any) -> None:
        """The event socket of a session that lives here, relayed by the worker the client reached
        (``vocable serve --workers``). That worker checked origin and token already."""
        peer = self.peers.get(path[len(self.relay_prefix):])
        if peer is None:
            await _refuse(websocket, "unknown_session", "no WebRTC session with this id", 4404)
            return
        await self._serve(peer, websocket)

    async def _serve(self, peer: Peer, websocket: WebSocket) -> None:
        if not await peer.attach(websocket):
            if peer.sinks.socket is not None:
                await _refuse(websocket, "already_attached", "this session already has a signalling socket", 4409)
            return  # otherwise the peer is closing, or this socket died while we wrote to it
        try:
            while not peer.closing:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None:
                    await peer.report_error("binary_unsupported", "audio travels on the WebRTC track, not the socket")
                    continue
                await peer.handle_text(text)
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client went away, or the peer closed the socket under us
        finally:
            peer.detach(websocket)


    async def _deny(self, websocket: WebSocket, refused: Refused) -> None:
        """Refuse the handshake with an HTTP status and JSON body, as ``/ws/audio`` does (browsers see 1006)."""
        self._refused += 1
        log.info("webrtc_refused", reason=refused.code, status=refused.status)
        body = {"type": "error", "code": refused.code, "message": refused.reason, "fatal": True}
        try:
            await websocket.send_denial_response(JSONResponse(body, status_code=refused.status))
        except RuntimeError:  # the server cannot send HTTP responses on a WebSocket route
            await websocket.close(refused.close_code, refused.code)


async def _client_module(request: Request) -> Response:
    """The browser side (``vocable/dashboard/webrtc.js``), importable by the dashboard as ``./webrtc/client.js``."""
    source = resources.files("vocable.dashboard").joinpath("webrtc.js").read_text(encoding="utf-8")
    return Response(source, media_type="text/javascript", headers={"Cache-Control": "no-cache"})


async def _refuse(websocket: WebSocket, code: str, message: str, close_code: int) -> None:
    try:
        await websocket.send_json({"type": "error", "code": code, "message": message, "fatal": True})
        await websocket.close(close_code, code)
    except Exception:  # noqa: BLE001, S110 - the client is already gone; nothing left to tell it
        pass


def _require_aiortc() -> None:
    try:
        import aiortc  # noqa: F401
    except ImportError:
        from vocable.providers.errors import ProviderUnavailable

        raise ProviderUnavailable(
            "the webrtc transport needs aiortc: run pip install 'vocable[webrtc]'") from None
