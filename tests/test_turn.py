"""The streaming turn on the scripted fakes: audio in to audio out, barge-in, fallback, clean endings."""

from __future__ import annotations

import asyncio

from vocable.testing.scripted import assert_no_new_tasks, feed, scripted_engine, utterance

from vocable.engine.events import (
    AudioOut,
    Closed,
    ErrorEvent,
    Interrupted,
    MetricsEvent,
    Ready,
    Reply,
    StateChanged,
    Transcript,
)


async def run_turn(engine, pcm=None, text=None, pace=False, timeout_s=10.0):
    await engine.start()
    async with engine.conversation(pace=pace) as conv:
        first = await conv.next_event(Ready)
        if text is not None:
            await conv.send_text(text)
        else:
            await feed(conv, pcm or utterance())
        events = await conv.collect_turn(timeout_s)
    await engine.stop()
    return first, events


async def test_whole_turn_from_audio_to_audio():
    engine = scripted_engine()
    ready, events = await run_turn(engine)
    assert ready.output_sample_rate == 16000 and ready.session_id
    kinds = [type(e).__name__ for e in events]
    transcripts = [e for e in events if isinstance(e, Transcript)]
    assert transcripts[-1].final and transcripts[-1].text == "what is the weather today"
    interims = [t for t in transcripts if not t.final]
    assert interims, "interim transcripts must come before the final"
    assert events.index(interims[0]) < events.index(transcripts[-1])
    reply = "".join(e.text for e in events if isinstance(e, Reply))
    assert reply == "It is sunny. Take a hat with you today."
    audio = b"".join(e.pcm for e in events if isinstance(e, AudioOut))
    assert len(audio) >= 16000 * 2 * 0.35, "expected the reply audio (39 chars at 10 ms each)"
    states = [e.state for e in events if isinstance(e, StateChanged)]
    assert states.index("thinking") < states.index("speaking")
    metrics = events[-1]
    assert isinstance(metrics, MetricsEvent)
    for key in ("stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms", "engine_overhead_ms"):
        assert metrics.figures[key] is not None and metrics.figures[key] >= 0, key
    # voice-to-voice includes the 300 ms hangover measured in audio time, fed instantly here
    assert metrics.figures["voice_to_voice_ms"] >= metrics.figures["engine_overhead_ms"]
    assert kinds.index("AudioOut") > kinds.index("Transcript")


async def test_typed_turn_skips_stt():
    engine = scripted_engine(llm={"provider": "scripted", "echo": True})
    _, events = await run_turn(engine, text="hello engine")
    assert [e.text for e in events if isinstance(e, Transcript)] == ["hello engine"]
    assert "".join(e.text for e in events if isinstance(e, Reply)) == "You said: hello engine."


async def test_reply_audio_starts_before_the_llm_stream_ends():
    engine = scripted_engine(llm={
        "provider": "scripted", "token_delay_ms": 30,
        "reply": "First sentence is here. Then a second sentence follows. And a third one to finish.",
    })
    _, events = await run_turn(engine, text="go")
    first_audio = next(i for i, e in enumerate(events) if isinstance(e, AudioOut))
    final_reply = next(i for i, e in enumerate(events) if isinstance(e, Reply) and e.final)
    assert first_audio < final_reply


async def test_barge_in_stops_audio_and_closes_the_llm_stream():
    engine = scripted_engine(
        llm={"provider": "scripted", "token_delay_ms": 150,  # 2.4 s of streaming: still going at the barge-in
             "reply": "One two three four. Five six seven eight. Nine ten eleven twelve. Thirteen fourteen fifteen."},
        tts={"provider": "scripted", "ms_per_char": 40},
    )
    llm = engine.runtime.llm[0].provider
    await engine.start()
    before = asyncio.all_tasks()
    async with engine.conversation(pace=True) as conv:
        await conv.send_text("tell me a long story")
        first = await conv.next_event(AudioOut, timeout_s=5)
        # the client plays the first words (it reads the audio) while the LLM still streams
        loop = asyncio.get_running_loop()
        until = loop.time() + 0.8
        while loop.time() < until:
            await conv.session.events.get()
        await feed(conv, utterance(speech_ms=400, pause_ms=0), realtime=False)
        after: list = []
        while True:
            event = await conv.session.events.get()
            after.append(event)
            if isinstance(event, Interrupted):
                break
        assert event.turn_id == first.turn_id
        # nothing of the interrupted turn is sent after `interrupted`
        await asyncio.sleep(0.2)
        rest = []
        while len(conv.session.events):
            rest.append(await conv.session.events.get())
        assert not any(isinstance(e, AudioOut) and e.turn_id == first.turn_id for e in rest)
        assert llm.counters.opened == 1 and llm.counters.closed == 1 and llm.counters.completed == 0
        memory = conv.session.memory.messages
        spoken = memory[-1].content
        assert memory[-1].role == "assistant" and 0 < len(spoken) < len(llm.settings.reply)
        assert llm.settings.reply.startswith(spoken)
    await engine.stop()
    await assert_no_new_tasks(before)


