"""Who may open a session: API-key-issued tokens, an origin allow-list, and per-address rate limits.

A voice endpoint on the open internet spends the operator's API money, so when ``server.auth`` is set
every session needs a short-lived signed token (JWT, HS256) that the operator's backend gets from
``POST /session`` with its API key. A token opens exactly one session; it may only be used again to
resume that same session within the grace window. Transports call ``admit`` *before* accepting a
connection, so a refused client never gets a session, a socket, or a provider stream.

A used token resumes only a conversation that is actually parked (its client dropped) and that this token
opened: the parked memory is taken here, atomically, so one token can never hold two live sessions.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from vocable.config.model import ServerConfig
from vocable.engine.ledger import ORPHAN_AFTER_S, UNBOUND, Ledger, LocalLedger, StateUnavailable
from vocable.providers.base import Message

TOKEN_AUDIENCE = "vocable-session"


class Refused(Exception):
    """A request that must not go further: HTTP ``status`` or WebSocket ``close_code``, with a reason."""

    def __init__(self, status: int, close_code: int, code: str, reason: str, *,
                 retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.close_code = close_code
        self.code = code
        self.reason = reason
        self.retry_after = retry_after  # seconds, sent as ``Retry-After`` with a 503

    @property
    def headers(self) -> dict[str, str] | None:
        if self.status == 401:
            return {"WWW-Authenticate": "Bearer"}
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None


def state_refused(exc: StateUnavailable) -> Refused:
    """The shared state is down: admissions fail closed, with a clear error, until it is back."""
    return Refused(503, 1013, "state_unavailable", f"{exc}; new sessions are refused until it is back",
                   retry_after=1)


@dataclass(frozen=True, slots=True)
class Admission:
    token_id: str | None  # None when auth is off
    resume_session_id: str | None
    memory: list[Message] | None = None  # the parked conversation, already taken from the ledger


class Gate:
    """The checks, with their state in a ``Ledger``: per process, or shared by every ``--workers`` process."""

    def __init__(self, server: ServerConfig, ledger: Ledger | None = None) -> None:
        self.server = server
        self.ledger: Ledger = ledger if ledger is not None else LocalLedger()
        auth = server.auth
        self.api_key: str | None = auth.api_key.get_secret_value() if auth is not None else None
        self.token_ttl_s = auth.token_ttl_s if auth is not None else 300
        self.allow_dashboard = bool(auth.allow_dashboard) if auth is not None else True
        self.node: str | None = None  # this process among the nodes sharing the ledger
        self.shedding: Callable[[], Refused | None] | None = None  # a refusal while draining or saturated
        if self.api_key:
            self._secret = hmac.new(self.api_key.encode(), b"vocable session tokens", hashlib.sha256).digest()
        else:  # no API key: tokens only need to be valid on this server (all its workers)
            self._secret = self.ledger.secret() or secrets.token_bytes(32)

    @property
    def enabled(self) -> bool:
        return self.api_key is not None

    # ------------------------------------------------------------------------------------------ checks

    def check_origin(self, origin: str | None, host: str | None = None) -> None:
        allowed = self.server.allowed_origins
        if not allowed or origin is None:
            return  # no allow-list; or a non-browser client (browsers always send Origin)
        if "same-origin" in allowed and host and urlsplit(origin).netloc == host:
            return
        if origin.rstrip("/") not in {a.rstrip("/") for a in allowed}:
            raise Refused(403, 1008, "origin_not_allowed", f"origin {origin} is not allowed")

    async def check_rate(self, client: str | None) -> None:
        per_minute = self.server.rate_limit_per_minute
        try:
            allowed = per_minute <= 0 or await self.ledger.hit(client or "unknown", per_minute)
        except StateUnavailable as exc:
            raise state_refused(exc) from None
        if not allowed:
            raise Refused(429, 1013, "rate_limited", "too many sessions from this address; try again in a minute")

    def check_api_key(self, authorization: str | None) -> None:
        if not self.enabled:
            return
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.api_key.encode()):  # type: ignore[union-attr]
            raise Refused(401, 1008, "unauthorized", "a valid API key is required (Authorization: Bearer <key>)")

    def check_reader(self, authorization: str | None, *, session_id: str | None = None,
                     extra_key: str | None = None) -> None:
        """Operator reads (``/sessions``, ``/config``, ``/metrics``) need the API key when auth is on.

        ``extra_key`` is a second bearer accepted for this read only (``server.metrics_token``).
        """
        if not self.enabled:
            return
        scheme, _, given = (authorization or "").partition(" ")
        if extra_key and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), extra_key.encode()):
            return
        self.check_api_key(authorization)

    async def check_session_reader(self, authorization: str | None, session_id: str) -> None:
        """A conversation's data: the API key, or the session token that opened that very conversation
        (so a client, the dashboard included, reads its own transcript and nobody else's)."""
        check_session_id(session_id)
        if not self.enabled:
            return
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and given.count(".") == 2:  # a JWT, not the API key
            try:
                await self.check_owner(token=given.strip(), session_id=session_id)
                return
            except Refused:
                pass
        self.check_api_key(authorization)

    # ------------------------------------------------------------------------------------------ tokens

    def issue(self) -> dict[str, Any]:
        import jwt

        now = int(time.time())
        claims = {"jti": secrets.token_urlsafe(16), "iat": now, "exp": now + self.token_ttl_s, "aud": TOKEN_AUDIENCE}
        return {"token": jwt.encode(claims, self._secret, algorithm="HS256"), "expires_in": self.token_ttl_s}

    def _verify(self, token: str | None) -> dict[str, Any]:
        import jwt

        if not token:
            raise Refused(401, 1008, "token_required", "a session token is required: POST /session first")
        try:
            return jwt.decode(token, self._secret, algorithms=["HS256"], audience=TOKEN_AUDIENCE,
                              options={"require": ["exp", "jti"]})
        except jwt.ExpiredSignatureError:
            raise Refused(401, 1008, "token_expired", "the session token has expired") from None
        except jwt.PyJWTError:
            raise Refused(401, 1008, "token_invalid", "the session token is not valid") from None

    def _token_expiry(self) -> float:
        return time.time() + self.token_ttl_s + self.server.resume_grace_s

    async def admit(
        self, *, token: str | None, origin: str | None, host: str | None, client: str | None,
        resume_session_id: str | None = None,
    ) -> Admission:
        """Every check a new connection must pass, before it is accepted.

        A fresh token is claimed here, atomically across workers, so two connections racing with one token
        cannot both get a session. ``release`` gives the claim back if the session then fails to open.
        A node that is draining or saturated refuses first (``shedding``), and one whose shared state is
        unreachable refuses too (fail closed).
        """
        refusal = self.shedding() if self.shedding is not None else None
        if refusal is not None:
            raise refusal
        try:
            return await self._admit(token=token, origin=origin, host=host, client=client,
                                     resume_session_id=resume_session_id)
        except StateUnavailable as exc:
            raise state_refused(exc) from None

    async def _admit(self, *, token: str | None, origin: str | None, host: str | None, client: str | None,
                     resume_session_id: str | None) -> Admission:
        self.check_origin(origin, host)
        await self.check_rate(client)
        if resume_session_id is not None:
            check_session_id(resume_session_id)
        if not self.enabled:
            memory = await take_waiting(self.ledger, resume_session_id, self.node) if resume_session_id else None
            return Admission(None, resume_session_id if memory is not None else None, memory)
        claims = self._verify(token)
        owner = await self.ledger.claim_token(claims["jti"], self._token_expiry())
        if owner is None:
            return Admission(claims["jti"], None)  # a fresh token opens a new session, never someone else's
        if owner == UNBOUND or owner != resume_session_id:
            raise Refused(403, 1008, "token_used", "this token has already opened a session")
        memory = await take_waiting(self.ledger, resume_session_id, self.node)
        if memory is None:  # its session is live, ended with "end", or its grace window is over
            raise Refused(403, 1008, "token_used", "this token's session is not waiting to be resumed")
        return Admission(claims["jti"], resume_session_id, memory)

    async def check_owner(self, *, token: str | None, session_id: str) -> None:
        """The token must be the one that opened ``session_id`` (a WebRTC event socket joining its peer)."""
        check_session_id(session_id)
        if not self.enabled:
            return
        claims = self._verify(token)
        try:
            owner = await self.ledger.token_owner(claims["jti"])
        except StateUnavailable as exc:
            raise state_refused(exc) from None
        if owner != session_id:
            raise Refused(403, 1008, "token_mismatch", "this token did not open this session")

    async def bind(self, admission: Admission, session_id: str) -> None:
        """Record that ``admission``'s token now belongs to ``session_id`` (it may resume it later)."""
        if admission.token_id is not None:
            await self.ledger.bind_token(admission.token_id, session_id, self._token_expiry())

    async def release(self, admission: Admission | None) -> None:
        """The session this admission was for never opened: its token may be used again, and a conversation
        it took for resuming is parked again (nothing the user said is lost to a full server)."""
        if admission is None:
            return
        if admission.memory is not None and admission.resume_session_id is not None:
            deadline = time.time() + self.server.resume_grace_s
            await self.ledger.park(admission.resume_session_id, admission.memory, deadline)
        elif admission.token_id is not None:
            await self.ledger.release_token(admission.token_id)


async def take_waiting(ledger: Ledger, session_id: str, node: str | None) -> list[Message] | None:
    """``ledger.take``, waiting for the conversation when another node still holds it: a node killed a moment
    ago looks alive until its heartbeat lapses (``ORPHAN_AFTER_S``), and its client reconnects at once. A
    session that is live here, or still live on its node after that, is not waited for again: None."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + getattr(ledger, "orphan_after_s", ORPHAN_AFTER_S) + 1.0
    while True:
        memory = await ledger.take(session_id)
        if memory is not None or not ledger.shared:
            return memory
        holder = await ledger.holder(session_id)
        if holder is None:  # parked (or its node died) since the take just now: take it now
            return await ledger.take(session_id)
        if holder == node or loop.time() >= deadline:
            return None
        await asyncio.sleep(0.2)


SESSION_ID_MAX = 64


def check_session_id(value: str) -> None:
    """Session ids are ours (``ses_`` and hex): anything else from a client is refused at the edge."""
    if not (0 < len(value) <= SESSION_ID_MAX) or not all(c.isascii() and (c.isalnum() or c in "-_") for c in value):
        raise Refused(400, 1008, "invalid_field", "a session id is 1-64 characters of A-Z, a-z, 0-9, - and _")


async def admit_websocket(gate: Gate, websocket: Any) -> Admission:
    """``Gate.admit`` for a Starlette WebSocket: token and resume id from the query string."""
    query = websocket.query_params
    headers = websocket.headers
    client = websocket.client.host if websocket.client else None
    return await gate.admit(token=query.get("token"), origin=headers.get("origin"), host=headers.get("host"),
                            client=client, resume_session_id=query.get("session_id") or query.get("resume"))
