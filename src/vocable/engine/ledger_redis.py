"""The ledger of a cluster: admission and conversation state in Redis (``state: {url: "redis://host:6379/0"}``).

Several ``vocable serve`` nodes, on one machine or many, share single-use tokens, the per-address rate limit,
resumable conversations (parked, or checkpointed after every finished turn by the node serving them) and node
heartbeats through one Redis. Every operation is one round trip: a Lua script where a decision reads and writes
(claiming a token, counting a hit, taking a conversation), a ``MULTI`` pipeline where several keys are written
together. Every key expires: tokens with the token, hits after the rate window, conversations after their grace
(or ``keep_s`` while their session lives), turn records after ``state.transcript_ttl_s``, heartbeats when stale.
Times that decide between nodes (is a node alive, is a hit in the window) are Redis's own clock (``TIME``), so
clock skew between machines does not matter.

Redis down: every call raises ``StateUnavailable`` within ``state.timeout_s``, and the gate refuses admissions
(fail closed) until it is back; live sessions go on. Keys are built inside the scripts from the prefix, so this
needs one Redis (or a primary with replicas), not Redis Cluster. For single-use tokens to survive a Redis restart,
run it with persistence (``appendonly yes``).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from vocable.config.loader import ConfigError
from vocable.engine.ledger import ORPHAN_AFTER_S, StateUnavailable, dump_messages, load_messages
from vocable.engine.rate import WINDOW_S as RATE_WINDOW_S
from vocable.providers.base import Message
from vocable.redaction import redact_url

INSTALL_HINT = "pip install 'vocable[redis]'"
NODES_TTL_S = 86400  # the heartbeat index outlives any grace window, and is pruned of older entries
NODE_SNAPSHOT_TTL_S = 30

T = TypeVar("T")

# Redis's clock in seconds, as a float.
_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000 "

CLAIM = """
if redis.call('SET', KEYS[1], '', 'NX', 'PXAT', ARGV[1]) then return false end
return redis.call('GET', KEYS[1])
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == '' then redis.call('DEL', KEYS[1]) end
"""
HIT = _NOW + """
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
return 1
"""
# KEYS: the conversation, the session's transcript header, its turn records. ARGV: node, messages, grace,
# keep (ms), transport, started_at, the turn's record ('' for none), transcript ttl (s). A checkpoint arriving
# late (its session was parked since: node '') leaves the parked conversation as it is.
CHECKPOINT = """
if redis.call('HGET', KEYS[1], 'node') ~= '' then
  redis.call('HSET', KEYS[1], 'node', ARGV[1], 'messages', ARGV[2], 'grace', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[2], 'transport', ARGV[5], 'started_at', ARGV[6])
  redis.call('EXPIRE', KEYS[2], ARGV[8])
  redis.call('RPUSH', KEYS[3], ARGV[7])
  redis.call('EXPIRE', KEYS[3], ARGV[8])
end
"""
# KEYS: the conversation, the heartbeat index. ARGV: orphan_after_s, 'take' or 'peek'.
# Returns {'live', node}, {'taken', messages} or false.
TAKE = _NOW + """
local h = redis.call('HMGET', KEYS[1], 'node', 'messages', 'grace')
if not h[2] then return false end
if h[1] ~= '' then
  local seen = redis.call('ZSCORE', KEYS[2], h[1])
  local orphan = tonumber(ARGV[1])
  if seen and now - tonumber(seen) < orphan then return {'live', h[1]} end
  if not seen or now - tonumber(seen) > tonumber(h[3]) + orphan then
    if ARGV[2] == 'take' then redis.call('DEL', KEYS[1]) end
    return false
  end
