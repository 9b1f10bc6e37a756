"""Phone calls per core: vocable's Twilio transport against Pipecat's TwilioFrameSerializer over its FastAPI
WebSocket transport, in the same run, with the instant fakes.

Every call is a stand-in Twilio on 127.0.0.1: ``connected`` and ``start``, then a ``media`` message every 20 ms
at real time (base64 mu-law, 8 kHz): silence, with a 600 ms tone (which the energy VAD hears) every 4 s. Both
servers run the same instant scripted pipeline at 16 kHz as ws_capacity.py (energy VAD, 300 ms hangover,
scripted STT/LLM/TTS) behind their Twilio layer, which resamples the call's 8 kHz both ways, and answer each
burst with ~2 s of reply audio as ``media`` messages. The stand-in echoes every ``mark`` at once (vocable sends
one after each piece of reply text and every 200 ms; Pipecat sends none). Signatures are checked on vocable's
stream upgrade (Pipecat checks none).

Everything else is ws_capacity.py's method, reused from it: one server process pinned to CPU 0, the load
generator pinned to CPU 1, frame lateness measured at the client (p99 < 20 ms, >= 90 % of replies, every call
connected), N stepped up then bisected, servers interleaved step by step. Prints a table, then a JSON object
of all figures as the last line. Goal (issue 18): vocable at least 3 x Pipecat's calls per core.

Usage: python benchmarks/phone_capacity.py [--kinds vocable,pipecat] [--window-s 10] [--quick] [--at N]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ws_capacity as ws
from _common import emit, table
from starlette.websockets import WebSocket

HERE = Path(__file__).resolve()
PHONE_RATE = 8000
AUTH_TOKEN = "bench-auth-token-0000"
PUBLIC = "https://phone.bench.example"
STREAM_PATH = "/twilio/stream"
KINDS = ("vocable", "pipecat")


def ulaw(pcm: bytes) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    return audioop.lin2ulaw(pcm, 2)


# ================================================================================================ servers


def vocable_app() -> Any:
    from vocable import Engine

    config = ws.vocable_config()
    config["transports"] = {"twilio": {"auth_token": AUTH_TOKEN, "public_url": PUBLIC}}
    engine = Engine.from_dict(config, autoload=False, freeze_gc=True, plugins=[
        "vocable.plugins.core", "vocable.testing.plugin", "vocable.transports.phone"])
    return engine.asgi_app()


def pipecat_app() -> Any:
    from _pipecat_fakes import quiet_pipecat_logs
    from fastapi import FastAPI
    from pipecat.runner.utils import parse_telephony_websocket
    from pipecat.serializers.twilio import TwilioFrameSerializer
    from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport

    quiet_pipecat_logs()
    app = FastAPI()

    @app.websocket(STREAM_PATH)
    async def call(websocket: WebSocket) -> None:  # as Pipecat's Twilio examples run a call
        await websocket.accept()
        _, call_data = await parse_telephony_websocket(websocket)
        serializer = TwilioFrameSerializer(stream_sid=call_data["stream_id"], call_sid=call_data["call_id"],
                                           params=TwilioFrameSerializer.InputParams(auto_hang_up=False))
        await ws.run_pipecat(FastAPIWebsocketTransport(websocket, FastAPIWebsocketParams(
            audio_in_enabled=True, audio_out_enabled=True, add_wav_header=False, serializer=serializer)))

    return app


def serve(kind: str, port: int, variant: str = "") -> None:
    ws.favour()
    os.sched_setaffinity(0, {ws.SERVER_CPU})
    from _instant_fakes import instant_fake_audio

    instant_fake_audio()
    import logging

    import structlog
    import uvicorn

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    app = {"vocable": vocable_app, "pipecat": pipecat_app}[kind]()
    options: dict[str, object] = {"ws_max_size": 1 << 20, "lifespan": "on"}
    if kind == "vocable":
        from vocable.transports.direct_frames import SERVE_OPTIONS

        options = SERVE_OPTIONS
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", **options)  # type: ignore[arg-type]


# ================================================================================================ client


class Call(asyncio.Protocol):
    """A stand-in Twilio call in the shape of ws_capacity's client ``Session``, so that its ``load`` runs calls:
    each 20 ms PCM16 frame it is given goes out as a ``media`` message (8 kHz mu-law, base64), reply media is
    timed on arrival (its size counted as PCM16 at 16 kHz), marks are echoed at once. websockets' sans-I/O
    protocol does the framing."""

    count = 0
    signature = ""
    _media: dict[bytes, str] = {}  # the load sends two frames only (silence, tone): each converted once

    def __init__(self, path: str, port: int, offset_ms: float) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        Call.count += 1
        self.protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}{STREAM_PATH}"), max_size=None)
        self.offset_ms = offset_ms
        self.stream_sid = f"MZ{Call.count:032x}"
        self.prefix = '{"event":"media","streamSid":"' + self.stream_sid + '","media":{"track":"inbound","payload":"'
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.t0 = 0.0
        self.sent = self.texts = self.marks = 0
        self.arrivals: list[float] = []
        self.sizes: list[int] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        request = self.protocol.connect()
        request.headers["X-Twilio-Signature"] = self.signature
        self.protocol.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        from websockets.frames import Frame, Opcode
        from websockets.http11 import Response

        clock = time.perf_counter()
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                if event.status_code == 101:
                    self.begin()
                    if not self.ready.done():
                        self.ready.set_result(None)
                elif not self.ready.done():
                    self.ready.set_exception(ConnectionError(f"HTTP {event.status_code}"))
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self.texts += 1
                payload = event.data
                at = payload.find(b'"payload"')
                if at >= 0:
                    start = payload.index(b'"', at + 9) + 1
                    self.arrivals.append(clock)
                    self.sizes.append((payload.index(b'"', start) - start) * 3)  # base64 -> PCM16 bytes at 16 kHz
                elif b'"mark"' in payload:  # played at once, as far as the benchmark is concerned
                    self.marks += 1
                    name = json.loads(payload)["mark"]["name"]
                    self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})
            elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                self.closed = True
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("connection lost"))

    def send(self, message: dict[str, Any] | str) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            return
        self.protocol.send_text((message if isinstance(message, str) else json.dumps(message)).encode())
        self._flush()

    def write_frame(self, pcm16k: bytes, opcode: int = 2) -> None:
        payload = self._media.get(pcm16k)
        if payload is None:
            from vocable.engine.audio import resample_pcm

            payload = self._media[pcm16k] = base64.b64encode(ulaw(resample_pcm(pcm16k, ws.RATE, PHONE_RATE))).decode()
        self.send(self.prefix + payload + '"}}')

    def _flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            for chunk in self.protocol.data_to_send():
                if chunk:
                    self.transport.write(chunk)

    def begin(self) -> None:
        self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        self.send({"event": "start", "sequenceNumber": "1", "streamSid": self.stream_sid, "start": {
            "accountSid": "AC" + "0" * 32, "streamSid": self.stream_sid, "callSid": "CA" + self.stream_sid[2:],
            "tracks": ["inbound"], "customParameters": {"From": "+14155550123"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


def run_load(args: argparse.Namespace) -> None:
    os.sched_setaffinity(0, {ws.CLIENT_CPU})
    ws.favour()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    from twilio.request_validator import RequestValidator

    Call.signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC.replace("https", "wss") + STREAM_PATH, {})
    ws.Session = Call  # type: ignore[misc]  # ws_capacity's load, on phone calls
    result = asyncio.run(ws.load(args.load, args.port, args.n, args.window_s, args.server_pid, args.seed))
    print(json.dumps(result), flush=True)


# ================================================================================================ orchestration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="vocable,pipecat")
    parser.add_argument("--window-s", type=float, default=10.0)
    parser.add_argument("--start", type=int, default=10)
    parser.add_argument("--max-sessions", type=int, default=2560)
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="6 s windows, at most 9 steps per server")
    parser.add_argument("--at", type=int, help="run one step at this many calls per kind, no search")
    for hidden in ("--serve", "--load", "--variant"):
        parser.add_argument(hidden, default="", help=argparse.SUPPRESS)
    for hidden in ("--port", "--n", "--server-pid"):
        parser.add_argument(hidden, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ramp-per-s", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.port)
    if args.load:
        return run_load(args)
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs 2 CPUs: the server on one, the load generator on the other")
    if args.quick:
        args.window_s, args.max_steps = min(args.window_s, 6.0), min(args.max_steps, 9)
    ws.HERE = HERE  # ws_capacity's steps and searches start this script's servers and load generator
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip() in KINDS]
    log: list[dict[str, Any]] = []
    if args.at:
        results = {}
        for kind in kinds:
            r = ws.step(kind, args.at, args.window_s, seed=0)
            r["pass"], r["why"] = ws.verdict(r)
            r["capacity"] = args.at if r["pass"] else 0
            log.append(r)
            results[kind] = r
    else:
        results = ws.search_all([ws.Search(kind, args.start, args.max_sessions, args.max_steps) for kind in kinds],
                                args.window_s, log)
    figures: dict[str, Any] = {"window_s": args.window_s, "lateness_goal_ms": ws.LATENESS_GOAL_MS}
    rows = []
    for kind, r in results.items():
        cap = r.get("capacity", 0)
        cpu_per = r["server_cpu_pct"] / cap if cap else float("nan")
        figures[f"{kind}_calls"] = cap
        figures[f"{kind}_first_failing"] = r.get("first_failing")
        figures[f"{kind}_first_failing_why"] = r.get("first_failing_why")
        figures[f"{kind}_client_limited"] = r.get("client_limited", False)
        for key in ("lateness_p50_ms", "lateness_p99_ms", "server_cpu_pct", "rss_per_session_mib"):
            figures[f"{kind}_{key}"] = r.get(key)
        figures[f"{kind}_cpu_per_call_pct"] = round(cpu_per, 3)
        figures[f"{kind}_cpu_bound_calls_per_core"] = round(100 / cpu_per) if cap else None
        rows.append((kind, cap, r.get("lateness_p99_ms"), r.get("server_cpu_pct"), round(cpu_per, 3),
                     figures[f"{kind}_cpu_bound_calls_per_core"], r.get("rss_per_session_mib")))
    if results.get("pipecat", {}).get("capacity") and "vocable" in results:
        figures["vocable_vs_pipecat"] = round(results["vocable"].get("capacity", 0) / results["pipecat"]["capacity"], 2)
        if figures.get("pipecat_cpu_bound_calls_per_core") and figures.get("vocable_cpu_bound_calls_per_core"):
            figures["vocable_vs_pipecat_cpu_bound"] = round(
                figures["vocable_cpu_bound_calls_per_core"] / figures["pipecat_cpu_bound_calls_per_core"], 2)
        figures["goal"] = "vocable >= 3 x pipecat calls per core"
        figures["goal_met"] = figures["vocable_vs_pipecat"] >= 3
    # CPU per call at each N a server was measured at (a server that never meets the lateness goal still has
    # these), and vocable's advantage at the Ns both were measured at
    per_call: dict[str, dict[int, float]] = {}
    for r in log:
        per_call.setdefault(r["kind"], {})[r["sessions"]] = round(r["server_cpu_pct"] / r["sessions"], 3)
    figures["cpu_per_call_pct_by_n"] = per_call
    same = sorted(set(per_call.get("vocable", {})) & set(per_call.get("pipecat", {})))
    figures["vocable_vs_pipecat_cpu_at_same_n"] = {
        n: round(per_call["pipecat"][n] / per_call["vocable"][n], 2) for n in same if per_call["vocable"][n]}
    figures["steps"] = [{k: r.get(k) for k in ("kind", "sessions", "lateness_p99_ms", "server_cpu_pct",
                                               "client_cpu_pct", "texts_per_s", "why")} for r in log]
    print(f"Phone calls (Twilio Media Streams) at lateness p99 < {ws.LATENESS_GOAL_MS:g} ms (servers on CPU "
          f"{ws.SERVER_CPU}, load from CPU {ws.CLIENT_CPU}; {args.window_s:g} s windows)")
    print(table(("server", "calls", "p99 ms", "cpu %", "cpu %/call", "cpu-bound/core", "MiB/call"), rows))
    emit(figures)


if __name__ == "__main__":
    main()
