"""A person who pauses mid-thought (issue 24): the new turn says which turn it continues, every transcript of
it holds the whole utterance, and the reply that never spoke is ``interrupted`` with ``user_continued``."""

from __future__ import annotations

import asyncio

import pytest

from vocable.engine.events import AudioOut, Event, Interrupted, MetricsEvent, Reply, Transcript
from vocable.engine.lifecycle import Decision, ReplyLifecycle, TurnTakingRules
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
    ([("interim", "uh"), ("shown",), ("retract",), ("shown",), ("retract",)], ["uh", True, True, False, False]),
    ([("retract",), ("interim", "uh"), ("final", ""), ("shown",)], [False, "uh", ("", None), False]),
    ([("interim", "uh"), ("drop_own",), ("retract",)], ["uh", None, True]),  # a backchannel's interim goes too
])
def test_user_words(steps: list[tuple[str, ...]], expected: list[object]) -> None:
    words = UserWords()
    got = [(getattr(words, name)(*args) if callable(getattr(words, name)) else getattr(words, name))
           for name, *args in steps]
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
        audio = await conv.next_event(AudioOut)
        played = len(audio.pcm) / 2 / audio.sample_rate
        while played < 0.6:  # talked over once it has been heard (sooner, the person was going on: continued)
            audio = await conv.next_event(AudioOut)
            played += len(audio.pcm) / 2 / audio.sample_rate
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
        # no turn: its interims are taken back by an empty final
        assert "resumed" in kinds and "interrupted" not in kinds and finals == [""]
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


async def _until_answered(conv: object) -> list[Event]:
    """Events up to the metrics of a turn that was answered (not one given up)."""
    events: list[Event] = []
    while not any(isinstance(e, MetricsEvent) and not e.figures.get("interrupted") for e in events):
        events.append(await conv.next_event(Event, timeout_s=15))  # type: ignore[attr-defined]
    return events


async def test_a_final_that_comes_while_the_earlier_reply_still_thinks_carries_its_words_first() -> None:
    """Slow STT: the first turn's reply starts only after the person went on (so their voice never paused it),
    and the second turn's final comes while it still thinks. Its words come first, in the same turn."""
    engine = scripted_engine(
        stt={"provider": "scripted", "transcripts": ["turn on", "the kitchen lights", "thanks"],
             "interim_every_ms": 0, "final_delay_ms": 900},
        llm={"provider": "scripted", "echo": True, "first_token_ms": 3000},
        turn={"provider": "silence", "hangover_ms": 300},
    )
    await engine.start()
    async with engine.conversation(pace=False) as conv:
        await feed(conv, silence(100) + tone(400, 16000) + silence(450) + tone(300, 16000) + silence(600),
                   realtime=True)
        events = await _until_answered(conv)
    finals = [e for e in events if isinstance(e, Transcript) and e.final]
    assert [f.text for f in finals] == ["turn on", "turn on the kitchen lights"]
    first, second = finals
    assert second.continues == first.turn_id and first.continues is None
    stopped = next(e for e in events if isinstance(e, Interrupted))
    assert (stopped.turn_id, stopped.reason) == (first.turn_id, "user_continued")
    assert events.index(stopped) < events.index(second), "the earlier reply gives way before the final is read"
    answer = "".join(e.text for e in events if isinstance(e, Reply) and e.turn_id == second.turn_id)
    assert answer == "You said: turn on the kitchen lights."
    await engine.stop()


async def test_words_of_a_speculation_given_up_decide_a_paused_reply_and_keep_their_order() -> None:
    """A reply still thinking is paused by the person going on; they pause briefly mid-phrase (a speculative
    final, given up when they go on). Those words commit the barge-in at once (no false-interruption resume
    while the person is mid-thought) and the turn's words stay in the order they were said."""
    engine = scripted_engine(
        stt={"provider": "scripted", "transcripts": ["turn on", "the kitchen", "lights please"],
             "interim_every_ms": 0, "final_delay_ms": 300},
        llm={"provider": "scripted", "echo": True, "first_token_ms": 5000},
        turn={"provider": "silence", "hangover_ms": 450},
        turn_taking={"speculative_ms": 100},
    )
    await engine.start()
    async with engine.conversation(pace=False) as conv:
        first_turn = silence(100) + tone(400, 16000) + silence(1000)
        going_on = tone(400, 16000) + silence(250) + tone(400, 16000) + silence(800)
        await feed(conv, first_turn + going_on, realtime=True)
        events = await _until_answered(conv)
    kinds = [e.type for e in events]
    assert "resumed" not in kinds, "the paused reply must not resume while the person is mid-thought"
    finals = [e for e in events if isinstance(e, Transcript) and e.final]
    assert finals[-1].text == "turn on the kitchen lights please"
    stopped = [e for e in events if isinstance(e, Interrupted)]
    assert [e.reason for e in stopped] == ["user_continued"]
    given_up = next(e for e in events if isinstance(e, Transcript) and not e.final and e.text == "turn on the kitchen")
    assert given_up.continues == finals[0].turn_id  # the first turn's bubble becomes the given-up one's
    assert finals[-1].continues == given_up.turn_id  # and then the last turn's
    await engine.stop()


