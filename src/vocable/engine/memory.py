"""Conversation memory: the system prompt plus a bounded window of the latest exchanges, per session."""

from __future__ import annotations

from collections import deque

from vocable.providers.base import Message, ToolCall


class Memory:
    """Keeps at most ``max_turns`` user/assistant pairs and roughly ``max_chars`` of text.

    The oldest messages go first. What the assistant said is stored as it was *spoken*: after a barge-in
    only the part the user heard is kept, so the model does not believe it said what nobody heard.
    """

    def __init__(self, system_prompt: str, *, max_turns: int = 20, max_chars: int = 12000) -> None:
        self.system_prompt = system_prompt
        self.max_turns = max_turns
        self.max_chars = max_chars
        self._messages: deque[Message] = deque()
        self._pending: set[str] = set()  # ids of tool calls whose result is not in yet

    def add(self, message: Message) -> None:
        self._messages.append(message)
        self._trim()

    def add_user(self, text: str) -> None:
        self.add(Message("user", text))

    def add_assistant(self, text: str) -> None:
        if text.strip():
            self.add(Message("assistant", text))

    def add_tool_calls(self, calls: tuple[ToolCall, ...], results: dict[str, str]) -> None:
        """The assistant message that made ``calls``, then one tool message per call, in the order chat APIs
        require. A call still running gets its place now (``pending``) and its result by ``resolve``."""
        self.add(Message("assistant", "", tool_calls=calls))
        for call in calls:
            if call.id not in results:
                self._pending.add(call.id)
            self._messages.append(Message("tool", results.get(call.id, ""), tool_call_id=call.id, name=call.name))

    def resolve(self, call_id: str, content: str) -> bool:
        """Fill in the result of a call that was still running when its turn was committed."""
        if call_id not in self._pending:
            return False
        self._pending.discard(call_id)
        for index, message in enumerate(self._messages):
            if message.role == "tool" and message.tool_call_id == call_id:
                self._messages[index] = Message("tool", content, tool_call_id=call_id, name=message.name)
        return True

    @property
    def pending(self) -> bool:
        """Some tool result is not in yet: the next request must wait for it (``ToolCalls.settle``)."""
        return bool(self._pending)

    def context(self, pending_user: str | None = None) -> list[Message]:
        """The messages for the next LLM request (system prompt first)."""
        messages = [Message("system", self.system_prompt)] if self.system_prompt else []
        messages.extend(self._messages)
        if pending_user is not None:
            messages.append(Message("user", pending_user))
        return messages

    @property
    def messages(self) -> list[Message]:
        return list(self._messages)

    def _trim(self) -> None:
        users = sum(1 for m in self._messages if m.role == "user")
        while users > self.max_turns:
            if self._messages.popleft().role == "user":
                users -= 1
        while len(self._messages) > 1 and sum(len(m.content) for m in self._messages) > self.max_chars:
            self._messages.popleft()
        # a context must not start with an orphaned reply or tool result
        while self._messages and self._messages[0].role in ("assistant", "tool"):
            self._messages.popleft()
