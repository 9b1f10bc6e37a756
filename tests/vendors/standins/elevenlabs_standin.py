"""An ElevenLabs stand-in: HTTP streaming TTS and the websocket stream-input API, raw PCM out.

- ``POST /v1/text-to-speech/{voice_id}/stream?output_format=pcm_16000`` with ``xi-api-key``: body
  ``{"text", "model_id", "voice_settings"...}``; streams raw 16-bit PCM at the format's rate. Errors are
  ``{"detail": {"status", "message"}}`` with 401 (``invalid_api_key``), 429, 500; 422 for a bad body.
- ``WS /v1/text-to-speech/{voice_id}/stream-input?model_id=...&output_format=pcm_...``: the key in the
  ``xi-api-key`` header (a bad one is refused at the upgrade with 401) or as ``xi_api_key`` in the first
  message. The first message is ``{"text": " ", "voice_settings"?, "generation_config"?}``; then
  ``{"text": "...", "flush"?}``; ``{"text": ""}`` ends the input. Text is buffered and spoken when the buffer
  reaches the next ``chunk_length_schedule`` step (default 120, 160, 250, 290), on ``flush``, and at the end.
  Each generation is sent as ``{"audio": base64, "isFinal": null, "normalizedAlignment": {...}, "alignment":
  {...}}``; then ``{"isFinal": true}`` and close 1000. No text for ``inactivity_timeout`` seconds (query,
  default 20) closes with 1008.

``ms_per_char`` of tone per character. ``drop`` cuts the link after ``drop_after_audio`` audio messages (0
drops before any audio); ``hang`` never answers; ``slow`` pauses before each audio message.
Every text message received is kept in ``received`` with its arrival time, so tests can see text arrive
while the LLM is still writing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ._base import Drop, Standin
from .deepgram_standin import tone_pcm

DEFAULT_SCHEDULE = (120, 160, 250, 290)


def _error(status: int, status_name: str, message: str) -> JSONResponse:
    return JSONResponse({"detail": {"status": status_name, "message": message}}, status_code=status)


def _rate(output_format: str | None) -> int | None:
    if not output_format:
        return None
    if output_format.startswith("pcm_"):
        try:
            return int(output_format[4:])
        except ValueError:
            return None
    return None


class ElevenLabsStandin(Standin):
    name = "elevenlabs"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ms_per_char = 30.0
        self.chunk_ms = 100.0
        self.drop_after_audio = 1
        self.received: list[tuple[float, dict[str, Any]]] = []  # (monotonic time, message) on stream-input
        self.audio_sent_at: list[float] = []

    def reset(self) -> None:
        super().reset()
        self.received.clear()
        self.audio_sent_at.clear()

    def api_routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/text-to-speech/{voice_id}/stream", self.stream, methods=["POST"]),
            WebSocketRoute("/v1/text-to-speech/{voice_id}/stream-input", self.stream_input),
        ]

    def _auth_error(self, key: str | None, mode: str) -> JSONResponse | None:
        if mode == "401" or key != self.api_key:
            return _error(401, "invalid_api_key", "Invalid API key")
        if mode == "429":
            return _error(
                429,
                "too_many_concurrent_requests",
                "Your current subscription is associated with a maximum of 2 concurrent requests.",
            )
        if mode == "500":
            return _error(500, "internal_error", "An internal error occurred.")
        return None

    # ------------------------------------------------------------------------------------------ http

    async def stream(self, request: Request) -> Response:
        mode = self.take_mode()
        try:
            body = await request.json()
        except ValueError:
            body = None
        self.log.append({"path": request.url.path, "query": dict(request.query_params), "body": body, "mode": mode})
        self.counters["http_stream"] += 1
        if (failure := self._auth_error(request.headers.get("xi-api-key"), mode)) is not None:
            return failure
        if mode == "hang":
            await self.hang()
        rate = _rate(request.query_params.get("output_format", "mp3_44100_128"))
        if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not body["text"].strip():
            return JSONResponse(
                {"detail": [{"loc": ["body", "text"], "msg": "field required", "type": "value_error.missing"}]},
                status_code=422,
            )
        if rate is None:
            return _error(400, "unsupported_output_format", "this stand-in produces pcm_* formats only")
        pcm = tone_pcm(len(body["text"]) * self.ms_per_char / 1000, rate, freq=330.0)
        return StreamingResponse(
            self.pcm_body(pcm, int(rate * self.chunk_ms / 1000) * 2, mode),
            media_type="audio/pcm",
            headers={"request-id": f"req-{time.time_ns()}"},
        )

    # ------------------------------------------------------------------------------------- websocket

    async def stream_input(self, ws: WebSocket) -> None:
        mode = self.take_mode()
        q = ws.query_params
        self.log.append({"path": ws.url.path, "query": dict(q), "mode": mode})
        self.counters["ws_connections"] += 1
        header_key = ws.headers.get("xi-api-key")
        if mode in ("401", "429", "500") or (header_key is not None and header_key != self.api_key):
            failure = self._auth_error(header_key, mode)
            if failure is not None:
                await ws.send_denial_response(failure)
                return
        if mode == "hang":
            await self.hang()
        rate = _rate(q.get("output_format", "pcm_16000"))
        if rate is None:
            await ws.send_denial_response(_error(400, "unsupported_output_format", "pcm_* formats only"))
            return
        inactivity = float(q.get("inactivity_timeout", "20"))
        await ws.accept()
        buffer = ""
        schedule: list[int] = list(DEFAULT_SCHEDULE)
        step = 0
        first = True
        audio_messages = 0
        try:
            while True:
                try:
                    async with asyncio.timeout(inactivity):
                        raw = await ws.receive_text()
                except TimeoutError:
                    await ws.close(
                        1008, f"Have not received a new text input within the timeout of {inactivity:g} seconds"
                    )
                    return
                message = json.loads(raw)
                self.received.append((time.monotonic(), message))
                if first:
                    first = False
                    if header_key is None and message.get("xi_api_key") != self.api_key:
                        await ws.send_text(
                            json.dumps({"message": "Invalid API key", "error": "invalid_api_key", "code": 1008})
                        )
                        await ws.close(1008, "Invalid API key")
                        return
                    if message.get("text") != " ":
                        await ws.close(1008, "The first message must contain a single space as text")
                        return
                    config = message.get("generation_config") or {}
                    if config.get("chunk_length_schedule"):
                        schedule = [int(x) for x in config["chunk_length_schedule"]]
                    continue
                text = message.get("text")
                if not isinstance(text, str):
                    await ws.close(1008, "text must be a string")
                    return
                ending = text == ""
                buffer += text
                threshold = schedule[min(step, len(schedule) - 1)]
                if buffer.strip() and (ending or message.get("flush") or len(buffer) >= threshold):
                    if mode == "drop" and audio_messages >= self.drop_after_audio:
                        self.counters["drops"] += 1
                        raise Drop("elevenlabs stand-in drops the websocket")
                    await self._speak_ws(ws, buffer, rate, mode)
                    audio_messages += 1
                    buffer = ""
                    step += 1
                if ending:
                    await ws.send_text(json.dumps({"isFinal": True}))
                    await ws.close(1000)
                    return
        except WebSocketDisconnect:
            return

    async def _speak_ws(self, ws: WebSocket, text: str, rate: int, mode: str) -> None:
        if mode == "slow":
            await self.pause()
        text = text.strip() + " "
        pcm = tone_pcm(len(text) * self.ms_per_char / 1000, rate, freq=330.0)
        starts = [round(i * self.ms_per_char) for i in range(len(text))]
        alignment = {
            "chars": list(text),
            "charStartTimesMs": starts,
            "charDurationsMs": [round(self.ms_per_char)] * len(text),
        }
        self.counters["ws_audio_messages"] += 1
        self.audio_sent_at.append(time.monotonic())
        await ws.send_text(
            json.dumps(
                {
                    "audio": base64.b64encode(pcm).decode(),
                    "isFinal": None,
                    "normalizedAlignment": alignment,
                    "alignment": alignment,
                }
            )
        )
