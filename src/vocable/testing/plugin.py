"""The scripted fakes as a plugin: ``provider: scripted`` for stt, llm and tts, and a scripted tool,
``get_weather`` (enabled by name, ``agent: {tools: [get_weather]}``), for scenario and tool tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vocable.plugins.hookspecs import hookimpl
from vocable.testing.fakes import OtherScriptedLLM, ScriptedLLM, ScriptedSTT, ScriptedTTS


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(ScriptedSTT)
    register(ScriptedLLM)
    register(OtherScriptedLLM)
    register(ScriptedTTS)


async def get_weather(city: str) -> dict[str, Any]:
    """Today's weather in ``city``: always sunny, 24 degrees."""
    return {"city": city, "forecast": "sunny", "high_c": 24}


@hookimpl
def register_tools(register: Callable[..., None]) -> None:
    register(get_weather, description="Today's weather in a city", timeout_s=5,
             parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
