"""The phone tests share the transport tests' live server (tests/transport/wskit.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "transport"))
