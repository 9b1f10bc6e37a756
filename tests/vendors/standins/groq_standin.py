"""A Groq API stand-in: OpenAI-compatible chat completions at ``/openai/v1/chat/completions``.

Speaks what the ``groq`` SDK expects: ``Authorization: Bearer <key>``, streaming as Server-Sent Events
(``data: {chat.completion.chunk}`` lines, then ``data: [DONE]``), usage in the last chunk's ``x_groq.usage``
(and a trailing usage-only chunk when ``stream_options.include_usage`` is asked for), tool calls streamed as
deltas keyed by ``index`` (id and name first, arguments in fragments), errors as
``{"error": {"message", "type", "code"}}`` with 401/429 (``retry-after``)/500. Non-streaming requests get a
``chat.completion`` object.

Script it with ``reply`` (the assistant's text) and ``tool_calls`` (``[(name, arguments_json)]``, used when
the request offers tools and the last message is the user's).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ._base import Drop, Standin, check_bearer

DEFAULT_REPLY = "Hello from the Groq stand-in. It is sunny today, so take a hat."


def _error(status: int, message: str, type_: str, code: str | None = None, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": type_, "code": code}}, status_code=status, headers=headers
    )


def _count_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content") or "").split()) + 4 for m in messages)


class GroqStandin(Standin):
    name = "groq"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reply = DEFAULT_REPLY
        self.tool_calls: list[tuple[str, str]] = []
        self.retry_after_s = 0

    def api_routes(self) -> list[BaseRoute]:
        return [
            Route("/openai/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/openai/v1/models", self.models, methods=["GET"]),
        ]

    async def models(self, request: Request) -> Response:
        if not check_bearer(request.headers.get("authorization"), self.api_key, "Bearer"):
            return _error(401, "Invalid API Key", "invalid_request_error", "invalid_api_key")
        return JSONResponse({"object": "list", "data": [{"id": "llama-3.3-70b-versatile", "object": "model"}]})

    async def chat_completions(self, request: Request) -> Response:
        mode = self.take_mode()
        body = await request.json()
        self.log.append({"path": request.url.path, "body": body, "mode": mode})
        self.counters["chat_completions"] += 1
        if mode == "401" or not check_bearer(request.headers.get("authorization"), self.api_key, "Bearer"):
            return _error(401, "Invalid API Key", "invalid_request_error", "invalid_api_key")
        if mode == "429":
            return _error(
                429,
                "Rate limit reached for model `llama-3.3-70b-versatile` on tokens per minute (TPM). Please try again.",
                "tokens",
                "rate_limit_exceeded",
                **{"retry-after": str(self.retry_after_s)},
            )
        if mode == "500":
            return _error(500, "Internal Server Error", "internal_server_error")
        if mode == "hang":
            await self.hang()
        if not body.get("model") or not body.get("messages"):
            return _error(400, "'model' and 'messages' are required", "invalid_request_error")

        completion_id = f"chatcmpl-{uuid.uuid4()}"
        plan = self._plan(body)
        if not body.get("stream"):
            return JSONResponse(self._completion(completion_id, body, plan))
        return StreamingResponse(self._sse(completion_id, body, plan, mode), media_type="text/event-stream")

    def _plan(self, body: dict[str, Any]) -> dict[str, Any]:
        """What to answer: tool calls (when offered tools and the user spoke last) or the scripted text."""
        messages = body["messages"]
        if body.get("tools") and self.tool_calls and messages[-1].get("role") == "user":
            calls = [{"id": f"call_{uuid.uuid4().hex[:12]}", "name": n, "arguments": a} for n, a in self.tool_calls]
            return {"tool_calls": calls, "text": ""}
        return {"tool_calls": [], "text": self.reply}

    def _usage(self, body: dict[str, Any], completion_tokens: int) -> dict[str, Any]:
        prompt = _count_tokens(body["messages"])
        return {
            "queue_time": 0.01,
            "prompt_tokens": prompt,
            "prompt_time": 0.002,
            "completion_tokens": completion_tokens,
            "completion_time": 0.05,
            "total_tokens": prompt + completion_tokens,
            "total_time": 0.052,
        }

    def _completion(self, completion_id: str, body: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": plan["text"] or None}
        if plan["tool_calls"]:
            message["tool_calls"] = [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in plan["tool_calls"]
            ]
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if plan["tool_calls"] else "stop",
                }
            ],
            "usage": self._usage(body, max(1, len(plan["text"].split()))),
            "system_fingerprint": "fp_standin",
            "x_groq": {"id": f"req_{uuid.uuid4().hex}"},
        }

    def _deltas(self, plan: dict[str, Any]) -> list[dict[str, Any]]:
        if plan["tool_calls"]:
            deltas: list[dict[str, Any]] = []
            for index, call in enumerate(plan["tool_calls"]):
                deltas.append(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": call["id"],
                                "type": "function",
                                "function": {"name": call["name"], "arguments": ""},
                            }
                        ]
                    }
                )
                args = call["arguments"]
                for start in range(0, len(args), 8):  # arguments arrive in fragments
                    deltas.append(
                        {"tool_calls": [{"index": index, "function": {"arguments": args[start : start + 8]}}]}
                    )
            return deltas
        words = plan["text"].split(" ")
        return [{"content": (w if i == 0 else " " + w)} for i, w in enumerate(words)]

    async def _sse(
        self, completion_id: str, body: dict[str, Any], plan: dict[str, Any], mode: str
    ) -> AsyncIterator[str]:
        created = int(time.time())
        request_id = f"req_{uuid.uuid4().hex}"

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body["model"],
                "system_fingerprint": "fp_standin",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(payload)}\n\n"

        deltas = self._deltas(plan)
        yield chunk({"role": "assistant", "content": ""}, x_groq={"id": request_id})
        for i, delta in enumerate(deltas):
            if mode == "drop" and i >= max(1, len(deltas) // 2):
                self.counters["drops"] += 1
                raise Drop("groq stand-in drops the stream")
            if mode == "slow":
                await self.pause()
            yield chunk(delta)
        usage = self._usage(body, len(deltas))
        finish = "tool_calls" if plan["tool_calls"] else "stop"
        yield chunk({}, finish, x_groq={"id": request_id, "usage": usage})
        if (body.get("stream_options") or {}).get("include_usage"):
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body["model"],
                "choices": [],
                "usage": usage,
            }
            yield f"data: {json.dumps(payload)}\n\n"
        yield "data: [DONE]\n\n"
