"""Bad input never crashes a session or the server: each mistake gets an ``error`` event with a stable code."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
import websockets
from wskit import Client, audio_bytes, connect, engine, events, live_server, send_audio, utterance, websocket_transport

from vocable.transports.protocol import BadInput, parse_message

MAX_BYTES = 64 * 1024

NON_FATAL = [
    ("hello", "invalid_json"),
    ("{'type': 'text'}", "invalid_json"),
    ("[" * 50_000, "invalid_json"),  # nesting deep enough to blow the parser's recursion limit
    ('{"type": "text", "text": 1e999999}', "invalid_field"),
    ("[1, 2, 3]", "invalid_message"),
    ('"text"', "invalid_message"),
    ("null", "invalid_message"),
    ("{}", "invalid_message"),
    ('{"type": 5}', "invalid_message"),
    ('{"type": "dance"}', "unknown_type"),
    ('{"type": "' + "x" * 5000 + '"}', "unknown_type"),
    ('{"type": "text"}', "invalid_field"),
    ('{"type": "text", "text": 5}', "invalid_field"),
    ('{"type": "text", "text": "' + "a" * 4001 + '"}', "invalid_field"),
    ('{"type": "start"}', "invalid_field"),
    ('{"type": "start", "sample_rate": "16000"}', "invalid_field"),
    ('{"type": "start", "sample_rate": 16000.5}', "invalid_field"),
    ('{"type": "start", "sample_rate": true}', "invalid_field"),
    ('{"type": "start", "sample_rate": 12345}', "unsupported_sample_rate"),
    ('{"type": "start", "sample_rate": -1}', "unsupported_sample_rate"),
]


@pytest.mark.parametrize(("text", "code"), [c for c in NON_FATAL if c[1] != "unsupported_sample_rate"])
def test_parse_message_codes(text: str, code: str) -> None:
    if '"a' in text:  # the length limit is the transport's setting, not the parser's
        return
    with pytest.raises(BadInput) as bad:
        parse_message(text)
    assert bad.value.code == code
    assert len(bad.value.message) < 200, "error messages stay short whatever the input"


def test_unknown_fields_are_ignored() -> None:
    assert parse_message('{"type": "text", "text": "hi", "lang": "en"}').text == "hi"  # type: ignore[union-attr]


async def _still_answers(client: Client) -> None:
    await client.send({"type": "text", "text": "are you still there"})
    turn = await client.turn()
    assert events(turn, "reply") and audio_bytes(turn) > 0


async def test_every_bad_message_gets_its_error_and_the_session_goes_on() -> None:
    eng = engine({"max_message_bytes": MAX_BYTES})
    async with live_server(eng) as server, connect(server.ws_url()) as client:
        ready = await client.next("ready")
        for text, code in NON_FATAL:
            await client.send(text)
            error = await client.next("error")
            assert (error["code"], error["fatal"]) == (code, False), text[:60]
            assert isinstance(error["message"], str) and error["message"]
        assert ready["session_id"] in eng.sessions
        # the unsupported rate left the session at its rate: 16 kHz speech still makes a turn
        await send_audio(client, utterance())
        turn = await client.turn()
        assert events(turn, "transcript")[-1]["text"] == "what is the weather today"
        await _still_answers(client)


async def test_odd_length_pcm_is_reported_once_and_still_heard() -> None:
    async with live_server(engine()) as server, connect(server.ws_url()) as client:
        await client.next("ready")
        pcm = utterance()
        await client.send(pcm[:641])
        error = await client.next("error")
        assert error["code"] == "odd_length_pcm" and not error["fatal"]
        await client.send(pcm[641:1283])
        await send_audio(client, pcm[1283:])
        turn = await client.turn()
        assert events(turn, "transcript")[-1]["final"]
        assert [e["code"] for e in events(client.seen, "error")] == ["odd_length_pcm"]


@pytest.mark.parametrize("kind", ["binary", "text"])
async def test_oversized_message_is_an_error_then_close_1009(kind: str) -> None:
    eng = engine({"max_message_bytes": MAX_BYTES})
    async with live_server(eng) as server:
        async with connect(server.ws_url()) as client:
            await client.next("ready")
            big: bytes | str = b"\x00" * (MAX_BYTES + 2) if kind == "binary" else json.dumps(
                {"type": "text", "text": "a" * MAX_BYTES})
            await client.send(big)
            error = await client.next("error")
            assert (error["code"], error["fatal"]) == ("message_too_large", True)
            assert (await client.next("closed"))["reason"] == "message_too_large"
            assert await client.closed() == (1009, "message_too_large")
        async with connect(server.ws_url()) as client:  # the server goes on
            await client.next("ready")
            await _still_answers(client)
        assert len(eng.sessions) <= 1


async def test_message_over_the_server_limit_closes_1009_and_the_server_goes_on() -> None:
    """Above uvicorn's own ws_max_size the protocol library closes first; nothing leaks."""
    eng = engine({"max_message_bytes": MAX_BYTES})
    async with live_server(eng, ws_max_size=MAX_BYTES * 2) as server:
        async with connect(server.ws_url()) as client:
            await client.next("ready")
            await client.send(b"\x00" * (MAX_BYTES * 3))
            code, _ = await client.closed()
            assert code == 1009
        async with connect(server.ws_url()) as client:
            await client.next("ready")
            await _still_answers(client)
        async with asyncio.timeout(5):
            while len(eng.sessions) > 0:
                await asyncio.sleep(0.02)