async def test_interims_that_come_to_no_words_are_dropped_by_an_empty_final() -> None:
    engine = scripted_engine(
        stt={"provider": "scripted", "transcripts": ["cough cough"], "interim_every_ms": 100},
        turn={"provider": "silence", "hangover_ms": 300},
    )
    await engine.start()
    provider = engine.runtime.stt[0].provider
    original = provider.transcribe

    async def noise(audio, *, sample_rate):  # type: ignore[no-untyped-def]
        async for event in original(audio, sample_rate=sample_rate):
            yield type(event)("", final=True) if event.final else event

    provider.transcribe = noise  # type: ignore[method-assign]
    async with engine.conversation(pace=False) as conv:
        await feed(conv, silence(100) + tone(400, 16000) + silence(600), realtime=True)
        events: list[Event] = []
        while not any(isinstance(e, Transcript) and e.final for e in events):
            events.append(await conv.next_event(Event, timeout_s=10))
        shown = [e for e in events if isinstance(e, Transcript) and not e.final]
        final = events[-1]
        assert shown and shown[-1].text == "cough cough"
        assert isinstance(final, Transcript) and final.text == "" and final.turn_id == shown[-1].turn_id
        await asyncio.sleep(0.3)
        assert conv.session.state == "listening"
    await engine.stop()


@pytest.mark.parametrize(("voice_after_s", "reason"), [(0.1, "user_continued"), (0.45, "user_continued"),
                                                       (0.6, "barge_in")])
def test_a_reply_talked_over_as_it_begins_gives_way_to_the_person_going_on(voice_after_s: float, reason: str) -> None:
    """The voice began ``voice_after_s`` after the reply's first audio went out (and counts 150 ms later):
    within 0.5 s the person cannot have been answering it, they were going on."""
    lifecycle = ReplyLifecycle(TurnTakingRules())
    lifecycle.started("t1")
    lifecycle.audio_started("t1", 10.0)
    assert lifecycle.voice(10.0 + voice_after_s + 0.15, 150) == [Decision("pause", "t1", "barge_in")]
    assert lifecycle.words(2) == [Decision("cancel", "t1", reason)]


async def test_going_on_as_the_reply_begins_continues_the_turn_and_forgets_the_reply() -> None:
    engine = scripted_engine(
        stt={"provider": "scripted", "transcripts": ["turn on", "the kitchen lights"], "interim_every_ms": 0},
        llm={"provider": "scripted", "echo": True},
        tts={"provider": "scripted", "ms_per_char": 40},
        turn={"provider": "silence", "hangover_ms": 300},
    )
    await engine.start()
    async with engine.conversation(pace=True) as conv:
        await feed(conv, silence(100) + tone(400, 16000) + silence(400), realtime=True)
        first = await conv.next_event(AudioOut)  # the reply to "turn on" begins, and the person goes on
        await feed(conv, tone(500, 16000) + silence(600), realtime=True)
        events = await _until_answered(conv)
        memory = [(m.role, m.content) for m in conv.session.memory.messages]
    stopped = next(e for e in events if isinstance(e, Interrupted))
    assert (stopped.turn_id, stopped.reason) == (first.turn_id, "user_continued")
    final = next(e for e in events if isinstance(e, Transcript) and e.final)
    assert (final.text, final.continues) == ("turn on the kitchen lights", first.turn_id)
    assert memory == [("user", "turn on the kitchen lights"), ("assistant", "You said: turn on the kitchen lights.")]
    await engine.stop()
