"""Headless Chromium for tests of the dashboard: Debian's /usr/bin/chromium, never a downloaded browser."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

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


# ------------------------------------------------------------------------------ a person who pauses (issue 24)

# One thought read in six short phrases with natural pauses between them. Each pause comes where the sentence
# goes on ("I want to plan a trip with" / "my family next weekend because" / ...), as a person pauses
# mid-thought: a turn detector may still end a turn there (the engine then carries its words on), but a reply
# has no business being spoken in it. Each phrase has a key word that Whisper tiny.en hears in espeak-ng's
# voice even alone (when a turn ends at a pause, the next phrase is decoded without the earlier ones), through
# the browser's audio processing (checked on what the server received); each key word is said once, so each
# must show exactly once across the page's user bubbles.
PAUSED_THOUGHT: tuple[tuple[str, str], ...] = (
    ("I want to plan a trip with", "trip"),
    ("my family next weekend because", "family"),
    ("the kids want to go fishing and", "fish"),  # a stem: Whisper may hear "fish again"
    ("we could bring the guitar or", "guitar"),  # "...guitar and" Whisper hears as "...guitar around."
    ("we could go outside and", "outside"),
    ("what should we pack", "pack"),
)
PAUSES_MS = (600, 800, 500, 900, 700)  # between the phrases: 500-900 ms, as a person pauses mid-thought


def paused_thought_wav(path: Path, *, lead_ms: int, tail_ms: int = 4000) -> int:
    """The fake microphone's WAV (mono PCM16 at 16 kHz): ``lead_ms`` of silence, the phrases with their pauses,
    then ``tail_ms`` of silence. Returns the clip's length in milliseconds."""
    from vocable.testing.speech import espeak_pcm, silence, write_wav

    rate = 16000
    pcm = silence(lead_ms, rate)
    for index, (phrase, _) in enumerate(PAUSED_THOUGHT):
        pcm += espeak_pcm(phrase, sample_rate=rate)
        pcm += silence(PAUSES_MS[index] if index < len(PAUSED_THOUGHT) - 1 else tail_ms, rate)
    write_wav(str(path), pcm, rate)
    return len(pcm) * 1000 // (2 * rate)


# An init script: every JSON event the page receives (the dashboard's /ws/audio, or the WebRTC client module's
# signalling socket), with the page's clock and the reply audio played so far (window.vocableStats.playedMs).
RECORD_EVENTS = """(() => {
  const Original = window.WebSocket;
  window.__events = [];
  window.WebSocket = function (...args) {
    const socket = new Original(...args);
    socket.addEventListener("message", (e) => {
      if (typeof e.data !== "string") return;
      const event = JSON.parse(e.data);
      if (event.type === "candidate" || event.type === "answer") return;
      window.__events.push({ at: performance.now(), playedMs: (window.vocableStats || {}).playedMs || 0, event });
    });
    return socket;
  };
  window.WebSocket.prototype = Original.prototype;
  Object.assign(window.WebSocket, Original);
})();"""

# True once the clip is over and the answer to the last user turn is complete: its reply streamed to the end,
# its metrics came, and the state is back to listening.
THOUGHT_ANSWERED = """(clipMs) => {
  const stats = window.vocableStats;
  if (!stats || stats.micOpenedAt == null || performance.now() - stats.micOpenedAt < clipMs) return false;
  const users = document.querySelectorAll("#log .msg.user");
  const last = users[users.length - 1];
  if (!last || last.classList.contains("interim") || stats.state !== "listening") return false;
  const turn = last.dataset.key.slice("user:".length);
  const agent = document.querySelector(`[data-key="${CSS.escape("agent:" + turn)}"]`);
  if (!agent || agent.classList.contains("streaming")) return false;
  return window.__events.some((r) => r.event.type === "metrics" && r.event.turn_id === turn);
}"""

READ_PAGE = """() => ({
  users: [...document.querySelectorAll("#log .msg.user")].map((e) => ({ key: e.dataset.key, text: e.textContent,
                                                                       interim: e.classList.contains("interim") })),
  agents: [...document.querySelectorAll("#log .msg.agent")].map((e) => ({ key: e.dataset.key,
    text: [...e.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE).map((n) => n.textContent).join("") })),
  state: document.querySelector("#state").dataset.state,
  stateText: document.querySelector("#state").textContent,
  chartTurns: Number(document.querySelector("#latency-chart").dataset.turns),
  played: document.querySelector("#fact-played").textContent,
  hint: document.querySelector("#mic-hint").textContent,
  stats: window.vocableStats,
  events: window.__events,
})"""