async def test_explicit_interrupt():
    engine = scripted_engine(tts={"provider": "scripted", "ms_per_char": 30})
    await engine.start()
    async with engine.conversation(pace=True) as conv:
        await conv.send_text("hi")
        await conv.next_event(AudioOut, timeout_s=5)
        assert await conv.interrupt()
        event = await conv.next_event(Interrupted, timeout_s=2)
        assert event.turn_id
        metrics = await conv.next_event(MetricsEvent, timeout_s=2)
        assert metrics.figures["interrupted"] is True
    await engine.stop()


async def test_fallback_when_the_first_llm_raises():
    engine = scripted_engine(llm=[
        {"provider": "scripted", "fail": "raise"},
        {"provider": "scripted", "reply": "Backup answers."},
    ])
    _, events = await run_turn(engine, text="hello")
    assert "".join(e.text for e in events if isinstance(e, Reply)) == "Backup answers."
    assert not any(isinstance(e, ErrorEvent) for e in events)
    assert engine.runtime.llm[0].provider.counters.closed == 1


async def test_fallback_when_the_first_llm_hangs():
    engine = scripted_engine(llm=[
        {"provider": "scripted", "fail": "hang", "timeout_s": 0.3},
        {"provider": "scripted", "reply": "Backup answers."},
    ])
    _, events = await run_turn(engine, text="hello")
    assert "".join(e.text for e in events if isinstance(e, Reply)) == "Backup answers."
    assert events[-1].figures["llm_provider"] == "scripted"
    assert engine.runtime.llm[0].provider.counters.cancelled == 1


async def test_retryable_error_is_retried_before_falling_back():
    engine = scripted_engine(llm=[
        {"provider": "scripted", "fail": "raise", "fail_times": 1, "retries": 2, "reply": "Second try works."},
        {"provider": "scripted", "reply": "Backup."},
    ])
    _, events = await run_turn(engine, text="hello")
    assert "".join(e.text for e in events if isinstance(e, Reply)) == "Second try works."
    assert engine.runtime.llm[0].provider.counters.opened == 2


async def test_auth_error_is_not_retried():
    engine = scripted_engine(llm=[
        {"provider": "scripted", "fail": "auth", "retries": 3},
        {"provider": "scripted", "reply": "Backup."},
    ])
    _, events = await run_turn(engine, text="hello")
    assert engine.runtime.llm[0].provider.counters.opened == 1
    assert "".join(e.text for e in events if isinstance(e, Reply)) == "Backup."


async def test_error_event_only_when_every_provider_fails():
    engine = scripted_engine(llm=[{"provider": "scripted", "fail": "raise"}, {"provider": "scripted", "fail": "auth"}])
    _, events = await run_turn(engine, text="hello")
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert len(errors) == 1 and errors[0].code == "authentication_failed"
    assert "every llm provider failed" in errors[0].message


async def test_tts_fallback_and_stt_fallback_replays_the_utterance():
    engine = scripted_engine(
        stt=[{"provider": "scripted", "fail": "hang", "timeout_s": 0.5},
             {"provider": "scripted", "transcripts": ["from the backup stt"]}],
        tts=[{"provider": "scripted", "fail": "raise"}, {"provider": "scripted", "sample_rate": 24000}],
    )
    _, events = await run_turn(engine)
    final = [e for e in events if isinstance(e, Transcript) and e.final]
    assert final and final[0].text == "from the backup stt"
    assert any(isinstance(e, AudioOut) for e in events)
    assert events[-1].figures["tts_provider"] == "scripted"


async def test_session_end_leaves_no_task_and_closes_streams():
    engine = scripted_engine(llm={"provider": "scripted", "token_delay_ms": 200, "reply": "a b c d e f g h i j"})
    await engine.start()
    before = asyncio.all_tasks()
    async with engine.conversation() as conv:
        await conv.send_text("hello")
        await conv.next_event(Reply, timeout_s=5)
    # the session ended mid-reply
    events = []
    async for event in conv.events():
        events.append(event)
    assert isinstance(events[-1], Closed)
    await assert_no_new_tasks(before)
    llm = engine.runtime.llm[0].provider
    stt = engine.runtime.stt[0].provider
    assert llm.counters.opened == llm.counters.closed == 1
    assert stt.counters.opened == stt.counters.closed == 1
    assert not engine.sessions
    await engine.stop()


