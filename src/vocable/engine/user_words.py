"""The user's words for the current turn, as they arrive: interim guesses, segments a streaming STT finalised
early, and words carried over from an earlier turn that the person went on from.

A person who pauses mid-thought can end a turn early; when they go on, the reply prepared for the first
part is dropped unheard and its words join the new turn, so nothing they said is lost. The new turn then
*continues* the earlier one: every transcript of it carries the whole utterance so far and the earlier turn's
id (``continues``), so a client updates one bubble in place instead of drawing "A." / "A. B." / "A. B. C.".

Synchronous and without I/O, like ``listener.py``: the session asks it what to show and what the turn said.
"""

from __future__ import annotations


def _join(*parts: str) -> str:
    return " ".join(part.strip() for part in parts if part and part.strip())


class UserWords:
    __slots__ = ("_carried", "_segments", "_shown", "continues")

    def __init__(self) -> None:
        self._carried = ""  # words of earlier turns whose replies never spoke
        self._segments = ""  # parts of this turn the STT finalised before the end of turn
        self._shown = ""  # the last interim text sent, so repeats are not sent again
        self.continues: str | None = None  # the turn these words continue, while some are carried

    def interim(self, text: str) -> str | None:
        """What to show for an interim transcript, or None when it shows nothing new."""
        full = _join(self._carried, self._segments, text)
        if not full or full == self._shown:  # re-decoding STTs repeat themselves during pauses
            return None
        self._shown = full
        return full

    def segment(self, text: str) -> str:
        """A segment a streaming STT finalised before our end of turn: kept for the final; what to show."""
        self._segments = _join(self._segments, text)
        self._shown = ""
        return _join(self._carried, self._segments)

    def final(self, text: str) -> tuple[str, str | None]:
        """The whole of the turn's words (``text`` is the STT's final) and the earlier turn they continue;
        the next turn's words start afresh."""
        full = _join(self._carried, self._segments, text)
        continues = self.continues if self._carried else None
        self._carried = self._segments = self._shown = ""
        self.continues = None
        return full, continues

    def own(self, text: str) -> int:
        """How many words this utterance has (early segments and ``text``), carried words aside."""
        return len(_join(self._segments, text).split())

    def drop_own(self) -> None:
        """This utterance's words were no turn (a backchannel over the reply): forget them, keep carried ones
        (what an interim showed of them stays known, for ``retract``)."""
        self._segments = ""

    def carry(self, text: str, turn_id: str) -> str:
        """The turn ``turn_id`` is abandoned unheard: its words join the next turn. Returns all carried."""
        self._carried = _join(self._carried, text)
        if self._carried:
            self.continues = turn_id
        return self._carried

    @property
    def carried(self) -> str:
        return self._carried

    @property
    def shown(self) -> bool:
        """An interim transcript of this utterance showed some words."""
        return bool(self._shown)

    def retract(self) -> bool:
        """The utterance came to no words after all (noise, a cough, a decoder's guess): whether an interim
        showed some, which the client must then drop (an empty final transcript says so)."""
        shown, self._shown = bool(self._shown), ""
        return shown
