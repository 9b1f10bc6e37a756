"""What the OpenAI-style chat stand-ins share (Groq's and OpenAI's): ``POST {prefix}/chat/completions``.

Speaks what the SDKs expect: ``Authorization: Bearer <key>``, streaming as Server-Sent Events
(``data: {chat.completion.chunk}`` lines, then ``data: [DONE]``), tool calls streamed as deltas keyed by
``index`` (id and name first, arguments in fragments of 8 characters), a trailing usage-only chunk
(``choices: []``) when ``stream_options.include_usage`` is asked for, errors as
``{"error": {"message", "type", "param", "code"}}`` with 401/429 (``retry-after``)/500. Non-streaming requests
get a ``chat.completion`` object. Each vendor adds its own fields through ``first_extra``/``final_extra``/
``completion_extra`` and its own ``usage`` numbers.

Script it with ``reply`` (the assistant's text) and ``tool_calls`` (``[(name, arguments_json)]``, used when
the request offers tools and the last message is the user's).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ._base import Drop, Standin, check_bearer


def error(status: int, message: str, type_: str, code: str | None = None, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": type_, "param": None, "code": code}}, status_code=status, headers=headers
    )


def count_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content") or "").split()) + 4 for m in messages)


class ChatStandin(Standin):
    """Chat completions at ``{prefix}/chat/completions`` and the model list at ``{prefix}/models``."""

    prefix: ClassVar[str] = "/v1"
    model_id: ClassVar[str] = "standin-model"
    default_reply: ClassVar[str] = "Hello from the stand-in."
    rate_limit_message: ClassVar[str] = "Rate limit reached. Please try again."

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reply = self.default_reply
        self.tool_calls: list[tuple[str, str]] = []
        self.retry_after_s: float = 0

    def api_routes(self) -> list[BaseRoute]:
        return [
            Route(f"{self.prefix}/chat/completions", self.chat_completions, methods=["POST"]),
            Route(f"{self.prefix}/models", self.models, methods=["GET"]),
        ]

    # ------------------------------------------------------------------------------ vendor's own parts

    def authorized(self, request: Request) -> bool:
        return check_bearer(request.headers.get("authorization"), self.api_key, "Bearer")

    def unauthorized(self) -> Response:
        return error(401, "Invalid API Key", "invalid_request_error", "invalid_api_key")

    def usage(self, body: dict[str, Any], completion_tokens: int) -> dict[str, Any]:
        prompt = count_tokens(body["messages"])
        total = prompt + completion_tokens
        return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": total}

    def first_extra(self, request_id: str) -> dict[str, Any]:
        """Fields of the first chunk beyond the standard ones."""
        return {}

    def final_extra(self, request_id: str, usage: dict[str, Any]) -> dict[str, Any]:
        """Fields of the chunk carrying ``finish_reason`` beyond the standard ones."""
        return {}

    def completion_extra(self) -> dict[str, Any]:
        """Fields of a non-streamed completion beyond the standard ones."""
        return {}

    async def refused(self, request: Request, mode: str) -> Response | None:
        """Authorization, and the failure modes that answer at once or never (None: serve the request)."""
        if not self.authorized(request) or mode == "401":
            return self.unauthorized()
        if mode == "429":
            retry_after = {"retry-after": f"{self.retry_after_s:g}"}
            return error(429, self.rate_limit_message, "tokens", "rate_limit_exceeded", **retry_after)
        if mode == "500":
            return error(500, "Internal Server Error", "internal_server_error")
        if mode == "hang":
            await self.hang()
        return None

    # ------------------------------------------------------------------------------------------ routes

    async def models(self, request: Request) -> Response:
        if not self.authorized(request):
            return self.unauthorized()
        return JSONResponse({"object": "list", "data": [{"id": self.model_id, "object": "model"}]})

    async def chat_completions(self, request: Request) -> Response:
        mode = self.take_mode()
        body = await request.json()
        self.log.append({"path": request.url.path, "query": dict(request.query_params), "body": body, "mode": mode,
                         "headers": dict(request.headers)})
        self.counters["chat_completions"] += 1
        refused = await self.refused(request, mode)
        if refused is not None:
            return refused
        if not body.get("model") or not body.get("messages"):
            return error(400, "'model' and 'messages' are required", "invalid_request_error")

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
            "usage": self.usage(body, max(1, len(plan["text"].split()))),
            "system_fingerprint": "fp_standin",
            **self.completion_extra(),
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
        yield chunk({"role": "assistant", "content": ""}, **self.first_extra(request_id))
        for i, delta in enumerate(deltas):
            if mode == "drop" and i >= max(1, len(deltas) // 2):
                self.counters["drops"] += 1
                raise Drop(f"{self.name} stand-in drops the stream")
            if mode == "slow":
                await self.pause()
            yield chunk(delta)
            self.counters["chunks_sent"] += 1
        usage = self.usage(body, len(deltas))
        finish = "tool_calls" if plan["tool_calls"] else "stop"
        yield chunk({}, finish, **self.final_extra(request_id, usage))
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
