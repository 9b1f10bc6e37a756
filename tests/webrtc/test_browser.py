"""Headless Chromium talks to the server over WebRTC through ``webrtc.js``, with a WAV file as its microphone.

Chromium plays the WAV as the fake microphone once getUserMedia opens it; a wrong format gives silence
with no error, so the test checks the speech energy the server received, and the reply's energy arriving
in the browser (inbound-rtp ``totalAudioEnergy``). Playwright drives Debian's /usr/bin/chromium (never
``playwright install``), headless (which mutes output, so the reply cannot leak back into the mic).
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any, Self

import numpy as np
import pytest
from kit import scripted_engine, served

from vocable.engine.session import Session
from vocable.testing.browser import CHROMIUM
from vocable.testing.browser import chromium_args as browser_chromium_args
from vocable.testing.speech import espeak_available, espeak_pcm, silence, write_wav

pytestmark = [pytest.mark.netns, pytest.mark.slow]



def chromium_args(wav: Path) -> list[str]:
    return browser_chromium_args(wav, webrtc=True)


def _skip_reason() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright; never `playwright install`)"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    if not espeak_available():
        return "espeak-ng is missing (apt-get install espeak-ng)"
    return None


needs_browser = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


def fake_mic_wav(tmp_path: Path) -> Path:
    """Mono 16-bit 16 kHz: silence while the call connects, the question, then silence to end the turn."""
    pcm = silence(1500) + espeak_pcm("what is the weather today") + silence(2500)
    path = tmp_path / "mic.wav"
    write_wav(str(path), pcm, 16000)
    return path


class Heard:
    """The loudest 20 ms the server's sessions received (a silent fake mic fails here, not later)."""

    def __init__(self) -> None:
        self.loudest = 0.0
        self._original = Session.send_audio

    def __enter__(self) -> Self:
        original, heard = self._original, self

        async def recording(session: Session, pcm: bytes) -> None:
            samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
            if samples.size:
                heard.loudest = max(heard.loudest, float(np.sqrt(np.mean(samples**2))))
            await original(session, pcm)

        Session.send_audio = recording  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        Session.send_audio = self._original  # type: ignore[method-assign]


CONNECT = """async () => {
  const { connect } = await import("/webrtc/client.js");
  window.events = [];
  window.states = [];
  window.call = await connect("", {
    onEvent: (e) => window.events.push(e),
    onConnectionState: (s) => window.states.push(s),
  });
  return window.call.sessionId;
}"""

INBOUND_ENERGY = """async () => {
  let energy = 0;
  (await window.call.pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") energy += s.totalAudioEnergy || 0;
  });
  return energy;
}"""


async def wait_for_event(page: Any, kind: str, timeout_s: float, **fields: Any) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        while True:
            for event in await page.evaluate("() => window.events"):
                if event.get("type") == kind and all(event.get(k) == v for k, v in fields.items()):
                    return event
            await asyncio.sleep(0.1)


@needs_browser
async def test_chromium_speaks_over_webrtc_js_and_hears_the_reply(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    engine = scripted_engine()
    with Heard() as heard:
        async with served(engine.asgi_app()) as base, async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                               args=chromium_args(fake_mic_wav(tmp_path)))
            try:
                page = await browser.new_page()
                await page.goto(f"{base}/webrtc/client.js")  # same origin, and no dashboard connecting by itself
                session_id = await page.evaluate(CONNECT)
                assert session_id in engine.sessions
                final = await wait_for_event(page, "transcript", 20, final=True)
                assert final["text"] == "what is the weather today"
                await wait_for_event(page, "metrics", 20)
                await asyncio.sleep(1.0)  # the reply's audio through the browser's jitter buffer
                assert "connected" in await page.evaluate("() => window.states")
                events = await page.evaluate("() => window.events")
                assert events[0]["type"] == "ready" and events[0]["session_id"] == session_id
                reply = "".join(e["text"] for e in events if e["type"] == "reply")
                assert reply == "It is sunny. Take a hat with you today."
                assert await page.evaluate(INBOUND_ENERGY) > 0.001, "the reply's audio reached the browser"
                assert heard.loudest > 1000, f"the server heard speech, loudest 20 ms rms {heard.loudest:.0f}"
                await page.evaluate("() => window.call.close()")
                async with asyncio.timeout(5):
                    while engine.sessions:
                        await asyncio.sleep(0.05)
            finally:
                await browser.close()


# Every RTCPeerConnection the page makes, so the test can read the dashboard's inbound audio stats.
RECORD_PEER_CONNECTIONS = """(() => {
  const Original = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = function (...args) { const pc = new Original(...args); window.__pcs.push(pc); return pc; };
  window.RTCPeerConnection.prototype = Original.prototype;
})();"""

DASHBOARD_INBOUND_ENERGY = INBOUND_ENERGY.replace("window.call.pc", "window.__pcs[window.__pcs.length - 1]")


@needs_browser
async def test_dashboard_in_webrtc_mode_with_a_fake_microphone(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    engine = scripted_engine(websocket={})
    wav = tmp_path / "mic.wav"
    write_wav(str(wav), silence(3000) + espeak_pcm("what is the weather today") + silence(2500), 16000)
    with Heard() as heard:
        async with served(engine.asgi_app()) as base, async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=chromium_args(wav))
            try:
                page = await browser.new_page()
                await page.add_init_script(RECORD_PEER_CONNECTIONS)
                await page.goto(f"{base}/")
                await page.click("#transport-rtc")  # the switch: WebSocket -> WebRTC
                async with asyncio.timeout(10):
                    while not [s for s in engine.sessions.values() if s.transport == "webrtc"]:
                        await asyncio.sleep(0.05)
                await page.click("#mic")  # the fake mic's speech starts 3 s after getUserMedia opened it
                log = page.locator("#log")
                await log.get_by_text("what is the weather today").wait_for(timeout=20000)
                await log.get_by_text("It is sunny. Take a hat with you today.").wait_for(timeout=20000)
                assert await page.get_attribute("#mic-hint", "data-hearing") == "true", "told to speak"
                # the session facts say what the browser played (inbound-rtp), not "0 frames played"
                await page.wait_for_function("window.vocableStats.playedMs > 0", timeout=20000)
                played = await page.text_content("#fact-played") or ""
                assert played.endswith(" s") and not played.startswith("0 frames"), played
                assert await page.get_attribute("#transport-rtc", "aria-pressed") == "true"
                assert [s.transport for s in engine.sessions.values()] == ["webrtc"], "the WebSocket one was closed"
                assert await page.evaluate(DASHBOARD_INBOUND_ENERGY) > 0.001, "the reply's audio reached the page"
                assert heard.loudest > 1000, f"the server heard speech, loudest 20 ms rms {heard.loudest:.0f}"
                await page.screenshot(path=str(tmp_path / "dashboard-webrtc.png"), full_page=True)
            finally:
                await browser.close()
        async with asyncio.timeout(15):  # the page is gone: its peer closes (DTLS close or the timeouts)
            while engine.sessions:
                await asyncio.sleep(0.05)
