"""``GET /webrtc/stats``: one flat summary per peer, from aiortc's ``getStats()`` report.

aiortc reports jitter in RTP timestamp units; Opus runs a 48 kHz RTP clock, so we also give milliseconds.
Round-trip time comes from the client's RTCP receiver reports, so it stays null until the first arrives.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.stats import (
    RTCInboundRtpStreamStats,
    RTCOutboundRtpStreamStats,
    RTCRemoteInboundRtpStreamStats,
    RTCTransportStats,
)

OPUS_CLOCK_RATE = 48000
STATS_TIMEOUT_S = 2.0


def connection_states(pc: RTCPeerConnection) -> dict[str, str]:
    return {
        "connection_state": pc.connectionState,
        "ice_connection_state": pc.iceConnectionState,
        "ice_gathering_state": pc.iceGatheringState,
        "signaling_state": pc.signalingState,
    }


async def peer_stats(pc: RTCPeerConnection) -> dict[str, Any]:
    """States, packets and bytes each way, jitter, packet loss and round-trip time of one connection.

    Inbound bytes are the transport's (aiortc counts no bytes per received stream): media plus RTCP,
    DTLS and data-channel traffic.
    """
    out: dict[str, Any] = {
        **connection_states(pc),
        "inbound": {"packets": 0, "bytes": 0, "packets_lost": 0, "jitter_ms": None},
        "outbound": {"packets": 0, "bytes": 0},
        "transport": {"packets_sent": 0, "packets_received": 0, "bytes_sent": 0, "bytes_received": 0},
        "round_trip_time_ms": None,
    }
    if pc.connectionState == "closed":
        return out
    try:
        async with asyncio.timeout(STATS_TIMEOUT_S):
            report = await pc.getStats()
    except Exception as exc:  # noqa: BLE001 - a connection closing under us: the states above still say what happened
        out["error"] = f"{type(exc).__name__}: {exc}"
        return out
    inbound, outbound, transport = out["inbound"], out["outbound"], out["transport"]
    transports_seen: set[str] = set()
    for stats in report.values():
        if isinstance(stats, RTCInboundRtpStreamStats):
            inbound["packets"] += stats.packetsReceived
            inbound["packets_lost"] += stats.packetsLost
            inbound["jitter_ms"] = round(stats.jitter * 1000 / OPUS_CLOCK_RATE, 2)
        elif isinstance(stats, RTCOutboundRtpStreamStats):
            outbound["packets"] += stats.packetsSent
            outbound["bytes"] += stats.bytesSent
        elif isinstance(stats, RTCRemoteInboundRtpStreamStats):
            if stats.roundTripTime is not None:
                out["round_trip_time_ms"] = round(stats.roundTripTime * 1000, 1)
            out["outbound"]["remote_jitter_ms"] = round(stats.jitter * 1000 / OPUS_CLOCK_RATE, 2)
            out["outbound"]["remote_packets_lost"] = stats.packetsLost
        elif isinstance(stats, RTCTransportStats) and stats.id not in transports_seen:
            transports_seen.add(stats.id)
            transport["packets_sent"] += stats.packetsSent
            transport["packets_received"] += stats.packetsReceived
            transport["bytes_sent"] += stats.bytesSent
            transport["bytes_received"] += stats.bytesReceived
    inbound["bytes"] = transport["bytes_received"]  # aiortc counts bytes per transport, not per stream
    return out
