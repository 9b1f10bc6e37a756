"""The WebRTC transport's pure parts: no network, so no namespace needed."""

from __future__ import annotations

import asyncio

import aioice.ice
import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError
from pydantic import ValidationError

from vocable.transports.protocol import BadInput
from vocable.transports.webrtc.audio import PlaybackTrack, mono_pcm16
from vocable.transports.webrtc.hosts import pinned_host_addresses
from vocable.transports.webrtc.settings import WebRTCSettings
from vocable.transports.webrtc.signalling import (
    BadOffer,
    candidate_from_message,
    check_sdp,
    offer_from_json,
)

CANDIDATE = "candidate:3442447574 1 udp 2122260223 127.0.0.1 54321 typ host generation 0"


def test_mono_downmix_of_stereo_frames():
    stereo = np.array([[100, 300, -200, -400, 7, 7]], dtype="<i2")
    frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
    frame.sample_rate = 48000
    assert np.frombuffer(mono_pcm16(frame), dtype="<i2").tolist() == [200, -300, 7]


def test_mono_from_planar_float_frames():
    planar = np.array([[0.5, -0.5], [0.5, -0.5]], dtype=np.float32)
    frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout="stereo")
    frame.sample_rate = 48000
    samples = np.frombuffer(mono_pcm16(frame), dtype="<i2")
    assert samples.shape == (2,) and samples[0] > 16000 and samples[1] < -16000


async def test_playback_track_paces_20ms_frames_with_continuous_pts():
    track = PlaybackTrack(16000)
    await track.push(b"\x01\x00" * 480)  # 30 ms: one full frame, then half a frame padded with silence
    loop = asyncio.get_running_loop()
    start = loop.time()
    frames = [await track.recv() for _ in range(6)]
    elapsed = loop.time() - start
    assert [f.pts for f in frames] == [i * 320 for i in range(6)]
    assert all(f.samples == 320 and f.sample_rate == 16000 and f.time_base == frames[0].time_base for f in frames)
    assert 0.09 <= elapsed < 0.2, "five frame intervals of 20 ms"
    levels = [np.frombuffer(bytes(f.planes[0])[:640], "<i2") for f in frames[:3]]
    assert levels[0].min() == 1 and levels[1][:160].min() == 1 and levels[1][160:].max() == 0
    assert levels[2].max() == 0, "silence when nothing is queued"


async def test_playback_track_clear_drops_everything_and_bounds_the_buffer():
    track = PlaybackTrack(16000, max_buffer_ms=100)
    await track.push(b"\x01\x00" * 1600)  # 100 ms fills the buffer
    blocked = asyncio.create_task(track.push(b"\x02\x00" * 160))
    await asyncio.sleep(0.05)
    assert not blocked.done(), "a full buffer makes the producer wait"
    assert track.clear() == 3200
    await asyncio.wait_for(blocked, 1)
    assert track.buffered_ms == pytest.approx(10.0)
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


def test_candidate_messages_in_browser_shapes():
    plain = candidate_from_message({"type": "candidate", "candidate": CANDIDATE, "sdpMid": "0", "sdpMLineIndex": 0})
    assert plain is not None and plain.ip == "127.0.0.1" and plain.port == 54321 and plain.sdpMid == "0"
    nested = candidate_from_message({"type": "candidate", "candidate": {"candidate": CANDIDATE, "sdpMLineIndex": 1}})
    assert nested is not None and nested.sdpMLineIndex == 1
    bare = candidate_from_message({"type": "candidate", "candidate": CANDIDATE})
    assert bare is not None and bare.sdpMLineIndex == 0
    assert candidate_from_message({"type": "candidate", "candidate": None}) is None
    assert candidate_from_message({"type": "candidate", "candidate": ""}) is None


@pytest.mark.parametrize("value", ["candidate:1 1 udp", "nonsense", 42, "candidate:a b c d e f g h", "x" * 2000])
def test_bad_candidates_are_client_errors(value):
    with pytest.raises(BadInput) as caught:
        candidate_from_message({"type": "candidate", "candidate": value})
    assert caught.value.code == "invalid_candidate"


@pytest.mark.parametrize(("body", "reason"), [
    (b"not json", "JSON"),
    (b"[]", "JSON object"),
    (b'{"type": "answer", "sdp": "v=0"}', "expected type"),
    (b'{"type": "offer"}', "non-empty string"),
    (b'{"type": "offer", "sdp": "hello"}', "v=0"),
    (b'{"type": "offer", "sdp": "v=0\\r\\nm=audio notaport RTP/AVP 0\\r\\n"}', "malformed SDP"),
    (b'{"type": "offer", "sdp": "v=0\\r\\no=- 1 1 IN IP4 0.0.0.0\\r\\ns=-\\r\\nt=0 0\\r\\n"}', "no audio"),
])
def test_malformed_offers_name_the_problem(body, reason):
    with pytest.raises(BadOffer) as caught:
        offer_from_json(body, max_bytes=65536)
    assert reason in str(caught.value)


def test_oversized_offer_is_refused_before_parsing():
    with pytest.raises(BadOffer, match="larger than"):
        offer_from_json(b"x" * 70000, max_bytes=65536)


def test_audio_section_needs_ice_and_dtls():
    sdp = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
           "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\na=sendrecv\r\n")
    with pytest.raises(BadOffer, match="ICE credentials"):
        check_sdp(sdp)
    with pytest.raises(BadOffer, match="DTLS fingerprint"):
        check_sdp(sdp + "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n")


def test_settings_validate_addresses_and_ice_servers():
    settings = WebRTCSettings(host_addresses=["127.0.0.1", "::1"],
                              ice_servers=[{"urls": "turn:turn.example.org", "username": "u", "credential": "s3cret"}])
    assert settings.ice_servers[0].browser() == {"urls": ["turn:turn.example.org"], "username": "u", "credential": "s3cret"}
    assert "s3cret" not in repr(settings)
    with pytest.raises(ValidationError, match="not an IP address"):
        WebRTCSettings(host_addresses=["localhost"])
    with pytest.raises(ValidationError, match="stun:"):
        WebRTCSettings(ice_servers=[{"urls": "http://example.org"}])
    with pytest.raises(ValidationError):
        WebRTCSettings(max_peer=3)


def test_pinned_host_addresses_apply_only_inside_the_block():
    outside = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
    with pinned_host_addresses(["127.0.0.1", "::1"]):
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1", "::1"]
    assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == outside
    assert "127.0.0.1" not in outside
