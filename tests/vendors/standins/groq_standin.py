"""A Groq API stand-in: OpenAI-compatible chat completions at ``/openai/v1/chat/completions``.

The chat protocol is ``_chat.ChatStandin``'s (shared with the OpenAI stand-in); Groq's own parts are the
``/openai/v1`` prefix, ``x_groq`` on the first chunk (its request id) and on the finishing chunk (with the
usage, whether or not ``stream_options.include_usage`` asked for the trailing usage chunk), and usage with
Groq's timing fields.
"""

from __future__ import annotations

import uuid
from typing import Any

from ._chat import ChatStandin, count_tokens

DEFAULT_REPLY = "Hello from the Groq stand-in. It is sunny today, so take a hat."


class GroqStandin(ChatStandin):
    name = "groq"
    prefix = "/openai/v1"
    model_id = "llama-3.3-70b-versatile"
    default_reply = DEFAULT_REPLY
    rate_limit_message = (
        "Rate limit reached for model `llama-3.3-70b-versatile` on tokens per minute (TPM). Please try again."
    )

    def usage(self, body: dict[str, Any], completion_tokens: int) -> dict[str, Any]:
        prompt = count_tokens(body["messages"])
        return {
            "queue_time": 0.01,
            "prompt_tokens": prompt,
            "prompt_time": 0.002,
            "completion_tokens": completion_tokens,
            "completion_time": 0.05,
            "total_tokens": prompt + completion_tokens,
            "total_time": 0.052,
        }

    def first_extra(self, request_id: str) -> dict[str, Any]:
        return {"x_groq": {"id": request_id}}

    def final_extra(self, request_id: str, usage: dict[str, Any]) -> dict[str, Any]:
        return {"x_groq": {"id": request_id, "usage": usage}}

    def completion_extra(self) -> dict[str, Any]:
        return {"x_groq": {"id": f"req_{uuid.uuid4().hex}"}}
