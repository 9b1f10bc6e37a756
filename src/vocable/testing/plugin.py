"""The scripted fakes as a plugin: ``provider: scripted`` for stt, llm and tts."""

from __future__ import annotations

from collections.abc import Callable

from vocable.plugins.hookspecs import hookimpl
from vocable.testing.fakes import OtherScriptedLLM, ScriptedLLM, ScriptedSTT, ScriptedTTS


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(ScriptedSTT)
    register(ScriptedLLM)
    register(OtherScriptedLLM)
    register(ScriptedTTS)
