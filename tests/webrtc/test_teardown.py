"""However a peer ends, nothing stays behind: no peer connection, no task, no file descriptor, no session."""

from __future__ import annotations

import asyncio
import gc
import json
import os

import pytest
import websockets
from aiortc import RTCPeerConnection
from kit import ClientPeer, Events, post_offer, scripted_engine, served, ws_url

pytestmark = pytest.mark.netns


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def live_peer_connections() -> list[RTCPeerConnection]:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, RTCPeerConnection)]


async def one_session(base: str, engine, ending: str) -> None:
    """Connect, hear a typed turn's reply start, then end the way ``ending`` says."""
    client = ClientPeer()
    sdp, _ = await client.offer()
    response = await post_offer(base, sdp)
    assert response.status_code == 200, response.text
    session_id = response.json()["session_id"]
    await client.accept(response.json()["sdp"])
    events = Events(await websockets.connect(ws_url(base, f"/ws/webrtc/{session_id}")))
    await client.wait_connected()
    await events.ws.send(json.dumps({"type": "text", "text": "hi"}))
    await events.wait_for("reply", final=True)
    if ending == "end":
        await events.ws.send(json.dumps({"type": "end"}))
        assert await events.closed() == 1000
    elif ending == "client_pc_close":
        await client.close()
        assert await events.closed() == 1000
    elif ending == "socket_dropped":  # no socket for disconnect_timeout_s: the server gives up on the peer
        await events.aclose()
    elif ending == "server_closes_session":
        await engine.close_session(engine.sessions[session_id], "closed")
        assert await events.closed() == 1000
    async with asyncio.timeout(5):
        while session_id in engine.sessions or engine.transports[0].peers:
            await asyncio.sleep(0.02)
    await client.close()
    await events.aclose()


async def test_twenty_sessions_in_a_row_leave_nothing_behind():
    engine = scripted_engine({"disconnect_timeout_s": 0.5})
    async with served(engine.asgi_app()) as base:
        await one_session(base, engine, "end")  # warm-up: imports, executors, keep-alive pools
        await asyncio.sleep(0.3)
        tasks_before = asyncio.all_tasks()
        fds_before = open_fds()
        endings = ["end", "client_pc_close", "socket_dropped", "server_closes_session"]
        for i in range(20):
            await one_session(base, engine, endings[i % len(endings)])
        transport = engine.transports[0]
        assert not transport.peers and not engine.sessions
        async with asyncio.timeout(5):  # sockets closed by the other side take a moment to be reaped
            while open_fds() > fds_before or [t for t in asyncio.all_tasks() - tasks_before if not t.done()]:
                await asyncio.sleep(0.05)
        leftover = [t.get_name() for t in asyncio.all_tasks() - tasks_before if not t.done()]
        assert not leftover, leftover
        assert open_fds() <= fds_before
        assert not live_peer_connections(), "every RTCPeerConnection was closed and released"
        assert engine.counters()["sessions_total"] == 21


async def test_a_peer_that_never_connects_is_closed_after_the_timeout():
    engine = scripted_engine({"disconnect_timeout_s": 0.5})
    async with served(engine.asgi_app()) as base:
        client = ClientPeer()
        response = await post_offer(base, (await client.offer())[0])  # the answer is never applied
        session_id = response.json()["session_id"]
        events = Events(await websockets.connect(ws_url(base, f"/ws/webrtc/{session_id}")))
        error = await events.wait_for("error", timeout_s=5)
        assert error["code"] == "connect_timeout" and error["fatal"]
        assert await events.closed() == 1011
        assert not engine.sessions and not engine.transports[0].peers
        await client.close()


async def test_a_peer_whose_audio_stops_is_closed_after_the_timeout():
    engine = scripted_engine({"disconnect_timeout_s": 0.6})
    async with served(engine.asgi_app()) as base:
        client = ClientPeer()
        response = await post_offer(base, (await client.offer())[0])
        await client.accept(response.json()["sdp"])
        events = Events(await websockets.connect(ws_url(base, f"/ws/webrtc/{response.json()['session_id']}")))
        await client.wait_connected()
        await asyncio.sleep(1.0)  # audio flows: no timeout
        assert engine.sessions
        client.mic.stop()  # the client's sender stops; ICE and DTLS stay up
        error = await events.wait_for("error", timeout_s=5)
        assert error["code"] == "media_timeout"
        assert await events.closed() == 1011
        await client.close()


async def test_server_shutdown_closes_every_peer():
    engine = scripted_engine()
    clients, sockets = [], []
    async with served(engine.asgi_app()) as base:
        for _ in range(3):
            client = ClientPeer()
            response = await post_offer(base, (await client.offer())[0])
            await client.accept(response.json()["sdp"])
            sockets.append(Events(await websockets.connect(ws_url(base, f"/ws/webrtc/{response.json()['session_id']}"))))
            clients.append(client)
        for client in clients:
            await client.wait_connected()
    # uvicorn closes open sockets itself (1012) before the lifespan ends; an embedding app's stop gives 1001
    codes = [await s.closed() for s in sockets]
    assert set(codes) <= {1001, 1012}, codes
    assert not engine.sessions and not engine.transports[0].peers
    for client in clients:
        await client.close()
