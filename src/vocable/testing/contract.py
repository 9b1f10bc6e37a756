"""A contract-test kit for provider authors: subclass, say how to build your provider, run pytest.

    from vocable.testing.contract import TTSContract

    class TestMyTTS(TTSContract):
        def make_provider(self):
            return MyTTS(MyTTS.Settings(api_key="..."))
        def make_unauthorized(self):          # optional: a provider with a bad credential
            return MyTTS(MyTTS.Settings(api_key="wrong"))

Each check drives the provider the way the engine does and fails with a message that says what the engine
needs. The methods are synchronous (each runs its own event loop), so no pytest plugin is required.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from vocable.providers.base import FLUSH, LLM, STT, TTS, AudioChunk, Message, Provider, TextDelta
from vocable.providers.errors import AuthenticationError, ProviderError

PROMPT_CLOSE_S = 1.0


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _started(provider: Provider) -> Provider:
    await provider.start()
    return provider


class _Contract:
    def make_provider(self) -> Any:
        raise NotImplementedError("return an instance of your provider")

    def make_unauthorized(self) -> Any | None:
        """A provider configured with a bad credential, if it uses credentials."""
        return None

    def test_settings_forbid_unknown_keys(self) -> None:
        provider = self.make_provider()
        try:
            type(provider).Settings.model_validate({"surely_not_a_setting": 1})
        except Exception:
            return
        raise AssertionError(f"{type(provider).__name__}.Settings accepts unknown keys; use ProviderSettings")

    def test_bad_credential_is_a_clear_error(self) -> None:
        provider = self.make_unauthorized()
        if provider is None:
            return
        async def go() -> None:
            try:
                await provider.start()
                async with aclosing(self._drive(provider)) as stream:
                    async for _ in stream:
                        pass
            except AuthenticationError as exc:
                assert str(exc), "AuthenticationError needs a message"
                return
            finally:
                await provider.aclose()
            raise AssertionError("a bad credential must raise vocable.providers.errors.AuthenticationError")
        _run(go())

    def _drive(self, provider: Any) -> AsyncIterator[Any]:
        raise NotImplementedError


class _StreamingContract(_Contract):
    """Checks shared by providers that stream output: closing the stream must stop the work at once."""

    def test_close_stops_promptly(self) -> None:
        async def go() -> float:
            provider = await _started(self.make_provider())
            try:
                stream = self._drive(provider)
                await anext(stream)
                started = time.perf_counter()
                await stream.aclose()
                return time.perf_counter() - started
            finally:
                await provider.aclose()
        took = _run(go())
        assert took < PROMPT_CLOSE_S, f"closing the stream took {took:.2f} s; the engine needs < {PROMPT_CLOSE_S} s"


class LLMContract(_StreamingContract):
    prompt = "Say hello in five words."

    def _drive(self, provider: LLM) -> AsyncIterator[Any]:
        return provider.stream([Message("user", self.prompt)])

    def test_streams_text(self) -> None:
        async def go() -> str:
            provider = await _started(self.make_provider())
            try:
                text = ""
                async with aclosing(self._drive(provider)) as stream:
                    async for chunk in stream:
                        if isinstance(chunk, TextDelta):
                            text += chunk.text
                return text
            finally:
                await provider.aclose()
        assert _run(go()).strip(), "the LLM streamed no text"


class TTSContract(_StreamingContract):
    text = "Hello there, this is a test of speech synthesis."

    def _drive(self, provider: TTS) -> AsyncIterator[Any]:
        return provider.synthesize(self.text)

    def test_declared_sample_rate_honoured(self) -> None:
        async def go() -> list[AudioChunk]:
            provider = await _started(self.make_provider())
            try:
                async with aclosing(self._drive(provider)) as stream:
                    return [chunk async for chunk in stream]
            finally:
                await provider.aclose()
        provider = self.make_provider()
        chunks = _run(go())
        assert chunks, "the TTS produced no audio"
        for chunk in chunks:
            assert chunk.sample_rate == provider.sample_rate, (
                f"chunk at {chunk.sample_rate} Hz but capabilities declare {provider.sample_rate} Hz"
            )
        total = b"".join(c.pcm for c in chunks)
        assert len(total) % 2 == 0, "PCM16 audio must have an even number of bytes"
        assert len(total) / 2 / provider.sample_rate > 0.2, "less than 0.2 s of audio for a whole sentence"


class STTContract(_Contract):
    sample_rate = 16000

    def speech(self) -> bytes:
        """Speech to transcribe (PCM16 at ``sample_rate``); default: espeak-ng saying ``words``."""
        from vocable.testing.speech import espeak_pcm

        return espeak_pcm(" ".join(self.words), sample_rate=self.sample_rate)

    words: tuple[str, ...] = ("hello", "world")

    async def _feed(self, pcm: bytes) -> AsyncIterator[bytes | Any]:
        step = self.sample_rate // 50 * 2
        for i in range(0, len(pcm), step):
            yield pcm[i : i + step]
        yield FLUSH

    def _drive(self, provider: STT) -> AsyncIterator[Any]:
        return provider.transcribe(self._feed(self.speech()), sample_rate=self.sample_rate)

    def test_flush_yields_exactly_one_final(self) -> None:
        async def go() -> list[Any]:
            provider = await _started(self.make_provider())
            try:
                async with aclosing(self._drive(provider)) as stream:
                    return [event async for event in stream]
            finally:
                await provider.aclose()
        events = _run(go())
        finals = [e for e in events if e.final]
        assert len(finals) == 1, f"one FLUSH must give exactly one final transcript, got {len(finals)}"
        heard = finals[0].text.lower()
        missing = [w for w in self.words if w.lower() not in heard]
        assert not missing, f"final transcript {finals[0].text!r} misses {missing}"

    def test_errors_are_provider_errors(self) -> None:
        provider = self.make_unauthorized()
        if provider is None:
            return
        async def go() -> None:
            try:
                await provider.start()
                async with aclosing(self._drive(provider)) as stream:
                    async for _ in stream:
                        pass
            except ProviderError:
                return
            finally:
                await provider.aclose()
            raise AssertionError("failures must raise vocable.providers.errors.ProviderError subclasses")
        _run(go())
