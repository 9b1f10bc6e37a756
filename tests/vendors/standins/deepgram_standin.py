"""A Deepgram stand-in: live transcription at ``WS /v1/listen`` and Aura TTS at ``POST /v1/speak``.

Auth is ``Authorization: Token <key>`` on both (a bad key is refused at the upgrade / request with 401 and
``{"err_code": "INVALID_AUTH", ...}``, as Deepgram does).

Live STT, with ``encoding=linear16``: the stand-in cannot recognise speech, so it "hears" a scripted word for
every ``word_ms`` of voiced audio (RMS above a threshold) and sends what Deepgram sends:

- ``Results`` interim (``is_final: false``) as words appear, when ``interim_results=true``;
- ``Results`` with ``is_final: true`` every ``words_per_final`` words, and with ``speech_final: true`` after
  ``endpointing`` ms of silence following speech;
- ``UtteranceEnd`` after ``utterance_end_ms`` of silence, ``SpeechStarted`` when ``vad_events=true``;
- ``Finalize`` -> ``Results`` with ``from_finalize: true`` (possibly empty); ``KeepAlive`` counted;
  ``CloseStream`` -> last results, ``Metadata``, close 1000;
- no audio and no text message for ``net_timeout_s`` -> close 1011 ``NET-0001``.

The word script continues across connections, as a real stream would hear new words after a reconnect.
``drop`` cuts the TCP link after ``drop_after_bytes`` of audio; ``hang`` never completes the upgrade.

TTS returns raw linear16 (``container=none``) at ``sample_rate``: ``ms_per_char`` of tone per character,
streamed in ``chunk_ms`` pieces; ``drop`` cuts the body halfway.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ._base import Drop, Standin, check_bearer

SCRIPT = "hello there I would like to know the weather in Paris tomorrow please and also in Tokyo".split()


def _error(status: int, err_code: str, err_msg: str) -> JSONResponse:
    return JSONResponse({"err_code": err_code, "err_msg": err_msg, "request_id": str(uuid.uuid4())}, status_code=status)


def tone_pcm(duration_s: float, sample_rate: int, freq: float = 220.0, amplitude: int = 6000) -> bytes:
    n = int(duration_s * sample_rate)
    t = np.arange(n) / sample_rate
    return (np.sin(2 * math.pi * freq * t) * amplitude).astype("<i2").tobytes()


def rms(pcm: bytes) -> float:
    if len(pcm) < 2:
        return 0.0
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2)))


@dataclass
class _Stream:
    """State of one live connection."""

    sample_rate: int
    interim: bool
    endpointing_ms: float | None
    utterance_end_ms: float | None
    vad_events: bool
    mode: str = "normal"
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    audio_s: float = 0.0  # audio time received so far
    voiced_bytes: int = 0  # voiced audio not yet turned into a word
    words: list[tuple[str, float, float]] = field(default_factory=list)  # not yet finalized
    segment_start: float = 0.0
    silence_ms: float = 0.0
    utterance_open: bool = False  # words heard since the last UtteranceEnd
    in_speech: bool = False
    audio_bytes: int = 0
    last_word_end: float = 0.0


class DeepgramStandin(Standin):
    name = "deepgram"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.word_ms = 200.0
        self.words_per_final = 4
        self.voice_threshold = 500.0
        self.net_timeout_s = 10.0
        self.drop_after_bytes = 16000
        self.ms_per_char = 40.0
        self.chunk_ms = 100.0
        self.word_index = 0
        self.answer_finalize = True  # False: ignore Finalize, as a stalled server would
        self.sent: list[dict[str, Any]] = []  # every JSON message sent on /v1/listen

    def reset(self) -> None:
        super().reset()
        self.word_index = 0
        self.sent.clear()

    def api_routes(self) -> list[BaseRoute]:
        return [WebSocketRoute("/v1/listen", self.listen), Route("/v1/speak", self.speak, methods=["POST"])]

    # -------------------------------------------------------------------------------------- live STT

    async def listen(self, ws: WebSocket) -> None:
        mode = self.take_mode()
        q = ws.query_params
        self.log.append({"path": "/v1/listen", "query": dict(q), "mode": mode})
        self.counters["connections"] += 1
        if mode == "401" or not check_bearer(ws.headers.get("authorization"), self.api_key, "Token"):
            await ws.send_denial_response(_error(401, "INVALID_AUTH", "Invalid credentials."))
            return
        if mode == "429":
            await ws.send_denial_response(_error(429, "TOO_MANY_REQUESTS", "Too many requests. Please try again later"))
            return
        if mode == "500":
            await ws.send_denial_response(_error(500, "INTERNAL_SERVER_ERROR", "Internal server error."))
            return
        if mode == "hang":
            await self.hang()
        if q.get("encoding", "linear16") != "linear16" or not q.get("sample_rate"):
            await ws.send_denial_response(
                _error(400, "Bad Request", "this stand-in needs encoding=linear16 and a sample_rate")
            )
            return

        def ms(name: str, default: float | None) -> float | None:
            value = q.get(name)
            if value is None:
                return default
            return None if value == "false" else float(value)

        stream = _Stream(
            sample_rate=int(q["sample_rate"]),
            interim=q.get("interim_results") == "true",
            endpointing_ms=ms("endpointing", 10.0),  # Deepgram's default endpointing is 10 ms
            utterance_end_ms=ms("utterance_end_ms", None),
            vad_events=q.get("vad_events") == "true",
            mode=mode,
        )
        await ws.accept()
        try:
            while True:
                try:
                    async with asyncio.timeout(self.net_timeout_s):
                        message = await ws.receive()
                except TimeoutError:
                    self.counters["net_timeouts"] += 1
                    await ws.close(1011, "NET-0001")
                    return
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    await self._on_audio(ws, stream, message["bytes"], mode)
                elif message.get("text") is not None:
                    if not await self._on_text(ws, stream, message["text"]):
                        return
        except WebSocketDisconnect:
            return

    async def _send(self, ws: WebSocket, s: _Stream, payload: dict[str, Any]) -> None:
        if s.mode == "slow":
            await self.pause()
        self.sent.append(payload)
        await ws.send_text(json.dumps(payload))

    def _results(
        self,
        s: _Stream,
        words: list[tuple[str, float, float]],
        *,
        is_final: bool,
        speech_final: bool = False,
        from_finalize: bool = False,
    ) -> dict[str, Any]:
        start = words[0][1] if words else s.segment_start
        end = words[-1][2] if words else s.audio_s
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(max(0.0, end - start), 3),
            "start": round(start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [
                    {
                        "transcript": " ".join(w for w, _, _ in words),
                        "confidence": 0.98 if words else 0.0,
                        "words": [
                            {
                                "word": w.lower(),
                                "start": round(a, 3),
                                "end": round(b, 3),
                                "confidence": 0.98,
                                "punctuated_word": w,
                            }
                            for w, a, b in words
                        ],
                    }
                ]
            },
            "metadata": {
                "request_id": s.request_id,
                "model_info": {"name": "2-general-nova", "version": "2024-01-09.29447", "arch": "nova-3"},
                "model_uuid": "standin-model-uuid",
            },
        }

    async def _finalize_segment(
        self, ws: WebSocket, s: _Stream, *, speech_final: bool = False, from_finalize: bool = False
    ) -> None:
        await self._send(
            ws, s, self._results(s, s.words, is_final=True, speech_final=speech_final, from_finalize=from_finalize)
        )
        s.words = []
        s.segment_start = s.audio_s

    async def _on_audio(self, ws: WebSocket, s: _Stream, pcm: bytes, mode: str) -> None:
        self.counters["audio_messages"] += 1
        self.counters["audio_bytes"] += len(pcm)
        s.audio_bytes += len(pcm)
        if mode == "drop" and s.audio_bytes >= self.drop_after_bytes:
            self.counters["drops"] += 1
            raise Drop("deepgram stand-in drops the connection")
        duration = len(pcm) / 2 / s.sample_rate
        s.audio_s += duration
        if rms(pcm) >= self.voice_threshold:
            if not s.in_speech and s.vad_events and not s.utterance_open:
                await self._send(
                    ws, s, {"type": "SpeechStarted", "channel": [0, 1], "timestamp": round(s.audio_s - duration, 3)}
                )
            s.in_speech = True
            s.silence_ms = 0.0
            s.voiced_bytes += len(pcm)
            bytes_per_word = int(s.sample_rate * 2 * self.word_ms / 1000)
            while s.voiced_bytes >= bytes_per_word:
                s.voiced_bytes -= bytes_per_word
                word = SCRIPT[self.word_index % len(SCRIPT)]
                self.word_index += 1
                s.words.append((word, max(0.0, s.audio_s - self.word_ms / 1000), s.audio_s))
                s.last_word_end = s.audio_s
                s.utterance_open = True
                if len(s.words) >= self.words_per_final:
                    await self._finalize_segment(ws, s)
                elif s.interim:
                    await self._send(ws, s, self._results(s, s.words, is_final=False))
            return
        s.in_speech = False
        s.silence_ms += duration * 1000
        if s.words and s.endpointing_ms is not None and s.silence_ms >= s.endpointing_ms:
            await self._finalize_segment(ws, s, speech_final=True)
        if s.utterance_open and s.utterance_end_ms is not None and s.silence_ms >= s.utterance_end_ms:
            s.utterance_open = False
            await self._send(
                ws, s, {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": round(s.last_word_end, 3)}
            )

    async def _on_text(self, ws: WebSocket, s: _Stream, text: str) -> bool:
        """Handle a control message; False when the stream is over."""
        try:
            kind = json.loads(text).get("type")
        except (ValueError, AttributeError):
            kind = None
        if kind == "KeepAlive":
            self.counters["keepalive"] += 1
        elif kind == "Finalize":
            self.counters["finalize"] += 1
            if self.answer_finalize:
                await self._finalize_segment(ws, s, from_finalize=True)
        elif kind == "CloseStream":
            self.counters["close_stream"] += 1
            if s.words:
                await self._finalize_segment(ws, s)
            await self._send(
                ws,
                s,
                {
                    "type": "Metadata",
                    "transaction_key": "deprecated",
                    "request_id": s.request_id,
                    "sha256": "0" * 64,
                    "created": datetime.now(UTC).isoformat(),
                    "duration": round(s.audio_s, 3),
                    "channels": 1,
                },
            )
            await ws.close(1000)
            return False
        else:
            await self._send(
                ws,
                s,
                {
                    "type": "Error",
                    "variant": "SchemaError",
                    "description": "could not parse the text message",
                    "message": text[:200],
                },
            )
        return True

    # ------------------------------------------------------------------------------------------- TTS

    async def speak(self, request: Request) -> Response:
        mode = self.take_mode()
        q = request.query_params
        try:
            body = await request.json()
        except ValueError:
            body = {}
        self.log.append({"path": "/v1/speak", "query": dict(q), "body": body, "mode": mode})
        self.counters["speak"] += 1
        if mode == "401" or not check_bearer(request.headers.get("authorization"), self.api_key, "Token"):
            return _error(401, "INVALID_AUTH", "Invalid credentials.")
        if mode == "429":
            return _error(429, "TOO_MANY_REQUESTS", "Too many requests. Please try again later")
        if mode == "500":
            return _error(500, "INTERNAL_SERVER_ERROR", "Internal server error.")
        if mode == "hang":
            await self.hang()
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip() or len(text) > 2000:
            return _error(400, "INVALID_QUERY_PARAMETER", "text must be 1 to 2000 characters")
        if q.get("encoding", "linear16") != "linear16" or q.get("container", "none") not in ("none",):
            return _error(400, "UNSUPPORTED_AUDIO_FORMAT", "this stand-in streams linear16 with container=none")
        rate = int(q.get("sample_rate", "24000"))
        pcm = tone_pcm(len(text) * self.ms_per_char / 1000, rate)
        return StreamingResponse(
            self.pcm_body(pcm, int(rate * self.chunk_ms / 1000) * 2, mode),
            media_type="application/octet-stream",
            headers={"dg-request-id": str(uuid.uuid4()), "dg-model-name": q.get("model", "")},
        )

