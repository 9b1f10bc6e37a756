"""``backchannel``: words said over the agent that only show the person is listening ("uh-huh", "right")
let the reply go on; anything else interrupts it.

The engine's own rule counts words (``turn_taking.min_words``), so "yeah" would stop a reply the person was
happily listening to. This classifier knows the short acknowledgements people make while listening, in
English by default (``phrases`` sets your own, for another language).
"""

from __future__ import annotations

import re

from pydantic import Field

from vocable.providers.base import InterruptionClassifier, ProviderSettings

_WORD = re.compile(r"[\w']+")
ACKNOWLEDGEMENTS = ("uh-huh", "uh huh", "mm-hmm", "mm hmm", "mhm", "hmm", "mm", "yeah", "yes", "yep", "right",
                    "okay", "ok", "sure", "i see", "got it", "alright", "all right", "cool", "nice", "uh", "um")


class BackchannelSettings(ProviderSettings):
    phrases: list[str] = Field(default_factory=lambda: list(ACKNOWLEDGEMENTS),
                               description="acknowledgements that do not interrupt the agent")
    max_words: int = Field(default=3, ge=1, le=10, description="longer than this is always an interruption")


class Backchannel(InterruptionClassifier):
    name = "backchannel"
    Settings = BackchannelSettings

    def __init__(self, settings: BackchannelSettings | None = None) -> None:
        super().__init__(settings)
        self._known = {" ".join(_WORD.findall(p.lower().replace("-", " "))) for p in self.settings.phrases}
        self._words = {w for phrase in self._known for w in phrase.split()}

    def is_interruption(self, text: str) -> bool | None:
        words = _WORD.findall(text.lower().replace("-", " "))
        if not words:
            return None
        if len(words) > self.settings.max_words:
            return True
        if " ".join(words) in self._known or all(w in self._words for w in words):
            return False
        return True
