"""MarkedPlayout (what the caller heard, by marks) and the G.711 codec, without a network."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pytest

from vocable.engine.events import AudioOut
from vocable.transports.phone import codec
from vocable.transports.phone.call import mask_number
from vocable.transports.phone.dialect import Inbound, Reorder
from vocable.transports.phone.playout import MarkedPlayout

RATE = 16000
FRAME = RATE * 20 // 1000 * 2  # 640 session bytes: 20 ms


@dataclass
class Seg:
    text: str
    start_byte: int


def frames(n: int, turn: str = "t1") -> list[AudioOut]:
    return [AudioOut(b"\x10\x00" * (FRAME // 2), RATE, turn) for _ in range(n)]


def play(playout: MarkedPlayout, events: list[AudioOut]) -> list[tuple]:
    out: list[tuple] = []
    for event in events:
        out += playout.audio(event)
    return out


def marks(out: list[tuple]) -> list[str]:
    return [item[1] for item in out if item[0] == "mark"]


def test_marks_between_pieces_of_text_and_playout_by_acknowledgement() -> None:
    segments = [Seg("One. ", 0), Seg("Two. ", 10 * FRAME), Seg("Three. ", 25 * FRAME)]
    playout = MarkedPlayout(RATE, segments=lambda turn: segments)
    out = play(playout, frames(30))
    out += playout.reply_done("t1")
    names = marks(out)
    assert len(names) == 3  # after "One.", after "Two.", and at the very end
    assert sum(1 for item in out if item[0] == "media") == 30
    assert playout.unplayed_bytes() == 30 * FRAME  # nothing acknowledged yet
    assert playout.acknowledged(names[0])
    assert playout.unplayed_bytes() == 20 * FRAME and playout.acked_bytes == 10 * FRAME
    assert playout.acknowledged(names[2])  # a later mark: the earlier ones are heard too
    assert playout.unplayed_bytes() == 0 and playout.heard.is_set()
    assert not playout.acknowledged(names[1])  # already behind: counts for nothing


def test_marks_echoed_after_a_clear_are_ignored_and_resume_resends_what_was_not_acknowledged() -> None:
    playout = MarkedPlayout(RATE, mark_interval_ms=100)
    out = play(playout, frames(12))
    names = marks(out)  # every 5 frames: at 100 ms and 200 ms
    assert len(names) == 2
    assert playout.acknowledged(names[0])
    cleared = playout.pause()
    assert cleared == [("clear",)]
    assert not playout.acknowledged(names[1])  # echoed because of the clear, not because it played
    assert playout.marks_ignored == 1
    assert playout.unplayed_bytes() == 7 * FRAME
    replay = playout.resume()
    media = [item for item in replay if item[0] == "media"]
    assert len(media) == 7  # the frames after the acknowledged mark, again
    new_names = marks(replay)
    assert len(new_names) == 1 and new_names[0] not in names
    assert playout.acknowledged(new_names[0])
    assert playout.acked_bytes == 10 * FRAME


def test_interrupt_clears_and_forgets_the_reply() -> None:
    playout = MarkedPlayout(RATE, mark_interval_ms=100)
    names = marks(play(playout, frames(8)))
    assert playout.interrupt("t1") == [("clear",)]
    assert playout.unplayed_bytes() == 0 and playout.turn_id is None
    assert not playout.acknowledged(names[0])
    assert playout.resume() == []
    assert marks(play(playout, frames(6, "t2")))  # a new reply starts clean
    assert playout.turn_id == "t2"


def test_reorder_puts_messages_back_in_sequence() -> None:
    reorder = Reorder(window=3)
    got: list[int] = []
    for seq in (1, 3, 2, 4, 6, 5, 5, 7):
        got += [m.seq for m in reorder.push(Inbound("media", seq))]
    assert got == [1, 2, 3, 4, 5, 6, 7]
    assert reorder.dropped == 1
    for seq in (9, 10, 11, 12):  # 8 never comes: skipped once the window is full
        got += [m.seq for m in reorder.push(Inbound("media", seq))]
    assert got[-4:] == [9, 10, 11, 12] and reorder.lost == 1


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
def test_numpy_tables_match_audioop_bit_for_bit(encoding: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    every = np.arange(65536, dtype=np.uint16).view(np.int16).astype("<i2").tobytes()
    encode = audioop.lin2ulaw if encoding == "mulaw" else audioop.lin2alaw
    decode = audioop.ulaw2lin if encoding == "mulaw" else audioop.alaw2lin
    assert codec.numpy_encode(every, encoding) == encode(every, 2)
    assert codec.numpy_decode(bytes(range(256)), encoding) == decode(bytes(range(256)), 2)


def test_audio_out_resamples_to_20_ms_frames_at_8_khz() -> None:
    out = codec.PhoneAudioOut(24000)
    t = np.arange(24000) / 24000
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
    got = [f for i in range(0, len(pcm), 960) for f in out.push(pcm[i : i + 960])] + out.flush()
    assert all(len(f) == codec.FRAME_BYTES for f in got)
    assert abs(len(got) - 50) <= 1  # one second


def test_mask_number() -> None:
    assert mask_number("+14155550123") == "********0123"
    assert mask_number("sip:alice@example.com") is not None and "alice" not in mask_number("sip:alice@example.com")
    assert mask_number("123") == "***" and mask_number(None) is None


def test_twilio_fast_media_path_agrees_with_the_parser() -> None:
    import base64
    import json

    from vocable.transports.phone.twilio import TwilioDialect

    dialect = TwilioDialect()
    payload = bytes(range(160))
    message = {"event": "media", "sequenceNumber": "3", "media": {"track": "inbound", "chunk": "1",
                                                                  "timestamp": "20",
                                                                  "payload": base64.b64encode(payload).decode()},
               "streamSid": "MZ1"}
    compact = json.dumps(message, separators=(",", ":")).encode()
    assert dialect.fast_media(compact) is None  # not bound to a stream yet
    dialect.bind("MZ1")
    assert dialect.fast_media(compact) == payload == dialect.parse(message).payload
    assert dialect.fast_media(json.dumps(message).encode()) is None  # spaced JSON: the parser's
    assert dialect.fast_media(compact.replace(b"MZ1", b"MZ2")) is None  # another stream: the parser refuses it
    assert dialect.fast_media(compact.replace(message["media"]["payload"][:4].encode(), b"!!!!")) is None


def test_audio_in_doubles_the_rate_frame_by_frame_within_the_band() -> None:
    t = np.arange(8000) / 8000
    encode = codec.encoder("mulaw")
    for freq, passes in ((1000, True), (3000, True)):
        line = encode((np.sin(2 * np.pi * freq * t) * 10000).astype("<i2").tobytes())
        audio_in = codec.PhoneAudioIn("mulaw")
        frames = [audio_in(line[i : i + 160]) for i in range(0, len(line), 160)]
        assert all(len(f) == 640 for f in frames)  # 20 ms at 16 kHz, from the first frame on
        out = np.frombuffer(b"".join(frames), dtype="<i2").astype(float)[400:-400]
        spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
        freqs = np.fft.rfftfreq(len(out), 1 / 16000)
        assert abs(freqs[spectrum.argmax()] - freq) < 5
        assert spectrum[freqs > 4300].max() < spectrum.max() / 300  # the image above 4 kHz: below -50 dB
