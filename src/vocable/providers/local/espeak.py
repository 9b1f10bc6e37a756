"""``espeak`` TTS: Debian's espeak-ng in a subprocess, the light fallback voice.

Robotic but instant and tiny, with no Python dependency: a subprocess per sentence costs a few
milliseconds, runs outside the event loop by nature, and is killed when the stream is closed (barge-in).
Text goes in on stdin so nothing in it can be read as a command-line option. The audio is read from the
WAV espeak-ng streams on stdout and yielded as it arrives.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import ClassVar

import structlog
from pydantic import Field

from vocable.providers.base import TTS, AudioChunk, ProviderSettings, TTSCapabilities
from vocable.providers.errors import CapacityExceeded, ProviderError, ProviderUnavailable

log = structlog.get_logger("vocable.local")

ESPEAK_RATE = 22050
INSTALL = "apt-get install espeak-ng"


class EspeakSettings(ProviderSettings):
    voice: str = Field("en-us", description="espeak-ng voice name (espeak-ng --voices lists them).")
    speed: int = Field(175, ge=80, le=450, description="Words per minute.")
    pitch: int = Field(50, ge=0, le=99)
    executable: str = Field("espeak-ng", description="Program name or path.")
    chunk_ms: int = Field(100, ge=10, le=1000, description="Largest audio chunk yielded.")
    max_processes: int = Field(8, ge=1, description="espeak-ng processes at once; beyond it a request is refused.")


class EspeakTTS(TTS):
    name = "espeak"
    Settings = EspeakSettings
    capabilities: ClassVar[TTSCapabilities] = TTSCapabilities(sample_rate=ESPEAK_RATE)

    settings: EspeakSettings

    def __init__(self, settings: EspeakSettings | None = None) -> None:
        super().__init__(settings)
        self._lock = threading.Lock()  # not an asyncio primitive: sessions may live in different loops
        self._running = 0

    @classmethod
    def check_installed(cls) -> None:
        """espeak-ng is a program, not a module, so ``requires`` cannot express it."""
        executable = cls.Settings.model_fields["executable"].default
        if shutil.which(executable) is None:
            raise ProviderUnavailable(f"tts provider 'espeak' needs the espeak-ng program: run {INSTALL}")

    async def start(self) -> None:
        if shutil.which(self.settings.executable) is None:
            raise ProviderUnavailable(f"{self.settings.executable} not found: run {INSTALL}", provider=self.name)

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        if not text.strip():
            return
        with self._lock:
            if self._running >= self.settings.max_processes:
                raise CapacityExceeded(
                    f"{self._running} espeak-ng processes already running (max_processes={self.settings.max_processes})",
                    provider=self.name,
                )
            self._running += 1
        try:
            async with aclosing(self._run(text)) as chunks:  # closing us kills the process at once
                async for chunk in chunks:
                    yield chunk
        finally:
            with self._lock:
                self._running -= 1

    async def _run(self, text: str) -> AsyncGenerator[AudioChunk, None]:
        process = await asyncio.create_subprocess_exec(
            self.settings.executable,
            "--stdout",
            "--stdin",
            "-v",
            self.settings.voice,
            "-s",
            str(self.settings.speed),
            "-p",
            str(self.settings.pitch),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        try:
            process.stdin.write(text.encode("utf-8") + b"\n")
            await process.stdin.drain()
            process.stdin.close()
            rate = await _read_wav_header(process.stdout)
            chunk_bytes = max(2, rate * self.settings.chunk_ms // 1000 * 2)
            carry = b""
            while True:
                data = await process.stdout.read(chunk_bytes)
                if not data:
                    break
                data = carry + data
                cut = len(data) // 2 * 2
                carry = data[cut:]
                if cut:
                    yield AudioChunk(data[:cut], rate)
            if await process.wait() != 0:
                error = (await process.stderr.read()).decode(errors="replace").strip()
                raise ProviderError(f"espeak-ng exited with {process.returncode}: {error}", provider=self.name)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def _read_wav_header(stream: asyncio.StreamReader) -> int:
    """Consume the RIFF header up to the start of the samples; return the sample rate.

    espeak-ng writes the header before it knows the length (sizes are 0x7ffff...), so we walk the chunks
    rather than trusting sizes, and check the format is what we pass on: 16-bit mono PCM.
    """
    try:
        riff = await stream.readexactly(12)
        if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
            raise ProviderError("espeak-ng did not write a WAV stream", provider="espeak")
        rate = ESPEAK_RATE
        while True:
            chunk_id, size = struct.unpack("<4sI", await stream.readexactly(8))
            if chunk_id == b"data":
                return rate
            body = await stream.readexactly(size + (size & 1))
            if chunk_id == b"fmt ":
                fmt, channels, rate = struct.unpack("<HHI", body[:8])
                bits = struct.unpack("<H", body[14:16])[0]
                if fmt != 1 or channels != 1 or bits != 16:
                    raise ProviderError(f"espeak-ng wrote {bits}-bit, {channels}-channel audio", provider="espeak")
    except asyncio.IncompleteReadError:
        raise ProviderError("espeak-ng produced no audio", provider="espeak") from None
