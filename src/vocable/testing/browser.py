"""Headless Chromium for tests of the dashboard: Debian's /usr/bin/chromium, never a downloaded browser."""

from __future__ import annotations

import importlib.util
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"


def chromium_args(fake_mic_wav: Path | str, *, webrtc: bool = False) -> list[str]:
    """Flags that work on a closed network, with ``fake_mic_wav`` (mono 16-bit PCM) as the microphone."""
    args = [
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={fake_mic_wav}%noloop",
        "--autoplay-policy=no-user-gesture-required",
    ]
    if webrtc:  # on loopback: offer 127.0.0.1, and no mDNS names (aioice cannot resolve them)
        args += ["--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns"]
    return args


def browser_missing() -> str | None:
    """Why a browser test cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright; never `playwright install`)"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing: apt-get install chromium"
    return None
