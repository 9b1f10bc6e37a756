"""The reply lifecycle, table-driven: each scenario is a list of inputs, each with the decisions it must give.

An input is ``(method, *args)`` on ``ReplyLifecycle``; the expected decisions are ``(action, turn_id, reason)``
(``arm`` decisions as ``("arm", turn_id, at)``). The phase after the last input is checked too.
"""

from __future__ import annotations

from typing import Any

import pytest

from vocable.engine.lifecycle import Decision, ReplyLifecycle, TurnTakingRules

RULES = TurnTakingRules(barge_in=True, barge_in_min_ms=120, false_interruption_timeout_s=1.5, min_words=1)
Step = tuple[tuple[Any, ...], list[tuple[Any, ...]]]

SPEAKING = [(("started", "t1"), []), (("audio_started", "t1"), [])]
HELD = [(("started", "t1", True), [])]
PAUSED = [*SPEAKING, (("voice", 10.0, 120), [("pause", "t1", "barge_in")])]

SCENARIOS: dict[str, tuple[list[Step], str, TurnTakingRules]] = {
    # --- a plain reply
    "a reply starts thinking": ([(("started", "t1"), [])], "thinking", RULES),
    "its audio makes it speaking": (SPEAKING, "speaking", RULES),
    "when it is over nothing is current": ([*SPEAKING, (("finished", "t1"), [])], "idle", RULES),
    "a finish for another reply changes nothing": ([*SPEAKING, (("finished", "t0"), [])], "speaking", RULES),
    "voice with no reply decides nothing": ([(("voice", 1.0, 500), [])], "idle", RULES),
    # --- barge-in below the threshold, or off
    "speech under barge_in_min_ms is not a barge-in": ([*SPEAKING, (("voice", 1.0, 100), [])], "speaking", RULES),
    "barge-in off: the reply goes on": (
        [*SPEAKING, (("voice", 1.0, 900), [])], "speaking", TurnTakingRules(barge_in=False)),
    # --- barge-in pauses, while thinking, speaking and during a tool call (a thinking reply)
    "barge-in while speaking pauses the output": (PAUSED, "paused", RULES),
    "barge-in while thinking pauses it too": (
        [(("started", "t1"), []), (("voice", 1.0, 150), [("pause", "t1", "barge_in")])], "paused", RULES),
    "barge-in during a tool call (thinking, no audio) pauses, and words cancel it as user_continued": (
        [(("started", "t1"), []), (("voice", 1.0, 150), [("pause", "t1", "barge_in")]),
         (("words", 2), [("cancel", "t1", "user_continued")])], "idle", RULES),
    "more voice while paused decides nothing more": (
        [*PAUSED, (("voice", 10.5, 600), [])], "paused", RULES),
    "without false interruptions a barge-in cancels at once": (
        [*SPEAKING, (("voice", 1.0, 120), [("cancel", "t1", "barge_in")])], "idle",
        TurnTakingRules(false_interruption_timeout_s=0)),
    # --- a true interruption is committed by words
    "one word commits the interruption": ([*PAUSED, (("words", 1), [("cancel", "t1", "barge_in")])], "idle", RULES),
    "fewer than min_words do not": (
        [*PAUSED, (("words", 1), [])], "paused", TurnTakingRules(min_words=2)),
    "min_words reached commits": (
        [*PAUSED, (("words", 1), []), (("words", 3), [("cancel", "t1", "barge_in")])], "idle",
        TurnTakingRules(min_words=2)),
    "a user turn that ends with words commits": (
        [*PAUSED, (("user_turn_ended", 2), [("cancel", "t1", "barge_in")])], "idle", RULES),
    "words while it speaks, with no voice, decide nothing (noise, pre-roll)": (
        [*SPEAKING, (("words", 5), [])], "speaking", RULES),
    "words with no reply decide nothing": ([(("words", 3), [])], "idle", RULES),
    # --- a false interruption resumes
    "a user turn that ends without words resumes": (
        [*PAUSED, (("user_turn_ended", 0), [("resume", "t1", "")])], "speaking", RULES),
    "the voice stopping arms the timer": (
        [*PAUSED, (("quiet", 10.3), [("arm", "t1", 11.8)])], "paused", RULES),
    "the timer resumes when no words came": (
        [*PAUSED, (("quiet", 10.3), [("arm", "t1", 11.8)]), (("tick", 11.8), [("resume", "t1", "")])],
        "speaking", RULES),
    "an early tick re-arms for the right time": (
        [*PAUSED, (("quiet", 10.3), [("arm", "t1", 11.8)]), (("tick", 11.0), [("arm", "t1", 11.8)])],
        "paused", RULES),
    "no tick resumes while the user is still speaking": (
        [*PAUSED, (("tick", 20.0), [])], "paused", RULES),
    "a paused thinking reply resumes thinking": (
        [(("started", "t1"), []), (("voice", 1.0, 150), [("pause", "t1", "barge_in")]),
         (("user_turn_ended", 0), [("resume", "t1", "")])], "thinking", RULES),
    "audio that started while paused resumes speaking": (
        [(("started", "t1"), []), (("voice", 1.0, 150), [("pause", "t1", "barge_in")]),
         (("audio_started", "t1"), []), (("user_turn_ended", 0), [("resume", "t1", "")])], "speaking", RULES),
    "quiet twice arms once": (
        [*PAUSED, (("quiet", 10.3), [("arm", "t1", 11.8)]), (("quiet", 10.4), [])], "paused", RULES),
    # --- the user speaking again during a resume
    "speaking again after a resume pauses again": (
        [*PAUSED, (("user_turn_ended", 0), [("resume", "t1", "")]),
         (("voice", 13.0, 200), [("pause", "t1", "barge_in")])], "paused", RULES),
    "speaking again before the timer pushes the deadline": (
        [*PAUSED, (("quiet", 10.3), [("arm", "t1", 11.8)]), (("voice", 11.0, 400), []), (("quiet", 11.2),
         [("arm", "t1", 12.7)]), (("tick", 11.8), [("arm", "t1", 12.7)]), (("tick", 12.7), [("resume", "t1", "")])],
        "speaking", RULES),
    "a second interruption's words commit it": (
        [*PAUSED, (("user_turn_ended", 0), [("resume", "t1", "")]),
         (("voice", 13.0, 200), [("pause", "t1", "barge_in")]), (("words", 2), [("cancel", "t1", "barge_in")])],
        "idle", RULES),
    # --- speculative replies
    "a speculative reply is held": (HELD, "held", RULES),
    "the end of its turn releases it": (
        [*HELD, (("turn_ended", "t1"), [("release", "t1", "")])], "thinking", RULES),
    "the end of another turn does not": ([*HELD, (("turn_ended", "t2"), [])], "held", RULES),
    "the user going on abandons it unheard": (
        [*HELD, (("voice", 1.0, 20), [("abandon", "t1", "user_continued")])], "idle", RULES),
    "a client interrupt abandons a held reply": (
        [*HELD, (("interrupt", "client"), [("abandon", "t1", "client")])], "idle", RULES),
    "a new reply replaces a held one": (
        [*HELD, (("started", "t2"), [("abandon", "t1", "user_continued")])], "thinking", RULES),
    # --- replaced and stopped replies
    "a new turn cancels the reply that spoke": (
        [*SPEAKING, (("started", "t2"), [("cancel", "t1", "new_turn")])], "thinking", RULES),
    "a new turn replaces a reply that never spoke as user_continued": (
        [(("started", "t1"), []), (("started", "t2"), [("cancel", "t1", "user_continued")])], "thinking", RULES),
    "a client interrupt cancels at once": (
        [*SPEAKING, (("interrupt", "client"), [("cancel", "t1", "client")])], "idle", RULES),
    "a client interrupt of a paused reply cancels it": (
        [*PAUSED, (("interrupt", "client"), [("cancel", "t1", "client")])], "idle", RULES),
    "interrupting nothing decides nothing": ([(("interrupt", "client"), [])], "idle", RULES),
    "a reply that fails while paused is over": ([*PAUSED, (("finished", "t1"), [])], "idle", RULES),
}


def _expected(item: tuple[Any, ...]) -> Decision:
    action, turn_id, extra = item
    return Decision(action, turn_id, at=extra) if action == "arm" else Decision(action, turn_id, extra)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_lifecycle(name: str) -> None:
    steps, final_phase, rules = SCENARIOS[name]
    lifecycle = ReplyLifecycle(rules)
    for number, (call, expected) in enumerate(steps):
        method, *args = call
        if method == "started" and len(args) == 2:
            got = lifecycle.started(args[0], held=args[1])
        else:
            got = getattr(lifecycle, method)(*args)
        assert (got or []) == [_expected(e) for e in expected], f"step {number}: {call}"
    assert lifecycle.phase == final_phase


def test_there_are_at_least_thirty_scenarios() -> None:
    assert len(SCENARIOS) >= 30