async def test_memory_keeps_context_across_turns():
    engine = scripted_engine(llm={"provider": "scripted", "echo": True})
    await engine.start()
    async with engine.conversation(pace=False) as conv:
        for text in ("first question", "second question"):
            await conv.send_text(text)
            await conv.collect_turn()
    llm = engine.runtime.llm[0].provider
    last_request = llm.counters.requests[-1]
    assert [m.role for m in last_request] == ["system", "user", "assistant", "user"]
    assert last_request[1].content == "first question"
    await engine.stop()


async def test_tools_are_called_and_answered():
    engine = scripted_engine(llm={"provider": "scripted", "echo": True, "tool_call": "clock",
                                  "tool_arguments": '{"city": "Tokyo"}'})

    @engine.tool(description="the time in a city", parameters={"type": "object", "properties": {"city": {"type": "string"}}})
    async def clock(city: str) -> str:
        return f"noon in {city}"

    _, events = await run_turn(engine, text="what time is it in Tokyo")
    reply = "".join(e.text for e in events if isinstance(e, Reply))
    assert "noon in Tokyo" in reply
    assert any(e.type == "tool_call" and e.name == "clock" for e in events)


async def test_idle_timeout_and_max_length_end_the_session_with_a_reason():
    from vocable.testing.scripted import scripted_config

    from vocable import Engine

    data = scripted_config()
    data["server"] = {"idle_timeout_s": 0.3}
    engine = Engine.from_dict(data, autoload=False, plugins=["vocable.plugins.core", "vocable.testing.plugin"])
    await engine.start()
    async with engine.conversation() as conv:
        error = await conv.next_event(ErrorEvent, timeout_s=5)
        assert error.code == "idle_timeout" and error.fatal
        closed = await conv.next_event(Closed, timeout_s=2)
        assert closed.reason == "idle_timeout"
        assert conv.id not in engine.sessions
    data["server"] = {"max_session_s": 0.5}
    engine2 = Engine.from_dict(data, autoload=False, plugins=["vocable.plugins.core", "vocable.testing.plugin"])
    await engine2.start()
    async with engine2.conversation() as conv:
        await conv.send_text("keep me busy")
        closed = await conv.next_event(Closed, timeout_s=5)
        assert closed.reason == "max_session_length"
    await engine.stop()
    await engine2.stop()


async def test_speculative_reply_is_held_until_the_end_of_turn():
    engine = scripted_engine(
        stt={"provider": "scripted", "transcripts": ["is it raining"], "final_delay_ms": 150},
        llm={"provider": "scripted", "echo": True},
        turn={"provider": "silence", "hangover_ms": 500},
        turn_taking={"speculative_ms": 100},
    )
    await engine.start()
    async with engine.conversation(pace=False) as conv:
        await conv.next_event(Ready)
        from vocable.testing.fakes import tone
        from vocable.testing.speech import silence

        await feed(conv, silence(100) + tone(500, 16000) + silence(300), realtime=True)
        # 300 ms into the pause: transcribed and prepared, but nothing of the reply may be out yet
        await asyncio.sleep(0.05)
        early = []
        while len(conv.session.events):
            early.append(await conv.session.events.get())
        assert not any(isinstance(e, (Reply, AudioOut)) for e in early), early
        assert conv.session.replies.current is not None, "the reply should be prepared during the pause"
        await feed(conv, silence(400), realtime=True)
        events = await conv.collect_turn()
    reply = "".join(e.text for e in events if isinstance(e, Reply))
    assert reply == "You said: is it raining."
    figures = events[-1].figures
    assert figures["speculative"] is True
    assert figures["engine_overhead_ms"] is not None and figures["engine_overhead_ms"] < 100
    await engine.stop()


async def test_speculation_is_dropped_when_the_user_goes_on():
    engine = scripted_engine(
        stt={"provider": "scripted", "transcripts": ["turn on", "the kitchen lights"]},
        llm={"provider": "scripted", "echo": True},
        turn={"provider": "silence", "hangover_ms": 500},
        turn_taking={"speculative_ms": 100},
    )
    await engine.start()
    from vocable.testing.fakes import tone
    from vocable.testing.speech import silence

    async with engine.conversation(pace=False) as conv:
        await conv.next_event(Ready)
        await feed(conv, silence(100) + tone(400, 16000) + silence(250), realtime=True)
        await feed(conv, tone(400, 16000) + silence(700), realtime=True)
        events = await conv.collect_turn()
    replies = [e for e in events if isinstance(e, Reply)]
    assert "".join(e.text for e in replies) == "You said: turn on the kitchen lights."
    assert len({e.turn_id for e in replies}) == 1
    assert not any(isinstance(e, Interrupted) for e in events)
    finals = [e.text for e in events if isinstance(e, Transcript) and e.final]
    assert finals == ["turn on the kitchen lights"]
    llm = engine.runtime.llm[0].provider
    assert llm.counters.opened == llm.counters.closed
    await engine.stop()