end
if ARGV[2] == 'peek' then return false end
redis.call('DEL', KEYS[1])
return {'taken', h[2]}
"""
# KEYS: the heartbeat index, this node's snapshot. ARGV: node id, snapshot, snapshot ttl (ms), index ttl (s).
PUBLISH = _NOW + """
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[4]))
redis.call('EXPIRE', KEYS[1], ARGV[4])
"""
# KEYS: the heartbeat index. ARGV: max age (s), the snapshot keys' prefix. Returns id, snapshot, id, ...
WORKERS = _NOW + """
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')) do
  local snapshot = redis.call('GET', ARGV[2] .. id)
  if snapshot then out[#out + 1] = id out[#out + 1] = snapshot end
end
return out
"""


def _driver() -> Any:
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise ConfigError([("state.url", f"a Redis URL needs the redis package: {INSTALL_HINT}")]) from None
    return aioredis


class RedisLedger:
    """The ledger of every node of a cluster: one Redis, one connection pool per process."""

    shared = True

    def __init__(self, url: str, *, prefix: str = "vocable:", max_connections: int = 16, timeout_s: float = 1.0,
                 transcript_ttl_s: int = 3600) -> None:
        aioredis = _driver()
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.url = url
        self.where = redact_url(url)
        self.prefix = prefix
        self.transcript_ttl_s = transcript_ttl_s
        self.orphan_after_s = ORPHAN_AFTER_S
        self.round_trips = 0  # every call to Redis this process made (the benchmark reads it)
        # One retry: after a Redis restart each pooled connection fails once before it reconnects.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout_s, socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s, decode_responses=True, retry=Retry(NoBackoff(), 1))
        self.redis = aioredis.Redis(connection_pool=pool)
        self._claim = self.redis.register_script(CLAIM)
        self._release = self.redis.register_script(RELEASE)
        self._hit = self.redis.register_script(HIT)
        self._take = self.redis.register_script(TAKE)
        self._checkpoint = self.redis.register_script(CHECKPOINT)
        self._publish = self.redis.register_script(PUBLISH)
        self._workers = self.redis.register_script(WORKERS)

    def __repr__(self) -> str:
        return f"RedisLedger({self.where})"

    def _key(self, kind: str, name: str = "") -> str:
        return f"{self.prefix}{kind}{name}"

    async def _call(self, work: Awaitable[T]) -> T:
        from redis.exceptions import ConnectionError, TimeoutError

        self.round_trips += 1
        try:
            return await work
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise StateUnavailable(f"the shared state at {self.where} is unreachable: {type(exc).__name__}") from None

    def secret(self) -> bytes | None:
        return None  # tokens are checked only with an API key, and then signed with a key derived from it

    async def ping(self) -> None:
        await self._call(self.redis.ping())

    # ------------------------------------------------------------------------------ tokens

    async def claim_token(self, token_id: str, expires_at: float) -> str | None:
        owner = await self._call(self._claim(keys=[self._key("tok:", token_id)], args=[int(expires_at * 1000)]))
        return None if owner is None else str(owner)

    async def bind_token(self, token_id: str, session_id: str, expires_at: float) -> None:
        await self._call(self.redis.set(self._key("tok:", token_id), session_id, pxat=int(expires_at * 1000)))

    async def token_owner(self, token_id: str) -> str | None:
        owner = await self._call(self.redis.get(self._key("tok:", token_id)))
        return None if owner is None else str(owner)

    async def release_token(self, token_id: str) -> None:
        await self._call(self._release(keys=[self._key("tok:", token_id)]))

    # ------------------------------------------------------------------------------ conversations

    async def park(self, session_id: str, messages: list[Message], deadline: float) -> None:
        key = self._key("conv:", session_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping={"node": "", "messages": dump_messages(messages), "grace": 0})
        pipe.pexpireat(key, int(deadline * 1000))
        await self._call(pipe.execute())

    async def checkpoint(self, session_id: str, node: str, messages: list[Message], *, grace_s: float,
                         keep_s: float, record: dict[str, Any] | None = None) -> None:
        record = record or {}
        turn = json.dumps(record["turn"], default=str) if "turn" in record else ""
        await self._call(self._checkpoint(
            keys=[self._key("conv:", session_id), self._key("ses:", session_id), self._key("turns:", session_id)],
            args=[node, dump_messages(messages), grace_s, int(keep_s * 1000), record.get("transport", ""),
                  record.get("session_started_at", 0.0), turn, self.transcript_ttl_s]))

    async def _take_or_peek(self, session_id: str, mode: str) -> list[str] | None:
        found = await self._call(self._take(keys=[self._key("conv:", session_id), self._key("nodes")],
                                            args=[self.orphan_after_s, mode]))
        return None if not found else [str(part) for part in found]

    async def take(self, session_id: str) -> list[Message] | None:
        found = await self._take_or_peek(session_id, "take")
        return load_messages(found[1]) if found is not None and found[0] == "taken" else None

    async def holder(self, session_id: str) -> str | None:
        found = await self._take_or_peek(session_id, "peek")
        return found[1] if found is not None and found[0] == "live" else None

    async def drop(self, session_id: str) -> None:
        await self._call(self.redis.delete(self._key("conv:", session_id)))

    async def transcript(self, session_id: str) -> dict[str, Any] | None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self._key("ses:", session_id))
        pipe.lrange(self._key("turns:", session_id), 0, -1)
        meta, turns = await self._call(pipe.execute())
        if not meta and not turns:
            return None
        return {"session_id": session_id, "transport": meta.get("transport"),
                "started_at": float(meta.get("started_at") or 0.0), "ended_at": None, "end_reason": None,
                "turns": [json.loads(t) for t in turns]}

    # ------------------------------------------------------------------------------ rate limit

    async def hit(self, client: str, per_minute: int) -> bool:
        allowed = await self._call(self._hit(keys=[self._key("hits:", client)],
                                             args=[per_minute, RATE_WINDOW_S, f"{time.time()}:{secrets.token_hex(4)}"]))
        return bool(allowed)

    # ------------------------------------------------------------------------------ heartbeats

    async def publish(self, worker: str, snapshot: dict[str, Any]) -> None:
        await self._call(self._publish(
            keys=[self._key("nodes"), self._key("node:", worker)],
            args=[worker, json.dumps(snapshot, default=str), NODE_SNAPSHOT_TTL_S * 1000, NODES_TTL_S]))

    async def workers(self, max_age_s: float) -> dict[str, dict[str, Any]]:
        flat = await self._call(self._workers(keys=[self._key("nodes")], args=[max_age_s, self._key("node:")]))
        return {str(flat[i]): json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def forget_worker(self, worker: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(self._key("nodes"), worker)
        pipe.delete(self._key("node:", worker))
        await self._call(pipe.execute())

    async def aclose(self) -> None:
        await self.redis.aclose()
