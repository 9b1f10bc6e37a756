"""A person who pauses mid-thought, in the dashboard over the WebSocket, on the offline default (issue 24).

Headless Debian Chromium's fake microphone reads one thought in six espeak-ng phrases with 500-900 ms pauses.
The page must end with each phrase's words exactly once across the user bubbles, no empty agent bubble, a
spoken reply to the whole utterance, and the state back at "Listening" (``paused_thought_problems``). The
models' time limits are widened for a loaded machine (``offline_default_config``); nothing else changes.

The person also starts speaking before the session is ready: the page's ``client-config`` is held until the
fake microphone has played the first phrase, so the socket opens only then. The page keeps what the
microphone captured meanwhile (its pre-roll) and sends it first: the transcript starts with the first word.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from wskit import live_server

from vocable import Engine
from vocable.testing.browser import (
    CHROMIUM,
    PAUSED_THOUGHT,
    RECORD_EVENTS,
    chromium_args,
    describe_page,
    offline_default_config,
    paused_thought_missing,
    paused_thought_problems,
    paused_thought_wav,
    read_answered_page,
)
from vocable.testing.speech import espeak_pcm

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

LEAD_MS = 1000  # silence before the first phrase, from the moment the page opens the microphone


@pytest.mark.skipif(paused_thought_missing() is not None, reason=str(paused_thought_missing()))
async def test_a_thought_read_in_six_phrases_is_one_bubble_and_one_spoken_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.async_api import Route, async_playwright

    monkeypatch.setenv("VOCABLE_DB", str(tmp_path / "turns.db"))
    wav = tmp_path / "thought.wav"
    clip_ms = paused_thought_wav(wav, lead_ms=LEAD_MS)
    first_phrase_ms = len(espeak_pcm(PAUSED_THOUGHT[0][0])) * 1000 // 32000
    engine = Engine.from_dict(offline_default_config())
    problems: list[str] = []
    connecting = asyncio.Event()  # set: the page may fetch its client-config, and so connect

    async def hold(route: Route) -> None:
        await connecting.wait()
        await route.continue_()

    async with live_server(engine) as server, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=chromium_args(wav))
        try:
            page = await browser.new_page()
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            await page.add_init_script(RECORD_EVENTS)
            await page.route("**/client-config", hold)
            await page.goto(server.http + "/")
            await page.click("#mic")  # the person speaks at once: the clip plays from getUserMedia
            await page.wait_for_function(
                "(ms) => window.vocableStats.micOpenedAt != null"
                " && performance.now() - window.vocableStats.micOpenedAt > ms",
                arg=LEAD_MS + first_phrase_ms + 300, timeout=60_000)
            before: dict[str, Any] = await page.evaluate(
                "({ connected: window.vocableStats.connected, sent: window.vocableStats.micFramesSent,"
                "   hint: document.querySelector('#mic-hint').dataset.hearing })")
            assert before == {"connected": False, "sent": 0, "hint": "false"}, \
                f"the first phrase was spoken while the page was still connecting and said to wait: {before}"
            connecting.set()
            await page.wait_for_selector('#mic-hint[data-hearing="true"]', timeout=60_000)
            content = await read_answered_page(page, clip_ms)
        finally:
            await browser.close()
    report = describe_page(content)
    print(report)  # shown with -s, or when an assertion fails
    assert content["stats"]["prerollFramesSent"] * 20 >= first_phrase_ms, f"the pre-roll was not sent\n{report}"
    assert not paused_thought_problems(content), "\n".join([*paused_thought_problems(content), report])
    assert problems == [], problems
