"""A person who pauses mid-thought (issue 24): the new turn says which turn it continues, every transcript of
it holds the whole utterance, and the reply that never spoke is ``interrupted`` with ``user_continued``."""

from __future__ import annotations

import pytest

from vocable.engine.events import AudioOut, Event, Interrupted, MetricsEvent, Reply, Transcript
from vocable.engine.user_words import UserWords
from vocable.testing.fakes import tone
from vocable.testing.scripted import feed, scripted_engine
from vocable.testing.speech import silence

# ---------------------------------------------------------------------------------------- UserWords


@pytest.mark.parametrize(("steps", "expected"), [
    ([("interim", "turn"), ("interim", "turn on")], ["turn", "turn on"]),
    ([("interim", "turn"), ("interim", "turn")], ["turn", None]),  # a repeat shows nothing new
    ([("segment", "turn on"), ("interim", "the")], ["turn on", "turn on the"]),
    ([("final", "turn on")], [("turn on", None)]),
    ([("segment", "turn on"), ("final", "the lights")], ["turn on", ("turn on the lights", None)]),
    ([("carry", "turn on", "t1"), ("interim", "the"), ("final", "the lights")],
     ["turn on", "turn on the", ("turn on the lights", "t1")]),
    ([("carry", "a", "t1"), ("carry", "b", "t2"), ("final", "c")], ["a", "a b", ("a b c", "t2")]),
    ([("carry", "a", "t1"), ("final", "b"), ("final", "c")], ["a", ("a b", "t1"), ("c", None)]),
    ([("own", "x y"), ("segment", "a"), ("own", "b c")], [2, "a", 3]),
    ([("carry", "", "t1"), ("final", "b")], ["", ("b", None)]),  # nothing carried, nothing continued
])
def test_user_words(steps: list[tuple[str, ...]], expected: list[object]) -> None:
    words = UserWords()
    got = [getattr(words, name)(*args) for name, *args in steps]
    assert got == expected


# ---------------------------------------------------------------------------------------- a session


async def test_going_on_after_a_turn_ended_continues_it_on_the_wire() -> None:
    engine = scripted_engine(
        stt={"provider": "scripted", "transcripts": ["turn on", "the kitchen lights"], "interim_every_ms": 200},
        llm={"provider": "scripted", "echo": True, "first_token_ms": 1500},  # still thinking when the user goes on
        turn={"provider": "silence", "hangover_ms": 300},
    )
    await engine.start()
    async with engine.conversation(pace=False) as conv:
        await feed(conv, silence(100) + tone(400, 16000) + silence(450), realtime=True)  # a turn ends
        await feed(conv, tone(600, 16000) + silence(700), realtime=True)  # and the person goes on
        events = []
        while not any(isinstance(e, MetricsEvent) and not e.figures.get("interrupted") for e in events):
            events.append(await conv.next_event(Event, timeout_s=10))
    first_final = next(e for e in events if isinstance(e, Transcript) and e.final)
    assert first_final.text == "turn on" and first_final.continues is None
    stopped = next(e for e in events if isinstance(e, Interrupted))
    assert stopped.turn_id == first_final.turn_id and stopped.reason == "user_continued"
    later = [e for e in events if isinstance(e, Transcript) and e.turn_id != first_final.turn_id]
    # an interim heard before the barge-in was decided shows the new words alone; from the moment the first
    # turn is given up, every transcript says what it continues and holds the whole utterance
    since = next(i for i, e in enumerate(later) if e.continues is not None)
    assert since <= 1 and all(e.continues == first_final.turn_id for e in later[since:])
    assert all(e.text.startswith("turn on") for e in later[since:]), "the whole utterance, in place"
    assert later[-1].final and later[-1].text == "turn on the kitchen lights"
    assert later[-1].to_wire()["continues"] == first_final.turn_id
    answer = "".join(e.text for e in events if isinstance(e, Reply) and e.turn_id == later[-1].turn_id)
    assert answer == "You said: turn on the kitchen lights."
    assert "continues" not in first_final.to_wire()
    await engine.stop()


