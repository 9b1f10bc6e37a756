"""Signalling messages: offers, answers and trickled ICE candidates, checked at the edge.

Everything a client sends is validated here before aiortc sees it: aiortc's SDP parser reports mistakes
with assorted exceptions (and ``candidate_from_sdp`` with a bare ``assert``), and a client's mistake must be
a 400 or an ``error`` event naming it, never a 500.
"""

from __future__ import annotations

import json
from typing import Any

from aiortc import RTCIceCandidate, RTCPeerConnection
from aiortc.sdp import SessionDescription, candidate_from_sdp, candidate_to_sdp

from vocable.transports.protocol import BadInput


class BadOffer(Exception):
    """An offer we cannot answer: HTTP 400 (or an ``error`` event and close 1008 on the socket)."""


def offer_from_json(body: bytes | str, *, max_bytes: int) -> str:
    """The SDP of a ``{"sdp": ..., "type": "offer"}`` body."""
    if len(body) > max_bytes:
        raise BadOffer(f"the offer is larger than {max_bytes} bytes")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise BadOffer("the body must be a JSON object {\"sdp\": ..., \"type\": \"offer\"}") from None
    return offer_from_message(data, max_bytes=max_bytes)


def offer_from_message(data: Any, *, max_bytes: int) -> str:
    if not isinstance(data, dict):
        raise BadOffer("the offer must be a JSON object {\"sdp\": ..., \"type\": \"offer\"}")
    if data.get("type") != "offer":
        raise BadOffer(f"expected type \"offer\", got {str(data.get('type'))[:40]!r}")
    sdp = data.get("sdp")
    if not isinstance(sdp, str) or not sdp.strip():
        raise BadOffer("\"sdp\" must be a non-empty string")
    if len(sdp) > max_bytes:
        raise BadOffer(f"the SDP is larger than {max_bytes} bytes")
    check_sdp(sdp)
    return sdp


def check_sdp(sdp: str) -> None:
    """Parse the offer as aiortc will, and insist on the parts a voice session needs."""
    if not sdp.lstrip().startswith("v=0"):
        raise BadOffer("malformed SDP: it must start with v=0")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # noqa: BLE001 - aiortc's parser raises ValueError, KeyError, IndexError, ...
        raise BadOffer(f"malformed SDP: {type(exc).__name__}: {exc}"[:300]) from None
    audio = [m for m in parsed.media if m.kind == "audio"]
    if not audio:
        raise BadOffer("the offer has no audio section (m=audio)")
    for media in parsed.media:
        if media.kind not in ("audio", "video", "application"):
            raise BadOffer(f"unsupported media section m={media.kind}")
        ice = media.ice
        if not (ice and ice.usernameFragment and ice.password):
            raise BadOffer(f"the m={media.kind} section has no ICE credentials (a=ice-ufrag, a=ice-pwd)")
        if media.dtls is None or not media.dtls.fingerprints:
            raise BadOffer(f"the m={media.kind} section has no DTLS fingerprint (a=fingerprint)")


def candidate_from_message(data: dict[str, Any]) -> RTCIceCandidate | None:
    """A trickled candidate in the browser's shape; None (or an empty string) ends the candidates."""
    value = data.get("candidate")
    if isinstance(value, dict):  # RTCIceCandidate.toJSON() nested as-is
        data = value
        value = data.get("candidate")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 1024:
        raise BadInput("invalid_candidate", "\"candidate\" must be an SDP candidate string or null")
    line = value.strip()
    for prefix in ("a=", "candidate:"):
        line = line.removeprefix(prefix)
    bits = line.split()
    if len(bits) < 8 or bits[6] != "typ" or not bits[1].isdigit() or not bits[3].isdigit() or not bits[5].isdigit():
        raise BadInput("invalid_candidate", f"not an ICE candidate: {value[:80]!r}")
    try:
        candidate = candidate_from_sdp(line)
    except (AssertionError, ValueError, IndexError):
        raise BadInput("invalid_candidate", f"not an ICE candidate: {value[:80]!r}") from None
    mid = data.get("sdpMid")
    index = data.get("sdpMLineIndex")
    candidate.sdpMid = mid if isinstance(mid, str) else None
    candidate.sdpMLineIndex = index if isinstance(index, int) and not isinstance(index, bool) else None
    if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
        candidate.sdpMid, candidate.sdpMLineIndex = None, 0  # bundled: the first section carries the transport
    return candidate


def local_candidates(pc: RTCPeerConnection) -> list[dict[str, Any]]:
    """The server's candidates, as trickle messages (aiortc gathers them all before answering)."""
    description = pc.localDescription
    if description is None:
        return []
    messages: list[dict[str, Any]] = []
    parsed = SessionDescription.parse(description.sdp)
    for index, media in enumerate(parsed.media):
        for candidate in media.ice_candidates:
            messages.append({
                "type": "candidate", "candidate": "candidate:" + candidate_to_sdp(candidate),
                "sdpMid": media.rtp.muxId or None, "sdpMLineIndex": index,
            })
    return messages
