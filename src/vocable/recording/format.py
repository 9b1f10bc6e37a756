"""The recording file: JSON Lines, one object a line, written as the session goes (docs/recording.md).

The first line is the header (``{"vocable_recording": 1, ...}``); every other line has ``t``, seconds since the
session started, and one of:

- ``in``: what the client sent: ``audio`` (``pcm``, base64 PCM16 at the input rate; only with ``record:
  audio``), ``rate`` (``sample_rate``), ``text``, ``interrupt``;
- ``event``: an event as the client saw it (its wire form; an ``audio`` event is a reference: its size,
  rate and turn, not its samples);
- ``stt``, ``llm``, ``tts``: what a provider produced, with ``p`` (its place in the chain) and ``n`` (which of
  its streams or requests in the session): ``open``; a transcript (``text``, ``final``, ``speech_final``, and
  ``at``: [flushes, bytes] of audio it had read by then); a text delta (``text``), ``tool_call`` or ``usage``;
  a request's ``text`` (or, streaming, each ``piece``) and its ``audio`` chunks (``bytes``, ``sample_rate``,
  ``text``); then ``end``: ``ok``, ``closed`` (the engine stopped reading), or the error. ``s``: the provider let
  the event loop run before this item (items without it came in one go with the one before);
- ``end``: the session's end reason (the last line).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

FORMAT_KEY = "vocable_recording"
VERSION = 1
SUFFIX = ".jsonl"


def recording_path(folder: str | Path, session_id: str) -> Path:
    """Where session ``session_id``'s recording is (``session_id`` must be a session id: ``check_session_id``)."""
    return Path(folder) / f"{session_id}{SUFFIX}"


def encode_pcm(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode("ascii")


def decode_pcm(text: str) -> bytes:
    return base64.b64decode(text)


class Writer:
    """Appends lines to one recording file (buffered: a line per audio frame must not cost a write each)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[str] | None = path.open("a", encoding="utf-8", buffering=1 << 16)

    def write(self, line: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n")

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass
class Recording:
    """A recording read back: its header and its lines, in order (only its first session if it was resumed)."""

    header: dict[str, Any]
    lines: list[dict[str, Any]] = field(default_factory=list)
    path: str = ""

    @property
    def end_reason(self) -> str | None:
        return next((line["end"] for line in reversed(self.lines) if "end" in line), None)

    def events(self) -> list[dict[str, Any]]:
        return [line["event"] for line in self.lines if "event" in line]

    def inputs(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if "in" in line]

    def outputs(self, kind: str, place: int) -> dict[int, list[dict[str, Any]]]:
        """What provider ``place`` of chain ``kind`` produced: stream or request number -> its lines."""
        found: dict[int, list[dict[str, Any]]] = {}
        for line in self.lines:
            item = line.get(kind)
            if item is not None and item["p"] == place:
                found.setdefault(item["n"], []).append({**item, "t": line["t"]})
        return found


def read(path: str | Path) -> Recording:
    """Read a recording file; ValueError if it is not one."""
    lines = iter_lines(path)
    header = next(lines, None)
    if not isinstance(header, dict) or header.get(FORMAT_KEY) != VERSION:
        raise ValueError(f"{path}: not a vocable recording (version {VERSION})")
    recording = Recording(header, path=str(path))
    for line in lines:
        if FORMAT_KEY in line:  # a resumed session's part: another conversation's memory, not replayable here
            break
        recording.lines.append(line)
    return recording


def iter_lines(path: str | Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as file:
        for number, text in enumerate(file, 1):
            if not text.strip():
                continue
            try:
                yield json.loads(text)
            except json.JSONDecodeError:
                if number == 1:
                    raise ValueError(f"{path}: not a vocable recording") from None
                return  # the last line of a recording cut short (a crash): everything before it stands
