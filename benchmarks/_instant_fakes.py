"""The scripted TTS's tone, cached, so the fakes cost (almost) nothing.

``ws_capacity.py``'s one-process servers call ``instant_fake_audio()``: vocable's ScriptedTTS and Pipecat's
twin alike (both call the module-level ``tone``). Its ``--workers`` server lists this module as a plugin
module in its config, and importing it patches vocable's fakes in every worker process.
"""

from __future__ import annotations

import functools
from typing import Any


def _cache_vocable_tone() -> Any:
    from vocable.testing import fakes

    if not hasattr(fakes.tone, "cache_info"):  # not cached yet
        fakes.tone = functools.lru_cache(maxsize=256)(fakes.tone)
    return fakes.tone


def instant_fake_audio() -> None:
    cached = _cache_vocable_tone()
    import _pipecat_fakes

    _pipecat_fakes.tone = cached


_cache_vocable_tone()
