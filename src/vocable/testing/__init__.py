"""Testing helpers: scripted fake providers (a plugin) and a contract-test kit for provider authors."""

from vocable.testing.fakes import ScriptedLLM, ScriptedSTT, ScriptedTTS, tone

__all__ = ["ScriptedLLM", "ScriptedSTT", "ScriptedTTS", "tone"]
