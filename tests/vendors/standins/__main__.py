"""``python -m tests.vendors.standins {deepgram|groq|elevenlabs|openai} [--port P] [--api-key K] [--mode M]``."""

from __future__ import annotations

import sys

from . import STANDINS
from ._cli import main

if len(sys.argv) < 2 or sys.argv[1] not in STANDINS:
    sys.exit(f"usage: python -m tests.vendors.standins {{{'|'.join(STANDINS)}}} [--port P] [--api-key K] [--mode M]")
main(STANDINS[sys.argv[1]], sys.argv[2:])