@pytest.mark.parametrize(("query", "code"), [("sample_rate=12345", "unsupported_sample_rate"),
                                             ("sample_rate=abc", "invalid_field")])
async def test_bad_connect_query_is_refused_with_1008(query: str, code: str) -> None:
    eng = engine()
    async with live_server(eng) as server:
        async with connect(server.ws_url(query=query)) as client:
            error = await client.next("error")
            assert (error["code"], error["fatal"]) == (code, True)
            assert (await client.closed())[0] == 1008
        assert not eng.sessions
        async with connect(server.ws_url()) as client:
            await client.next("ready")


async def test_a_client_that_never_reads_is_bounded_then_closed() -> None:
    """The session's channel never grows past its bound, and the stuck client is closed (1008)."""
    eng = engine({"send_timeout_s": 1.0},
                 llm={"provider": "scripted", "reply": "A long answer that keeps on going. " * 60},
                 tts={"provider": "scripted", "sample_rate": 48000})
    async with live_server(eng) as server:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window: the server feels it at once
        raw.connect(("127.0.0.1", server.port))
        raw.setblocking(False)
        async with connect(server.ws_url(), sock=raw, max_queue=1, compression=None) as client:
            await client.next("ready")
            (session,) = eng.sessions.values()
            _shrink_server_send_buffer(server, raw.getsockname()[1])
            await client.send({"type": "text", "text": "talk for a long time"})
            peak = 0
            transport = websocket_transport(eng)
            async with asyncio.timeout(30):
                while transport.slow_client_closes == 0:
                    peak = max(peak, len(session.events))
                    assert peak <= session.events.maxsize
                    await asyncio.sleep(0.01)
            try:
                async with asyncio.timeout(5):
                    while session.id in eng.sessions:
                        await asyncio.sleep(0.01)
            except TimeoutError:
                pytest.fail("the stuck client was dropped but its session did not finish closing within 5 s")
            assert transport.slow_client_closes == 1
            assert session.close_reason == "slow_client"
            with pytest.raises((websockets.ConnectionClosed, TimeoutError)):
                while True:  # what was buffered arrives, then the connection ends
                    await client.recv(5)
        async with connect(server.ws_url()) as other:
            await other.next("ready")


def _shrink_server_send_buffer(server: object, client_port: int) -> None:
    """Loopback TCP would buffer megabytes in the kernel first; a small send buffer shows the app's own bound."""
    for protocol in server.server.server_state.connections:  # type: ignore[attr-defined]
        sock = protocol.transport.get_extra_info("socket")
        if sock.getpeername()[1] == client_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            return
    raise AssertionError("the server-side connection was not found")
