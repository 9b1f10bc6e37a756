"""The WebRTC transport's settings (``transports: {webrtc: {...}}`` in YAML).

``host_addresses`` exists because aioice gathers host candidates from the machine's interfaces and always
skips 127.0.0.1: on a loopback-only machine (tests, a sidecar) it would offer nothing. Operators use it
too, to pin the interface media may use. ``ice_servers`` go both to the server's own peer connections and,
through ``GET /client-config``, to the browser, which needs the same STUN/TURN servers to reach us.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from vocable.providers.base import ProviderSettings


class IceServer(BaseModel):
    """One STUN or TURN server, in the shape of the browser's ``RTCIceServer``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    urls: list[str] = Field(min_length=1, description="e.g. stun:stun.example.org:3478 or turn:turn.example.org")
    username: str | None = None
    credential: SecretStr | None = Field(default=None, description="TURN password; it is handed to browsers")

    @field_validator("urls", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("urls")
    @classmethod
    def _schemes(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise ValueError(f"{url!r}: an ICE server URL starts with stun:, stuns:, turn: or turns:")
        return urls

    def browser(self) -> dict[str, Any]:
        """The browser's RTCIceServer dictionary (credentials included: the browser must present them)."""
        out: dict[str, Any] = {"urls": list(self.urls)}
        if self.username is not None:
            out["username"] = self.username
        if self.credential is not None:
            out["credential"] = self.credential.get_secret_value()
        return out


class WebRTCSettings(ProviderSettings):
    host_addresses: list[str] = Field(
        default_factory=list,
        description="local IP addresses offered as ICE host candidates (127.0.0.1 allowed); "
                    "empty: every interface aioice finds, loopback excluded")
    ice_servers: list[IceServer] = Field(
        default_factory=list, description="STUN/TURN servers for the server and the browser; empty: none")
    max_peers: int = Field(default=20, ge=1, description="concurrent peer connections; more get 503 at once")
    disconnect_timeout_s: float = Field(
        default=10.0, gt=0,
        description="a peer not connected, receiving no audio, or without its signalling socket for this "
                    "long is closed")
    playout_buffer_ms: int = Field(
        default=2000, ge=100, le=30000,
        description="reply audio held for the outgoing track before the session is made to wait")
    max_text_chars: int = Field(default=4000, ge=1, description="longest typed turn")
    max_sdp_bytes: int = Field(default=64 * 1024, ge=1024, description="larger offers are refused (400)")

    @field_validator("host_addresses")
    @classmethod
    def _ips(cls, addresses: list[str]) -> list[str]:
        for address in addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"{address!r} is not an IP address") from None
        return addresses
