"""OpenAI and every server that speaks its API, as one plugin: ``provider: openai`` for llm, stt and tts.

- ``llm``: streaming chat completions with tools and usage (``openai_compat``, shared with ``groq``);
- ``stt``: ``/v1/audio/transcriptions``, one upload per utterance at each flush;
- ``tts``: ``/v1/audio/speech`` as raw PCM, streamed as it arrives.

All three run on the official ``openai`` SDK (``AsyncOpenAI``; ``AsyncAzureOpenAI`` when ``api_version`` is
set), with its retries off: errors are mapped once (``vendor_errors``) and the engine's policy retries.
``base_url`` points them at OpenAI, Azure, Ollama, vLLM, llama.cpp's server, a faster-whisper or Kokoro
server; see docs/config.md for worked examples. The SDK is imported when a client is made, never here.
"""

from __future__ import annotations

from typing import Any

from vocable.plugins.hookspecs import hookimpl
from vocable.providers.openai.llm import OpenAILLM, OpenAILLMSettings
from vocable.providers.openai.settings import OpenAISettings
from vocable.providers.openai.stt import OpenAISTT, OpenAISTTSettings
from vocable.providers.openai.tts import OpenAITTS, OpenAITTSSettings


@hookimpl
def register_providers(register: Any) -> None:
    register(OpenAILLM)
    register(OpenAISTT)
    register(OpenAITTS)


__all__ = [
    "OpenAILLM",
    "OpenAILLMSettings",
    "OpenAISTT",
    "OpenAISTTSettings",
    "OpenAISettings",
    "OpenAITTS",
    "OpenAITTSSettings",
    "register_providers",
]