async def test_interrupt_and_close_never_wait_on_a_full_audio_queue():
    """Regression: a TTS far ahead of playback filled the queue and the cancelled pump waited for room."""
    engine = scripted_engine(llm={"provider": "scripted", "reply": "Word after word goes on. " * 80},
                             tts={"provider": "scripted", "chunk_ms": 20})
    await engine.start()
    seen: list = []
    async with engine.conversation(pace=True) as conv:
        async def client() -> None:  # a client that reads everything, as a transport's writer does
            async for event in conv.events():
                seen.append(event)

        reader = asyncio.create_task(client())
        await conv.send_text("talk a lot")
        while not any(isinstance(e, AudioOut) for e in seen):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        async with asyncio.timeout(2):
            assert await conv.interrupt()
        await conv.send_text("and again")
        while sum(isinstance(e, AudioOut) for e in seen) < 20:
            await asyncio.sleep(0.01)
        # leaving the block closes the session mid-reply, with the audio queue full
    async with asyncio.timeout(2):
        await reader
    assert isinstance(seen[-1], Closed)
    assert sum(isinstance(e, Interrupted) for e in seen) >= 1
    await engine.stop()


async def test_the_stt_can_end_the_turn_itself():
    """`turn: {provider: stt}`: a streaming STT's speech_final ends the turn, long before the safety net."""
    engine = scripted_engine(
        stt={"provider": "scripted", "transcripts": ["book a table for two"], "endpointing_ms": 200},
        turn={"provider": "stt", "max_pause_ms": 5000},
        llm={"provider": "scripted", "echo": True},
    )
    await engine.start()
    async with engine.conversation(pace=False) as conv:
        await conv.next_event(Ready)
        from vocable.testing.fakes import tone
        from vocable.testing.speech import silence

        await feed(conv, silence(100) + tone(500, 16000) + silence(400), realtime=True)
        events = await conv.collect_turn(timeout_s=3)
    assert [e.text for e in events if isinstance(e, Transcript) and e.final] == ["book a table for two"]
    assert "".join(e.text for e in events if isinstance(e, Reply)) == "You said: book a table for two."
    figures = events[-1].figures
    assert figures["eot_ms"] < 1000, "the STT's endpointing, not the 5 s safety net, ended the turn"
    await engine.stop()


async def test_the_first_audio_goes_out_as_soon_as_the_tts_makes_it():
    """Regression: the player sat behind the sentence marker while the TTS filled the audio queue first."""
    engine = scripted_engine(llm={"provider": "scripted", "reply": "A first sentence that is long enough. And more."},
                             tts={"provider": "scripted", "chunk_ms": 20})
    await engine.start()
    tts = engine.runtime.tts[0].provider
    made: list[object] = []
    original = tts.synthesize

    async def counting(text):
        async for chunk in original(text):
            made.append(chunk)
            yield chunk

    tts.synthesize = counting
    made_at_first_audio: list[int] = []
    async with engine.conversation(pace=False) as conv:
        replies = conv.session.replies._runner
        emit = replies.emit

        async def spy(event):
            if isinstance(event, AudioOut) and not made_at_first_audio:
                made_at_first_audio.append(len(made))
            await emit(event)

        replies.emit = spy
        await conv.next_event(Ready)
        await conv.send_text("hello")
        events = await conv.collect_turn()
    await engine.stop()
    assert any(isinstance(e, AudioOut) for e in events)
    assert made_at_first_audio and made_at_first_audio[0] <= 2, made_at_first_audio


async def test_speech_frames_inside_an_utterance_reach_the_stt_with_nothing_to_await():
    """The hot path: a speech frame mid-utterance goes to the STT at once; every frame still arrives, in order."""
    words = [f"w{i}" for i in range(200)]
    engine = scripted_engine(stt={"provider": "scripted", "transcripts": [" ".join(words)], "interim_every_ms": 20})
    await engine.start()
    async with engine.conversation() as conv:
        await conv.next_event(Ready)
        session = conv.session
        pcm = utterance()
        awaited = 0
        for i in range(0, len(pcm), 640):  # as the WebSocket transport feeds it: one 20 ms frame a message
            if (rest := session.feed_audio(pcm[i : i + 640])) is not None:
                awaited += 1
                await rest
        events = await conv.collect_turn(10)
        utterance_frames = len(session.hearing.listener.utterance) // 640
    await engine.stop()
    interims = [e for e in events if isinstance(e, Transcript) and not e.final]
    # the scripted STT shows one word per 20 ms it has heard: the last interim counts the frames it got
    assert len(interims[-1].text.split()) == utterance_frames > 40
    assert [e for e in events if isinstance(e, Transcript) and e.final][0].text == " ".join(words)
    assert awaited <= 3  # the frame that starts the utterance, the one that ends it, and the odd full queue
