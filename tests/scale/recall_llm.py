"""``provider: recall``: a scripted LLM whose reply lists every user message of its request, in order.

The cluster tests load it into real ``vocable serve`` nodes (``plugins.modules``, with this folder on
PYTHONPATH): a reply after a resume on another node shows exactly what the LLM was sent, so the test checks
the request's messages through the wire.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

from vocable.plugins.hookspecs import hookimpl
from vocable.providers.base import LLMChunk, Message, Tool
from vocable.testing.fakes import ScriptedLLM

PREFIX = "You told me: "


def recalled(reply: str) -> list[str]:
    """The user messages a recall reply lists (its request's, oldest first)."""
    assert reply.startswith(PREFIX), reply
    return [part.strip() for part in reply[len(PREFIX):].rstrip(".").split(" | ") if part.strip()]


class RecallLLM(ScriptedLLM):
    name = "recall"

    async def stream(self, messages: Sequence[Message], *, tools: Sequence[Tool] = ()) -> AsyncIterator[LLMChunk]:
        users = [m.content for m in messages if m.role == "user"]
        # read by the scripted stream before its first await: no other session's request comes between
        self.settings = self.settings.model_copy(update={"reply": PREFIX + " | ".join(users) + "."})
        async for chunk in super().stream(messages, tools=tools):
            yield chunk


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(RecallLLM)
