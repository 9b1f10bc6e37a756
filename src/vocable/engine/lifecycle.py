"""The reply lifecycle: what happens to the agent's reply when the user speaks, pauses, or goes on.

A synchronous state machine with no I/O, like ``listener.py``: the session feeds it what happened (a reply
started, its audio began, the user's voice, words from the STT, the end of the user's turn, a timer) and
carries out the decisions it returns (release a held reply, pause or resume the output, cancel the reply,
abandon a speculative one). So every turn-taking rule lives here, in one place, with table-driven tests
(``tests/test_lifecycle.py``), and the session stays glue.

The phases of the current reply:

- ``held``: a speculative reply, prepared while the user paused; nothing of it reaches the client until the
  user's turn really ends (``RELEASE``), and the user going on drops it unheard (``ABANDON``).
- ``thinking``: released, no audio yet (the LLM or a tool is working).
- ``speaking``: its audio is going out.
- ``paused``: the user's voice started while it thought or spoke. The output stops where it is, and the
  interruption is decided by what follows: words (at least ``min_words`` in a transcript, or a user turn
  that ends with words) commit it (``CANCEL``); no words within ``false_interruption_timeout_s`` of the
  voice stopping, or a user turn that ends without words (a cough), resume it (``RESUME``) from the very
  sample where it stopped.

With ``false_interruption_timeout_s`` set to 0 a barge-in cancels at once, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Phase = Literal["idle", "held", "thinking", "speaking", "paused"]
Action = Literal["release", "pause", "resume", "cancel", "abandon", "arm"]
Reason = Literal["barge_in", "user_continued", "client", "new_turn", ""]

ACTIVE: frozenset[Phase] = frozenset({"thinking", "speaking", "paused"})


@dataclass(frozen=True, slots=True)
class Decision:
    """One thing the session must do now. ``at``: the clock time an ``arm`` timer must call ``tick``."""

    action: Action
    turn_id: str
    reason: Reason = ""
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class TurnTakingRules:
    barge_in: bool = True
    barge_in_min_ms: float = 120.0
    false_interruption_timeout_s: float = 1.5  # 0: a barge-in cancels at once
    min_words: int = 1
    # a voice that began this soon after the reply's first audio went out was not answering it: the person was
    # going on (a pause mid-thought ended the turn); the reply then gives way as user_continued (0: never)
    continued_within_s: float = 0.5


class ReplyLifecycle:
    """The state of the session's current reply (at most one) and the rules that move it."""

    __slots__ = ("rules", "turn_id", "phase", "spoke", "_voice_at", "_voice_now", "_paused_from", "_spoke_at",
                 "_went_on")

    def __init__(self, rules: TurnTakingRules) -> None:
        self.rules = rules
        self.turn_id: str | None = None
        self.phase: Phase = "idle"
        self.spoke = False  # some of its audio went out
        self._voice_at = 0.0  # when the user's voice was last heard while paused
        self._voice_now = False  # the user is speaking right now (while paused)
        self._paused_from: Phase = "thinking"
        self._spoke_at: float | None = None  # when its first audio went out, where the session says
        self._went_on = False  # the voice that paused it began before the person could have heard it

    @property
    def active(self) -> bool:
        """A released reply is under way (thinking, speaking or paused)."""
        return self.phase in ACTIVE

    @property
    def paused(self) -> bool:
        return self.phase == "paused"

    def needs(self, speech: bool, speech_ms: float) -> bool:
        """Whether a frame of the user's utterance could change anything: the session's per-frame fast path
        skips ``voice``/``quiet`` when it cannot (most frames, most of the time)."""
        phase = self.phase
        if phase == "idle":
            return False
        if phase == "held":
            return speech
        if phase == "paused":
            return speech != self._voice_now
        return speech and self.rules.barge_in and speech_ms >= self.rules.barge_in_min_ms

    # ------------------------------------------------------------------------------------ the reply

    def started(self, turn_id: str, *, held: bool = False) -> list[Decision]:
        """A new reply begins; whatever reply was current is cancelled first (a new turn replaces it)."""
        out = self._cancel("new_turn") if self.phase != "idle" else []
        self.turn_id, self.phase, self.spoke = turn_id, ("held" if held else "thinking"), False
        self._spoke_at, self._went_on = None, False
        return out

    def turn_ended(self, turn_id: str) -> list[Decision]:
        """The user's turn ended: a reply held for it may now be heard."""
        if self.phase == "held" and self.turn_id == turn_id:
            self.phase = "thinking"
            return [Decision("release", turn_id)]
        return []

    def audio_started(self, turn_id: str, now: float | None = None) -> None:
        if self.turn_id == turn_id:
            self.spoke = True
            self._spoke_at = now
            if self.phase == "thinking":
                self.phase = "speaking"
            elif self.phase == "paused":
                self._paused_from = "speaking"

    def finished(self, turn_id: str) -> None:
        """The reply is over (all of it played, or it failed): nothing is current any more."""
        if self.turn_id == turn_id:
            self.turn_id, self.phase, self.spoke = None, "idle", False

    # ------------------------------------------------------------------------------------ the user

    def voice(self, now: float, speech_ms: float) -> list[Decision]:
        """A frame of the user's speech; ``speech_ms``: speech in the current utterance so far."""
        phase, turn_id = self.phase, self.turn_id
        if turn_id is None or phase == "idle":
            return []
        if phase == "held":  # the user went on before the turn ended: the prepared reply is not theirs
            self.turn_id, self.phase = None, "idle"
            return [Decision("abandon", turn_id, "user_continued")]
        if phase == "paused":
            self._voice_at, self._voice_now = now, True
            return []
        rules = self.rules
        if not rules.barge_in or speech_ms < rules.barge_in_min_ms:
            return []
        began = now - speech_ms / 1000  # the voice began before it was long enough to count
        self._went_on = self._spoke_at is not None and began - self._spoke_at < rules.continued_within_s
        if rules.false_interruption_timeout_s <= 0:
            return self._cancel("barge_in")
        self._paused_from, self.phase = phase, "paused"
        self._voice_at, self._voice_now = now, True
        return [Decision("pause", turn_id, "barge_in")]

    def quiet(self, now: float) -> list[Decision]:
        """The user's voice stopped (a pause in their speech) while the reply is paused: arm the timer."""
        if self.phase != "paused" or not self._voice_now or self.turn_id is None:
            return []
        self._voice_now = False
        self._voice_at = now
        return [Decision("arm", self.turn_id, at=now + self.rules.false_interruption_timeout_s)]

    def words(self, count: int) -> list[Decision]:
        """A transcript of what the user is saying now (interim or final) with ``count`` words: they commit a
        paused barge-in. (Words alone never stop a reply the voice has not paused: an STT can hear words in
        noise or in the pre-roll, and the voice rule is the guard.)"""
        if self.phase == "paused" and count >= self.rules.min_words:
            return self._cancel("barge_in")
        return []

    def user_turn_ended(self, words: int) -> list[Decision]:
        """The user's turn ended with this many words (0: it was noise). Decides a paused reply."""
        if self.phase != "paused":
            return []
        if words > 0:
            return self._cancel("barge_in")
        return self._resume()

    def tick(self, now: float) -> list[Decision]:
        """A timer armed by ``arm`` fired: resume a paused reply whose interruption brought no words."""
        if self.phase != "paused" or self.turn_id is None or self._voice_now:
            return []
        due = self._voice_at + self.rules.false_interruption_timeout_s
        if now + 1e-9 < due:
            return [Decision("arm", self.turn_id, at=due)]
        return self._resume()

    def interrupt(self, reason: Reason = "client") -> list[Decision]:
        """Stop the reply now (the client asked, or a typed turn replaces it)."""
        if self.phase == "held":
            turn_id, self.turn_id, self.phase = self.turn_id or "", None, "idle"
            return [Decision("abandon", turn_id, reason)]
        return self._cancel(reason) if self.active else []

    # ------------------------------------------------------------------------------------ helpers

    def _resume(self) -> list[Decision]:
        assert self.turn_id is not None
        self.phase = "speaking" if self.spoke else self._paused_from
        self._voice_now = self._went_on = False
        return [Decision("resume", self.turn_id)]

    def _cancel(self, reason: Reason) -> list[Decision]:
        turn_id = self.turn_id
        if turn_id is None or self.phase == "idle":
            return []
        if self.phase == "held":
            out = [Decision("abandon", turn_id, "user_continued" if reason == "new_turn" else reason)]
        else:  # a reply that never spoke (or not before the voice began) was not interrupted: the user went on
            heard = self.spoke and not self._went_on
            out = [Decision("cancel", turn_id, reason if heard or reason == "client" else "user_continued")]
        self.turn_id, self.phase, self.spoke, self._voice_now = None, "idle", False, False
        return out
