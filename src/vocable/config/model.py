"""The shape of a vocable config file.

Validation happens in two steps. This module checks the structure (sections, types, ``provider:`` present);
then, once plugins are loaded, ``vocable.config.resolve`` validates every provider's own keys against that
provider's ``Settings`` model. So a typo anywhere is an error that names its path, e.g.
``pipeline.llm[0].temperature``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BreakerConfig(BaseModel):
    """A provider's circuit breaker in its chain (``breaker:`` beside ``provider:``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failures: int = Field(default=3, ge=0, le=100, description="failed attempts in a row that open it; 0: never")
    cooldown_s: float = Field(default=30.0, gt=0, le=3600, description="how long an open breaker skips the "
                                                                      "provider before one probe request")


class ProviderRef(BaseModel):
    """``{provider: name, ...settings}``: the settings stay raw until the provider's model validates them.

    ``timeout_s``, ``retries``, ``retry_delay_s`` and ``breaker`` are the engine's, for any provider.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    provider: str = Field(min_length=1)
    timeout_s: float | None = Field(default=None, gt=0, description="time allowed before the first output")
    retries: int = Field(default=0, ge=0, le=5, description="retries of a retryable error before falling back")
    retry_delay_s: float = Field(default=0.25, ge=0, le=30, description="the first retry's backoff; doubles on "
                                 "each retry, with jitter, at most 2 s (longer if this is longer)")
    breaker: BreakerConfig = Field(default_factory=BreakerConfig, description="skip the provider after repeated "
                                   "failures, then probe it again")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.__pydantic_extra__ or {})


def _as_chain(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, (dict, ProviderRef)):
        return [value]
    if isinstance(value, str):
        return [{"provider": value}]
    return value


class AuthConfig(Section):
    """Set to require a token for every session (see docs/security.md)."""

    api_key: SecretStr = Field(description="the key your backend sends to POST /session to get tokens")
    token_ttl_s: int = Field(default=300, ge=10, le=86400)
    allow_dashboard: bool = Field(default=False, description="the built-in dashboard may get tokens without the key")

    @field_validator("api_key")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("the API key must be at least 16 characters")
        return value


class ServerConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64, description="server processes (vocable serve); one core each")
    max_sessions: int = Field(default=100, ge=1, description="per worker process")
    log_level: str = "info"
    log_format: str = Field(default="console", pattern="^(console|json)$")
    auth: AuthConfig | None = None
    allowed_origins: list[str] = Field(default_factory=list, description="browser origins allowed; empty: any")
    rate_limit_per_minute: int = Field(default=120, ge=0, description="new sessions per client address; 0: off")
    resume_grace_s: float = Field(default=30.0, ge=0, description="a dropped session may resume this long")
    idle_timeout_s: float | None = Field(default=300.0, gt=0, description="end a session with no user speech or text")
    max_session_s: float | None = Field(default=3600.0, gt=0, description="end any session after this long")
    max_turns_per_minute: int = Field(
        default=30, ge=0, description="typed turns one session may start a minute; more get a rate_limited error. 0: off")
    metrics_token: SecretStr | None = Field(
        default=None, description="with auth on, a bearer token that reads only GET /metrics (for Prometheus)")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses (or CIDR networks) whose X-Forwarded-For / X-Forwarded-Proto are believed; empty: none")
    header_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="a connection that has not sent a whole request head by then is closed")
    limit_concurrency: int | None = Field(
        default=None, ge=1, description="connections and tasks at once before new HTTP requests get 503; null: "
                                        "max_sessions x 2 + 100")
    drain_timeout_s: float = Field(
        default=30.0, ge=0, le=3600, description="on SIGTERM (vocable serve): how long live sessions get to finish "
                                                 "their reply before they are told to reconnect elsewhere")
    max_loop_lag_ms: float = Field(
        default=0.0, ge=0, description="event-loop lag (90th percentile of the last 2 s) past which new sessions are "
                                       "refused at once (HTTP 503 with Retry-After) and /health/ready answers 503; "
                                       "0: no load shedding (behind a load balancer, set it: 50 is a good start)")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR network (e.g. 10.0.0.0/8)") from None
        return value


class MemoryConfig(Section):
    max_turns: int = Field(default=20, ge=1, description="user+assistant pairs kept in the context")
    max_chars: int = Field(default=12000, ge=200, description="rough token bound (4 chars a token)")


class AgentConfig(Section):
    system_prompt: str = "You are a concise, friendly voice assistant. Answer in one or two short sentences."
    greeting: str | None = None
    memory: MemoryConfig = MemoryConfig()
    tools: list[str] = Field(default_factory=list, description="plugin tools the LLM may call, by name")
    filler_after_ms: int = Field(
        default=1200, ge=0, description="a tool call running this long gets a filler phrase spoken; 0: never")
    fillers: list[str] = Field(
        default_factory=lambda: ["One moment.", "Let me check that."],
        description="filler phrases, used in turn, spoken without an LLM round-trip")


class TurnTakingConfig(Section):
    """How speech is detected and when a barge-in interrupts the agent."""

    vad_threshold: float = Field(default=0.5, gt=0, lt=1)
    min_speech_ms: int = Field(default=60, ge=0, description="speech needed before it counts as the user talking")
    pre_roll_ms: int = Field(default=300, ge=0, description="audio kept from before speech starts")
    barge_in: bool = True
    barge_in_min_ms: int = Field(default=120, ge=0, description="speech needed to interrupt the agent")
    false_interruption_timeout_s: float = Field(
        default=1.5, ge=0, le=30,
        description="a barge-in pauses the reply; with no words within this long after the voice stops, the "
                    "reply resumes where it stopped. 0: a barge-in cancels the reply at once")
    min_words: int = Field(default=1, ge=1, le=20, description="words the user must say to commit a barge-in")
    continued_within_ms: int = Field(
        default=500, ge=0, le=5000,
        description="a voice that began this soon after the reply's first audio was the person going on, not "
                    "answering: the reply gives way (interrupted, user_continued) and their words join. 0: never")
    speculative_ms: int = Field(
        default=0, ge=0,
        description="after this much pause, transcribe and start the reply early; it is held until the end "
                    "of turn and dropped if the user goes on. 0: off")


class OutputConfig(Section):
    sample_rate: int | None = Field(default=None, description="reply audio rate; default: the TTS's own rate")
    lead_ms: int = Field(default=120, ge=0, le=2000, description="how far audio is sent ahead of real time")
    frame_ms: int = Field(default=20, ge=5, le=200)


class PipelineConfig(Section):
    input_sample_rate: int = Field(default=16000, description="the client's rate when it declares none")
    sample_rate: int = Field(default=16000, description="the rate VAD and STT run at")
    vad: list[ProviderRef] = Field(default_factory=lambda: [ProviderRef(provider="energy")])
    turn: list[ProviderRef] = Field(default_factory=lambda: [ProviderRef(provider="silence")])
    interruption: list[ProviderRef] = Field(
        default_factory=list, description="what words said over a reply mean (e.g. backchannel); none: the word rule")
    stt: list[ProviderRef]
    llm: list[ProviderRef]
    tts: list[ProviderRef]
    turn_taking: TurnTakingConfig = TurnTakingConfig()
    output: OutputConfig = OutputConfig()
    queue_frames: int = Field(default=200, ge=8, description="bound of every audio queue, in frames")

    @field_validator("vad", "turn", "interruption", "stt", "llm", "tts", mode="before")
    @classmethod
    def _chain(cls, value: Any) -> Any:
        return _as_chain(value)

    @model_validator(mode="after")
    def _non_empty(self) -> PipelineConfig:
        for slot in ("stt", "llm", "tts", "vad", "turn"):
            if not getattr(self, slot):
                raise ValueError(f"pipeline.{slot} needs at least one provider")
        return self


class StorageConfig(Section):
    url: str | None = Field(
        default=None,
        description="where finished turns are written: sqlite:///vocable.db or "
        "postgresql://user:password@host:5432/db (pip install 'vocable[postgres]'); null: nowhere",
    )
    record: Literal["audio", "events"] | None = Field(
        default=None, description="keep a recording of every session (docs/recording.md): audio = the inbound audio "
        "too, events = without it; null: none")
    recordings: str = Field(default="vocable-recordings", min_length=1,
                            description="the folder of the recordings, one file per session")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if not value:
            return None  # "" (e.g. an unset "${VOCABLE_DB_URL:-}") turns persistence off, as null does
        scheme, sep, _ = value.partition("://")
        if not sep or scheme.lower() not in ("sqlite", "postgresql", "postgres"):
            given = f"unsupported scheme {scheme!r}" if sep else "not a URL"  # the rest may hold a password
            raise ValueError(f"{given}: use sqlite:///path/to/file.db or postgresql://user:password@host:5432/dbname")
        return value


class StateConfig(Section):
    """Admission and conversation state shared by several vocable nodes (docs/deploy.md)."""

    url: str | None = Field(
        default=None,
        description="redis://[:password@]host:6379/0 (rediss:// for TLS, unix:///path.sock): tokens, rate limits, "
        "resumable conversations and heartbeats shared by every node (pip install 'vocable[redis]'); null: per "
        "server (one process, or the SQLite file of --workers)")
    prefix: str = Field(default="vocable:", pattern=r"^[A-Za-z0-9:_.-]{0,64}$",
                        description="prefix of every key, so several clusters can share one Redis")
    max_connections: int = Field(default=16, ge=1, le=1000, description="connection pool size per process")
    timeout_s: float = Field(default=1.0, gt=0, le=30, description="connect and per-command timeout; past it an "
                             "admission is refused (fail closed) with 503 state_unavailable")
    transcript_ttl_s: int = Field(default=3600, ge=60, description="how long finished turns stay in the shared "
                                  "state for GET /sessions/{id}/transcript on every node")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if not value:
            return None  # "" (an unset "${VOCABLE_REDIS_URL:-}") keeps the state per server, as null does
        scheme, sep, _ = value.partition("://")
        if not sep or scheme.lower() not in ("redis", "rediss", "unix"):
            given = f"unsupported scheme {scheme!r}" if sep else "not a URL"  # the rest may hold a password
            raise ValueError(f"{given}: use redis://host:6379/0, rediss://host:6380/0 or unix:///path/redis.sock")
        return value


class TracingConfig(Section):
    """OpenTelemetry traces of every conversation (``pip install 'vocable[otel]'``; docs/tracing.md). A key left
    unset falls back to the standard ``OTEL_*`` environment variables."""

    endpoint: str | None = Field(
        default=None, description="the OTLP/HTTP collector, e.g. http://collector:4318 (/v1/traces is added); null: "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT, else http://localhost:4318")
    service_name: str | None = Field(default=None, description="service.name; null: OTEL_SERVICE_NAME, else vocable")
    include_text: bool = Field(default=False, description="put the user's and the agent's words in span attributes")


class PluginsConfig(Section):
    autoload: bool = True
    modules: list[str] = Field(default_factory=list, description="plugin modules to load by import path")


class VocableConfig(Section):
    server: ServerConfig = ServerConfig()
    transports: dict[str, dict[str, Any] | None] = Field(default_factory=lambda: {"websocket": {}})
    pipeline: PipelineConfig
    agent: AgentConfig = AgentConfig()
    metrics: list[ProviderRef] = Field(default_factory=lambda: [ProviderRef(provider="log")])
    plugins: PluginsConfig = PluginsConfig()
    storage: StorageConfig = StorageConfig()
    tracing: TracingConfig | None = Field(default=None, description="OpenTelemetry traces; null: off")
    state: StateConfig = StateConfig()

    @field_validator("metrics", mode="before")
    @classmethod
    def _metrics_chain(cls, value: Any) -> Any:
        return _as_chain(value)
