"""Stand-in servers that speak Deepgram's, Groq's, ElevenLabs' and OpenAI's wire protocols on 127.0.0.1.

Import the classes from here; see ``_base`` for the failure modes and the control routes, ``_cli`` for
running one as a separate process.
"""

from __future__ import annotations

from ._base import MODES, Drop, Standin
from .deepgram_standin import DeepgramStandin
from .elevenlabs_standin import ElevenLabsStandin
from .groq_standin import GroqStandin
from .openai_standin import OpenAIStandin

STANDINS: dict[str, type[Standin]] = {
    "deepgram": DeepgramStandin,
    "groq": GroqStandin,
    "elevenlabs": ElevenLabsStandin,
    "openai": OpenAIStandin,
}

__all__ = [
    "MODES", "STANDINS", "DeepgramStandin", "Drop", "ElevenLabsStandin", "GroqStandin", "OpenAIStandin", "Standin",
]