# ---------------------------------------------------------------------------------------- backchannels


@pytest.mark.parametrize(("text", "verdict"), [
    ("uh-huh", False), ("Yeah.", False), ("mm hmm, right", False), ("okay sure", False),
    ("wait", True), ("stop talking", True), ("yeah but what about tomorrow", True), ("", None),
])
def test_backchannel_classifier(text: str, verdict: bool | None) -> None:
    from vocable.providers.backchannel import Backchannel

    assert Backchannel().is_interruption(text) is verdict


@pytest.mark.parametrize(("said", "interrupted"), [("uh huh", False), ("wait stop", True)])
async def test_a_backchannel_lets_the_reply_go_on_and_starts_no_turn(said: str, interrupted: bool) -> None:
    engine = scripted_engine(
        stt={"provider": "scripted", "transcripts": [said], "interim_every_ms": 200},
        llm={"provider": "scripted", "reply": "One two three four five. Six seven eight nine ten. Eleven twelve."},
        tts={"provider": "scripted", "ms_per_char": 30},
        turn={"provider": "silence", "hangover_ms": 300},
        interruption={"provider": "backchannel"},
    )
    await engine.start()
    async with engine.conversation(pace=True) as conv:
        await conv.send_text("count for me")
        await conv.next_event(AudioOut)
        await feed(conv, silence(100) + tone(500, 16000) + silence(600), realtime=True)
        events: list[Event] = []
        def done() -> bool:
            answered = any(isinstance(e, Transcript) and e.final for e in events) or not interrupted
            return answered and any(isinstance(e, MetricsEvent) for e in events)
        while not done():
            events.append(await conv.next_event(Event, timeout_s=10))
        finals = [e.text for e in events if isinstance(e, Transcript) and e.final]
        memory = conv.session.memory.messages
    kinds = [e.type for e in events]
    assert "paused" in kinds
    if interrupted:
        assert "interrupted" in kinds and finals == [said]
    else:
        assert "resumed" in kinds and "interrupted" not in kinds and finals == []
        assert [m.role for m in memory] == ["user", "assistant"], "the backchannel started no turn"
        assert memory[-1].content.endswith("Eleven twelve.")
    await engine.stop()


# ---------------------------------------------------------------------------------------- resume


async def _reply_audio(noise_ms: int) -> tuple[bytes, list[str]]:
    """The reply's audio as the client got it, with ``noise_ms`` of noise (no words) once it has begun."""
    engine = scripted_engine(
        stt={"provider": "scripted", "transcripts": [""], "interim_every_ms": 200},
        llm={"provider": "scripted", "reply": "One two three four five. Six seven eight nine ten. Eleven twelve."},
        tts={"provider": "scripted", "ms_per_char": 30},
        turn={"provider": "silence", "hangover_ms": 300},
    )
    await engine.start()
    audio, kinds = bytearray(), []
    async with engine.conversation(pace=True) as conv:
        await conv.send_text("count for me")
        first = await conv.next_event(AudioOut)
        audio += first.pcm
        if noise_ms:
            await feed(conv, silence(100) + tone(noise_ms, 16000) + silence(600), realtime=True)
        while True:
            event = await conv.next_event(Event, timeout_s=10)
            kinds.append(event.type)
            if isinstance(event, AudioOut) and event.turn_id == first.turn_id:
                audio += event.pcm
            if isinstance(event, MetricsEvent):
                break
    await engine.stop()
    return bytes(audio), kinds


async def test_a_resumed_reply_goes_on_from_the_sample_where_it_stopped() -> None:
    whole, _ = await _reply_audio(0)
    resumed, kinds = await _reply_audio(300)
    assert "paused" in kinds and "resumed" in kinds and "interrupted" not in kinds, kinds
    assert len(resumed) == len(whole), "nothing skipped, nothing repeated"
    assert resumed == whole, "the very same samples, in the same order"