def paused_thought_problems(page: dict[str, Any]) -> list[str]:
    """What is wrong with the page (``READ_PAGE``) after the person read ``PAUSED_THOUGHT``: the transcript
    starts with the first word, each phrase's key word shows exactly once across the user bubbles, no agent
    bubble is empty, a reply to the turn that holds the whole utterance was spoken, the state is back at
    listening, the chart counts answered turns only, and the page reported no error."""
    problems: list[str] = []
    users, agents = page["users"], page["agents"]
    if users and not starts_with_first_words(users[0]["text"]):
        problems.append(f"the first word was lost: {users[0]['text']!r}")
    said = " ".join(u["text"] for u in users).lower()
    words = re.findall(r"[a-z']+", said)
    for phrase, key in PAUSED_THOUGHT:  # a key word is a stem: what Whisper makes of its ending does not matter
        if (times := sum(w.startswith(key) for w in words)) != 1:
            problems.append(f"{key!r} (from {phrase!r}) shows {times} times across the user bubbles")
    problems += [f"an empty agent bubble {a['key']}" for a in agents if not a["text"].strip()]
    last = users[-1] if users else None
    if last is None or last["interim"]:
        problems.append("no final user bubble")
    else:
        turn = last["key"].removeprefix("user:")
        whole = re.findall(r"[a-z']+", last["text"].lower())
        missing = [key for _, key in PAUSED_THOUGHT if not any(w.startswith(key) for w in whole)]
        if missing:
            problems.append(f"the last user turn does not hold the whole utterance (no {missing}): {last['text']!r}")
        answer = next((a for a in agents if a["key"] == f"agent:{turn}"), None)
        if answer is None:
            problems.append("no reply to the last user turn")
        replies = [r for r in page["events"] if r["event"]["type"] == "reply" and r["event"]["turn_id"] == turn]
        played = page["stats"]["playedMs"] - (replies[0]["playedMs"] if replies else 0)
        if played < 500:
            problems.append(f"the reply to the whole utterance was not spoken: {played} ms of it played")
    if page["state"] != "listening" or page["stateText"].strip().lower() != "listening":
        problems.append(f"the state ends at {page['stateText']!r}")
    if page["chartTurns"] != len(agents):
        problems.append(f"the chart counts {page['chartTurns']} turns for {len(agents)} answers")
    problems += [f"the page reported {error}" for error in page["stats"]["errors"]]
    return problems


def describe_page(page: dict[str, Any]) -> str:
    """The conversation on the page and the events behind it, for a failure message."""
    lines = [f"user {u['key']}{' (interim)' if u['interim'] else ''}: {u['text']}" for u in page["users"]]
    lines += [f"agent {a['key']}: {a['text'][:160]}" for a in page["agents"]]
    lines.append(f"state {page['stateText']}, chart {page['chartTurns']} turns, {page['played']}, "
                 f"hint {page['hint']!r}")
    for record in page["events"]:
        event = record["event"]
        if event["type"] != "reply":
            lines.append(f"  {record['at']:8.0f} ms  played {record['playedMs']:6.0f} ms  {json.dumps(event)[:220]}")
    return "\n".join(lines)


def offline_stack_missing() -> str | None:
    """Why the offline default (Whisper, SmolLM2, Piper) cannot run here, or None."""
    missing = [m for m in ("faster_whisper", "llama_cpp", "piper") if importlib.util.find_spec(m) is None]
    return f"the offline default needs {', '.join(missing)} (pip install 'vocable[local]')" if missing else None


SLOW_MACHINE_TIMEOUT_S = 120.0


def offline_default_config(transports: dict[str, Any] | None = None) -> dict[str, Any]:
    """The offline default (``vocable serve`` with no -c) as a dict, with ``transports`` if given, and with the
    STT, LLM and TTS time limits wide enough for a loaded machine: on two busy cores Whisper can take longer
    than the default 10 s for a final transcript, and the test is about the conversation, not that limit."""
    from importlib import resources

    import yaml

    config: dict[str, Any] = yaml.safe_load(
        resources.files("vocable.config").joinpath("default.yaml").read_text(encoding="utf-8"))
    for kind in ("stt", "llm", "tts"):
        chain = config["pipeline"][kind]
        for ref in chain if isinstance(chain, list) else [chain]:
            ref["timeout_s"] = SLOW_MACHINE_TIMEOUT_S
    if transports is not None:
        config["transports"] = transports
    return config


def starts_with_first_words(text: str, count: int = 2) -> bool:
    """Whether ``text`` begins with the first ``count`` words of the thought's first phrase (case and
    punctuation aside): the first word was not lost."""
    said = re.findall(r"[a-z']+", text.lower())
    return said[:count] == PAUSED_THOUGHT[0][0].lower().split()[:count]


ANSWER_TIMEOUT_MS = 480_000  # on busy shared cores Whisper and SmolLM2 are slow, and a long reply takes its time


def paused_thought_missing() -> str | None:
    """Why the paused-thought browser tests cannot run here, or None."""
    from vocable.testing.speech import espeak_available

    if not espeak_available():
        return "espeak-ng is missing (apt-get install espeak-ng)"
    return browser_missing() or offline_stack_missing()


async def read_answered_page(page: Any, clip_ms: int, timeout_ms: int = ANSWER_TIMEOUT_MS) -> dict[str, Any]:
    """Wait until the clip is over and the thought answered (``THOUGHT_ANSWERED``); the page as ``READ_PAGE``
    reads it. AssertionError with the page's conversation and events if that never happens."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    try:
        await page.wait_for_function(THOUGHT_ANSWERED, arg=clip_ms, timeout=timeout_ms, polling=250)
    except PlaywrightTimeout:
        raise AssertionError("the thought was never answered:\n" + describe_page(await page.evaluate(READ_PAGE))) \
            from None
    content: dict[str, Any] = await page.evaluate(READ_PAGE)
    return content
