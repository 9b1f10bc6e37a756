"""An OpenAI API stand-in: chat completions, ``/v1/audio/transcriptions`` and ``/v1/audio/speech``.

Chat is ``_chat.ChatStandin``'s protocol at ``/v1``, as OpenAI sends it: no vendor fields, ``usage: null`` on
every chunk while ``stream_options.include_usage`` is on and the usage in a last chunk with ``choices: []``.

- ``POST /v1/audio/transcriptions``: multipart (``file``, ``model``, ``language``, ``prompt``,
  ``response_format``, ``temperature``). The file must be a mono 16-bit WAV. The stand-in cannot recognise
  speech: voiced audio (RMS above a threshold) is heard as ``transcript``, anything quieter as ``""``; audio
  under 0.1 s is refused with 400 ``audio_too_short``, as OpenAI does. ``json`` gives ``{"text", "usage"}``,
  ``text`` the bare text.
- ``POST /v1/audio/speech``: JSON (``model``, ``input``, ``voice``, ``response_format``, ``speed``,
  ``instructions``). Only ``response_format: pcm`` is served: 24 kHz s16le mono, ``ms_per_char`` of tone per
  character (divided by ``speed``), streamed in ``chunk_ms`` pieces; ``drop`` cuts it halfway.
- Azure: the same three at ``/openai/deployments/{deployment}/...`` with the key in ``api-key`` and an
  ``api-version`` query parameter (400 without it).

``require_key = False`` makes it a local server that takes any key (as Ollama does). Failure modes are the
base class's, on every API route.
"""

from __future__ import annotations

import io
import uuid
import wave
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ._base import Drop
from ._chat import ChatStandin, error
from .deepgram_standin import rms, tone_pcm

DEFAULT_REPLY = "Hello from the OpenAI stand-in. It is mild and dry today, a fine day for a walk."
DEFAULT_TRANSCRIPT = "What is the weather like in Paris today?"
PCM_RATE = 24000
VOICED_RMS = 300.0
AZURE = "/openai/deployments/{deployment}"


class OpenAIStandin(ChatStandin):
    name = "openai"
    prefix = "/v1"
    model_id = "gpt-standin"
    default_reply = DEFAULT_REPLY
    rate_limit_message = "Rate limit reached for gpt-standin on requests per min (RPM): Limit 3. Please try again."

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.require_key = True
        self.transcript = DEFAULT_TRANSCRIPT
        self.ms_per_char = 40.0
        self.chunk_ms = 100.0

    def api_routes(self) -> list[BaseRoute]:
        routes = super().api_routes()
        for prefix in (self.prefix, AZURE):
            routes += [
                Route(f"{prefix}/audio/transcriptions", self.transcriptions, methods=["POST"]),
                Route(f"{prefix}/audio/speech", self.speech, methods=["POST"]),
            ]
        return [*routes, Route(f"{AZURE}/chat/completions", self.chat_completions, methods=["POST"])]

    # ------------------------------------------------------------------------------ vendor's own parts

    def authorized(self, request: Request) -> bool:
        if request.url.path.startswith("/openai/deployments/"):
            return request.headers.get("api-key") == self.api_key and "api-version" in request.query_params
        if not self.require_key:
            return (request.headers.get("authorization") or "").startswith("Bearer ")
        return super().authorized(request)

    def unauthorized(self) -> Response:
        return error(
            401, "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error", "invalid_api_key",
        )

    def first_extra(self, request_id: str) -> dict[str, Any]:
        return {"usage": None}

    def completion_extra(self) -> dict[str, Any]:
        return {"service_tier": "default"}

    # ------------------------------------------------------------------------------------------ audio

    async def transcriptions(self, request: Request) -> Response:
        mode = self.take_mode()
        form = await request.form()
        upload = form.get("file")
        fields = {k: v for k, v in form.items() if k != "file" and isinstance(v, str)}
        record: dict[str, Any] = {"path": request.url.path, "query": dict(request.query_params), "mode": mode, **fields}
        self.log.append(record)
        self.counters["transcriptions"] += 1
        refused = await self.refused(request, mode)
        if refused is not None:
            return refused
        if mode == "drop":
            self.counters["drops"] += 1
            raise Drop("openai stand-in drops the connection")
        if mode == "slow":
            await self.pause()
        if upload is None or isinstance(upload, str) or not fields.get("model"):
            return error(400, "'file' and 'model' are required", "invalid_request_error")
        data = await upload.read()
        record.update(filename=upload.filename, content_type=upload.content_type)
        try:
            with wave.open(io.BytesIO(data), "rb") as wav:
                channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
                pcm = wav.readframes(wav.getnframes())
        except (wave.Error, EOFError):
            return error(400, "Invalid file format. Supported formats: ['wav', 'mp3', ...]", "invalid_request_error")
        if channels != 1 or width != 2:
            return error(400, "this stand-in reads mono 16-bit WAV only", "invalid_request_error")
        seconds = len(pcm) / 2 / rate
        record.update(sample_rate=rate, seconds=seconds)
        if seconds < 0.1:
            return error(400, "Audio file is too short. Minimum audio length is 0.1 seconds.",
                         "invalid_request_error", "audio_too_short")
        text = self.transcript if rms(pcm) >= VOICED_RMS else ""
        record["text"] = text
        if fields.get("response_format") == "text":
            return PlainTextResponse(text + "\n")
        return JSONResponse({"text": text, "usage": {"type": "duration", "seconds": max(1, round(seconds))}})

    async def speech(self, request: Request) -> Response:
        mode = self.take_mode()
        try:
            body = await request.json()
        except ValueError:
            body = {}
        self.log.append({"path": request.url.path, "query": dict(request.query_params), "body": body, "mode": mode})
        self.counters["speech"] += 1
        refused = await self.refused(request, mode)  # drop and slow act on the audio stream
        if refused is not None:
            return refused
        text = body.get("input") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip() or len(text) > 4096:
            return error(400, "input must be 1 to 4096 characters", "invalid_request_error")
        if not body.get("model") or not body.get("voice"):
            return error(400, "'model' and 'voice' are required", "invalid_request_error")
        if body.get("response_format") != "pcm":
            return error(400, "this stand-in streams response_format=pcm only", "invalid_request_error")
        speed = float(body.get("speed") or 1.0)
        pcm = tone_pcm(len(text) * self.ms_per_char / 1000 / speed, PCM_RATE)
        step = int(PCM_RATE * self.chunk_ms / 1000) * 2 + 1  # odd: pieces split samples, as a network may
        return StreamingResponse(self.pcm_body(pcm, step, mode), media_type="audio/pcm",
                                 headers={"x-request-id": f"req_{uuid.uuid4().hex}"})
