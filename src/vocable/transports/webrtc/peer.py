"""One WebRTC peer: its RTCPeerConnection, its engine session and the tasks that join them.

A peer runs at most five tasks of its own, all in ``_tasks`` and all cancelled by ``_close``:

- ``rx``: reads the client's audio track, downmixes, feeds ``session.send_audio``;
- ``pump``: drains the session's event channel; reply audio goes to the outgoing ``PlaybackTrack`` (an
  ``interrupted`` event clears it first), everything else goes out as JSON on the signalling socket and the
  data channel, or waits in a bounded backlog until one of them is there;
- ``watch``: the disconnect timeout (never connected, no audio, or no signalling socket for too long);
- ``inbox``: client messages that arrived on the data channel (its callbacks are synchronous).

However the peer ends (the client's ``end``, ICE failure, a timeout, the session ending, server shutdown),
``request_close`` runs ``_close`` once, in its own task so that no worker ever cancels itself: tasks
cancelled and awaited, tracks stopped, the peer connection closed (its UDP sockets with it), the session
closed through the engine, the socket closed with a code that says why.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import structlog
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from starlette.websockets import WebSocket

from vocable.audio import resample_pcm
from vocable.engine.events import AudioOut, Closed, ErrorEvent, Interrupted, Paused, Resumed
from vocable.engine.session import Session, SessionClosed
from vocable.transports.protocol import (
    BadInput,
    EndMessage,
    InterruptMessage,
    TextMessage,
    load_message,
    parse_message,
)
from vocable.transports.webrtc.audio import PlaybackTrack, mono_pcm16
from vocable.transports.webrtc.hosts import pinned_host_addresses
from vocable.transports.webrtc.settings import WebRTCSettings
from vocable.transports.webrtc.signalling import (
    BadOffer,
    candidate_from_message,
    local_candidates,
)
from vocable.transports.webrtc.sinks import EventSinks

if TYPE_CHECKING:
    from vocable.engine.engine import Engine

log = structlog.get_logger("vocable.webrtc")

INBOX_MESSAGES = 32  # data-channel messages waiting to be handled; more are refused
CLOSE_CODES = {"client_end": 1000, "peer_closed": 1000, "closed": 1000, "server_shutdown": 1001}
RESUMABLE = {"ice_failed", "media_timeout", "disconnect_timeout", "signalling_closed"}
FAILURES = {"ice_failed", "connect_timeout", "media_timeout", "start_failed", "internal_error"}


class Peer:
    def __init__(
        self, engine: Engine, session: Session, settings: WebRTCSettings, *, on_closed: Callable[[Peer], None]
    ) -> None:
        self.engine = engine
        self.session = session
        self.id = session.id
        self.settings = settings
        self.log = log.bind(session_id=self.id)
        self.created_at = time.time()
        servers = [RTCIceServer(urls=s.urls, username=s.username,
                                credential=s.credential.get_secret_value() if s.credential else None)
                   for s in settings.ice_servers]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self.playback = PlaybackTrack(session.output_sample_rate, max_buffer_ms=settings.playout_buffer_ms,
                                      on_late=engine.node.media_late)
        self.close_reason: str | None = None
        self._on_closed = on_closed
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closer: asyncio.Task[None] | None = None
        self.sinks = EventSinks(self.log)
        self._inbox: asyncio.Queue[str] = asyncio.Queue(INBOX_MESSAGES)
        self._not_connected_since: float | None = self._loop.time()
        self._ever_connected = False
        self._audio_track: MediaStreamTrack | None = None
        self._last_audio_at: float | None = None
        self.frames_in = 0
        session.attach_playout(self)
        self.pc.on("connectionstatechange", self._on_connection_state)
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)

    def unplayed_bytes(self) -> int:
        """Reply audio the track still holds, at the session's output rate (the session's ``PlayoutSource``)."""
        track = self.playback
        return track.buffered_bytes * self.session.output_sample_rate // track.sample_rate

    @property
    def closing(self) -> bool:
        return self._closer is not None

    # ------------------------------------------------------------------------------------ negotiation

    async def answer(self, sdp: str) -> str:
        """Apply the client's offer and return our answer, with every host candidate already in it."""
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as exc:  # noqa: BLE001 - aiortc refuses what it cannot negotiate with assorted errors
            raise BadOffer(f"cannot use this offer: {type(exc).__name__}: {exc}"[:300]) from None
        try:
            audio = [t for t in self.pc.getTransceivers() if t.kind == "audio"]
            for extra in self.pc.getTransceivers():
                if extra is not audio[0]:
                    extra.direction = "inactive"  # one voice each way; nothing else may pile up unread
            self.pc.addTrack(self.playback)
            answer = await self.pc.createAnswer()
            with pinned_host_addresses(self.settings.host_addresses):
                await self.pc.setLocalDescription(answer)
        except Exception as exc:  # the offer parsed but cannot be answered (no common codec, ...)
            self.log.warning("webrtc_answer_failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
            raise BadOffer(f"cannot answer this offer: {type(exc).__name__}: {exc}"[:300]) from None
        return self.pc.localDescription.sdp

    def start(self) -> None:
        self._spawn(self._pump(), "pump")
        self._spawn(self._watch(), "watch")

    # ------------------------------------------------------------------------------------ client input

    async def handle_text(self, text: str) -> None:
        """One JSON message from the socket or the data channel: a candidate or a protocol message."""
        try:
            data = load_message(text)
            kind = data["type"]
            if kind == "candidate":
                try:
                    await self.pc.addIceCandidate(candidate_from_message(data))
                except ValueError as exc:  # aiortc's own checks (a section it does not know, ...)
                    raise BadInput("invalid_candidate", str(exc)[:200]) from None
            elif kind == "offer":
                raise BadInput("renegotiation_unsupported", "this session already has an answer; open a new one")
            else:
                await self._handle_protocol(data)
        except BadInput as exc:
            await self.report_error(exc.code, exc.message)
        except SessionClosed:
            pass

    async def _handle_protocol(self, data: dict[str, Any]) -> None:
        message = parse_message(data)
        if isinstance(message, TextMessage):
            if len(message.text) > self.settings.max_text_chars:
                raise BadInput("text_too_long", f"a typed turn is at most {self.settings.max_text_chars} characters")
            await self.session.send_text(message.text)
        elif isinstance(message, InterruptMessage):
            await self.session.interrupt("client")
        elif isinstance(message, EndMessage):
            await self.close("client_end")
        # ``start`` declares a PCM rate: over WebRTC the codec carries its own, so it is accepted and unused

    async def report_error(self, code: str, message: str) -> None:
        if not self.session.closed:
            await self.session.report_error(code, message)

    # ------------------------------------------------------------------------------------ signalling sinks

    async def attach(self, websocket: WebSocket) -> bool:
        """Make ``websocket`` this peer's signalling socket: our candidates, then ``ready``, then the backlog."""
        if self.closing:
            return False
        first = [*local_candidates(self.pc), {"type": "candidate", "candidate": None},
                 self.session.ready_event().to_wire(), {"type": "state", "state": self.session.state}]
        if not await self.sinks.attach(websocket, first, self._loop.time()):
            return False
        self.log.info("webrtc_socket_attached")
        return True

    def detach(self, websocket: WebSocket) -> None:
        if self.sinks.detach(websocket, self._loop.time()) and not self.closing:
            self.log.info("webrtc_socket_lost")

    async def send(self, message: dict[str, Any]) -> None:
        await self.sinks.send(message, self._loop.time())

    # ------------------------------------------------------------------------------------ aiortc callbacks

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        self.log.info("webrtc_connection_state", state=state)
        if state == "connected":
            self._not_connected_since = None
            self._ever_connected = True
            self._last_audio_at = self._loop.time()
        elif state == "failed":
            self.request_close("ice_failed")
        elif state == "closed":
            self.request_close("peer_closed")

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._audio_track is None:
            self._audio_track = track
            self._spawn(self._receive_audio(track), "rx")

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if self.sinks.channel is not None:
            return  # one event channel per peer; a second one gets nothing
        self.sinks.channel = channel
        channel.on("message", self._on_channel_message)
        self._spawn(self._serve_inbox(), "inbox")
        self._spawn(self._greet_channel(channel), "greet")

    def _on_channel_message(self, message: str | bytes) -> None:
        if not isinstance(message, str):
            return
        try:
            self._inbox.put_nowait(message)
        except asyncio.QueueFull:
            self.log.warning("webrtc_inbox_full")

    # ------------------------------------------------------------------------------------ tasks

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        if self.closing:
            coro.close()
            return
        task = asyncio.create_task(coro, name=f"{self.id}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._worker_done)

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        """A worker that dies of a bug must not leave a half-working peer: log it and close the peer."""
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        self.log.error("webrtc_worker_failed", task=task.get_name(), error=f"{type(error).__name__}: {error}",
                       exc_info=error)
        self.request_close("internal_error")

    async def _greet_channel(self, channel: RTCDataChannel) -> None:
        """A data channel opened after the session started still begins with ``ready``."""
        if channel.readyState != "open":
            opened = asyncio.Event()
            channel.once("open", opened.set)
            await opened.wait()
        self.sinks.send_channel(json.dumps(self.session.ready_event().to_wire()))
        self.sinks.send_channel(json.dumps({"type": "state", "state": self.session.state}))

    async def _serve_inbox(self) -> None:
        while True:
            await self.handle_text(await self._inbox.get())

    async def _receive_audio(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self._last_audio_at = self._loop.time()
            self.frames_in += 1
            pcm = mono_pcm16(frame)  # type: ignore[arg-type]
            try:
                if frame.sample_rate != self.session.input_sample_rate:  # type: ignore[union-attr]
                    self.session.set_input_sample_rate(frame.sample_rate)  # type: ignore[union-attr]
                await self.session.send_audio(pcm)
            except SessionClosed:
                return
            except ValueError as exc:  # a rate the session does not take
                await self.report_error("unsupported_audio", str(exc))
                return

    async def _pump(self) -> None:
        reason = "session_closed"
        rate = self.playback.sample_rate
        while (event := await self.session.events.get()) is not None:
            if isinstance(event, AudioOut):
                pcm = event.pcm if event.sample_rate == rate else resample_pcm(event.pcm, event.sample_rate, rate)
                await self.playback.push(pcm)
                continue
            if isinstance(event, Closed):
                reason = event.reason
                continue
            if isinstance(event, Interrupted):
                dropped = self.playback.clear()
                self.log.debug("webrtc_playback_cleared", turn_id=event.turn_id, dropped_bytes=dropped)
            elif isinstance(event, Paused):
                self.playback.pause()
            elif isinstance(event, Resumed):
                self.playback.resume()
            await self.send(event.to_wire())
        self.request_close(reason)

    async def _watch(self) -> None:
        timeout = self.settings.disconnect_timeout_s
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            reason = self._overdue(self._loop.time(), timeout)
            if reason is not None:
                self.log.info("webrtc_timeout", reason=reason, timeout_s=timeout)
                self.request_close(reason)
                return

    def _overdue(self, now: float, timeout: float) -> str | None:
        if self._not_connected_since is not None and now - self._not_connected_since > timeout:
            return "disconnect_timeout" if self._ever_connected else "connect_timeout"
        lost_at = self.sinks.socket_lost_at
        if lost_at is not None and now - lost_at > timeout:
            return "signalling_closed"
        if self._audio_track is not None and self._last_audio_at is not None and now - self._last_audio_at > timeout:
            return "media_timeout"
        return None

    # ------------------------------------------------------------------------------------ teardown

    def request_close(self, reason: str) -> asyncio.Task[None]:
        """Start closing (once); the first reason given is the one reported."""
        if self._closer is None:
            self._closer = asyncio.create_task(self._close(reason), name=f"{self.id}-close")
        return self._closer

    async def close(self, reason: str = "closed") -> None:
        """Close and wait for it; cancelling the waiter does not interrupt the teardown."""
        await asyncio.shield(self.request_close(reason))

    async def _close(self, reason: str) -> None:
        self.close_reason = reason
        workers = list(self._tasks)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self.playback.stop()
        if self._audio_track is not None:
            self._audio_track.stop()
        try:
            await self.pc.close()
        except Exception as exc:  # noqa: BLE001 - teardown goes on whatever aiortc raises
            self.log.warning("webrtc_close_failed", error=f"{type(exc).__name__}: {exc}")
        try:
            # the client vanished (network, not choice): its conversation may resume within the grace window
            await self.engine.close_session(self.session, reason, resumable=reason in RESUMABLE)
        finally:
            await self._close_socket(reason)
            self._on_closed(self)
            self.log.info("webrtc_peer_closed", reason=reason, frames_in=self.frames_in,
                          frames_out=self.playback.frames_sent, seconds=round(time.time() - self.created_at, 2))

    async def _close_socket(self, reason: str) -> None:
        failed = reason in FAILURES or reason.endswith("_timeout")
        last = ErrorEvent(reason, f"the WebRTC session ended: {reason.replace('_', ' ')}", True).to_wire()
        await self.sinks.close(CLOSE_CODES.get(reason, 1011 if failed else 1000), reason, last if failed else None)
