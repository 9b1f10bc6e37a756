"""The dashboard in headless Debian Chromium: speak through the fake microphone, see and hear the answer.

Chromium plays a WAV file as its microphone (``--use-file-for-fake-audio-capture``). A wrong WAV format or
path gives silence with no error, so the test also checks the speech energy the server actually received.
The page runs in a real browser against a real uvicorn server on 127.0.0.1; the first variant uses the
scripted fakes (fast, independent of the local models), the second the built-in offline default.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from wskit import engine as scripted_engine
from wskit import live_server

from vocable import Engine
from vocable.engine.session import Session
from vocable.testing.browser import CHROMIUM, chromium_args
from vocable.testing.speech import espeak_available, espeak_pcm, rms, silence, write_wav

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
QUESTION = "What is the weather like today?"
REPLY = "It is sunny and warm today, with a light breeze from the west. Take a hat with you, and some water too."


def _skip_reason() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright; never `playwright install`)"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    if not espeak_available():
        return "espeak-ng is missing (apt-get install espeak-ng)"
    return None


def _local_stack_missing() -> str | None:
    missing = [m for m in ("faster_whisper", "llama_cpp", "piper") if importlib.util.find_spec(m) is None]
    return f"the offline default needs {', '.join(missing)} (pip install 'vocable[local]')" if missing else None


def offline_engine() -> Engine:
    from vocable.cli import default_config_path

    return Engine.from_yaml(default_config_path())


@pytest.fixture
def heard(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every audio message the server's sessions receive."""
    received: list[bytes] = []
    original = Session.feed_audio  # what the WebSocket transport calls (send_audio goes through it too)

    def recording(self: Session, pcm: bytes) -> Any:
        received.append(pcm)
        return original(self, pcm)

    monkeypatch.setattr(Session, "feed_audio", recording)
    return received


def loudest_20ms(chunks: list[bytes], rate: int = 16000) -> float:
    pcm = b"".join(chunks)
    step = rate // 50 * 2
    return max((rms(pcm[i : i + step]) for i in range(0, len(pcm) - step + 1, step)), default=0.0)


VARIANTS: dict[str, tuple[Callable[[], Engine], str, str | None]] = {
    "scripted": (lambda: scripted_engine(llm={"provider": "scripted", "reply": REPLY}), "dashboard.png", None),
    "offline": (offline_engine, "dashboard-offline.png", "local"),
}


@pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))
@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_dashboard_conversation_in_chromium(
    variant: str, tmp_path: Path, heard: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.async_api import async_playwright

    monkeypatch.setenv("VOCABLE_DB", str(tmp_path / "turns.db"))  # the offline default keeps its turns in SQLite
    make_engine, shot, needs = VARIANTS[variant]
    if needs == "local" and (reason := _local_stack_missing()):
        pytest.skip(reason)
    wav = tmp_path / "question.wav"
    write_wav(str(wav), silence(700) + espeak_pcm(QUESTION) + silence(2500), 16000)
    eng = make_engine()
    timeout_ms = 20_000 if variant == "scripted" else 90_000
    problems: list[str] = []
    async with live_server(eng) as server, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=chromium_args(wav))
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 860})
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
            page.on("response", lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
            await page.goto(server.http + "/")
            await page.wait_for_function("window.vocableStats && window.vocableStats.connected", timeout=timeout_ms)
            assert await page.get_attribute("#state", "data-state") == "listening"

            await page.click("#mic")
            await page.wait_for_selector("#transcript-final", timeout=timeout_ms)
            await page.wait_for_function(
                "document.querySelector('#reply') && !document.querySelector('#reply').classList.contains('streaming')",
                timeout=timeout_ms)
            await page.wait_for_function("Number(document.querySelector('#latency-chart').dataset.turns) >= 1",
                                         timeout=timeout_ms)
            await page.wait_for_function("window.vocableStats.framesPlayed > 0", timeout=timeout_ms)
            await page.wait_for_function("window.vocableStats.state === 'listening'", timeout=timeout_ms)

            final = (await page.text_content("#transcript-final") or "").lower()
            reply = (await page.text_content("#reply") or "").strip()
            stats: dict[str, Any] = await page.evaluate("window.vocableStats")
            bars = await page.locator("#latency-chart rect.bar").count()
            dots = await page.locator("#latency-chart circle.v2v").count()
            if variant == "scripted":
                assert final == "what is the weather today"
                assert reply == REPLY
                assert stats["interimTranscripts"] > 0
            else:
                assert "weather" in final, final
                assert reply
            assert bars >= 3 and dots >= 1
            assert stats["micFramesSent"] > 50 and stats["framesReceived"] > 0 and stats["samplesPlayed"] > 0
            assert stats["errors"] == []

            await page.fill("#text-input", "Thanks. Anything else?")  # a typed turn through the text box
            await page.press("#text-input", "Enter")
            await page.wait_for_function("Number(document.querySelector('#latency-chart').dataset.turns) >= 2",
                                         timeout=timeout_ms)
            assert (await page.text_content("#transcript-final")) == "Thanks. Anything else?"
            await page.wait_for_function("window.vocableStats.state === 'listening'", timeout=timeout_ms)
            assert await page.locator("#latency-chart circle.v2v").count() == 2

            if variant == "scripted":  # "Stop reply" mid-answer: the server says interrupted, the player flushes
                await page.fill("#text-input", "Tell me more about the weather.")
                await page.press("#text-input", "Enter")
                await page.wait_for_function("window.vocableStats.state === 'speaking'", timeout=timeout_ms)
                await page.click("#interrupt")
                await page.wait_for_selector("#reply .tag", timeout=timeout_ms)
                assert await page.text_content("#reply .tag") == "interrupted"
                await page.wait_for_function("window.vocableStats.state === 'listening'", timeout=timeout_ms)
                await asyncio.sleep(0.3)
                after = await page.evaluate("window.vocableStats")
                assert after["flushes"] >= 1 and after["bufferedMs"] == 0
            await asyncio.sleep(0.3)  # let the chart settle before the picture
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
        finally:
            await browser.close()
    # the fake microphone really spoke: a wrong WAV format would have sent silence
    assert loudest_20ms(heard) > 1000, "the server received no speech from the browser's microphone"
    assert problems == [], "\n".join(problems)
