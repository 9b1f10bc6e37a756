"""The second validation step: every ``provider:`` found among the loaded plugins, its settings validated.

The result, ``ResolvedConfig``, is what the engine runs on, and ``redacted`` is what ``GET /config`` shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from vocable.config.loader import ConfigError, format_path, pydantic_errors
from vocable.config.model import ProviderRef, VocableConfig
from vocable.providers.tools import ToolSpec
from vocable.plugins.manager import PluginHost
from vocable.providers.errors import ProviderUnavailable
from vocable.redaction import REDACTED, is_secret_key, redact_url



@dataclass(frozen=True, slots=True)
class ProviderChoice:
    """One provider selected by the config: its class, validated settings and where it was written."""

    kind: str
    cls: type
    settings: BaseModel
    ref: ProviderRef
    path: str

    @property
    def name(self) -> str:
        return self.ref.provider


@dataclass(slots=True)
class ResolvedConfig:
    config: VocableConfig
    chains: dict[str, list[ProviderChoice]] = field(default_factory=dict)
    metrics: list[ProviderChoice] = field(default_factory=list)
    transports: list[tuple[type, BaseModel]] = field(default_factory=list)
    tools: dict[str, ToolSpec] = field(default_factory=dict)  # the plugin tools ``agent.tools`` enables

    def chain(self, kind: str) -> list[ProviderChoice]:
        return self.chains[kind]


def _choose(host: PluginHost, kind: str, ref: ProviderRef, loc: tuple[Any, ...], errors: list[tuple[str, str]]) -> ProviderChoice | None:
    path = format_path(loc)
    registration = host.provider(kind, ref.provider)
    if registration is None:
        errors.append((format_path(loc + ("provider",)), host.unknown_message(kind, ref.provider)))
        return None
    cls = registration.cls
    try:
        settings = cls.Settings.model_validate(ref.options)
    except ValidationError as exc:
        errors.extend(pydantic_errors(exc, loc))
        return None
    try:
        cls.check_installed()
    except ProviderUnavailable as exc:
        errors.append((path, str(exc)))
        return None
    return ProviderChoice(kind, cls, settings, ref, path)


def resolve(config: VocableConfig, host: PluginHost) -> ResolvedConfig:
    """Validate every provider's and transport's settings; raise one ConfigError listing all problems."""
    errors: list[tuple[str, str]] = []
    resolved = ResolvedConfig(config)
    for kind in ("vad", "turn", "interruption", "stt", "llm", "tts"):
        refs: list[ProviderRef] = getattr(config.pipeline, kind)
        single = len(refs) == 1
        chain = []
        for i, ref in enumerate(refs):
            loc: tuple[Any, ...] = ("pipeline", kind) if single else ("pipeline", kind, i)
            choice = _choose(host, kind, ref, loc, errors)
            if choice is not None:
                chain.append(choice)
        resolved.chains[kind] = chain
    for i, ref in enumerate(config.metrics):
        choice = _choose(host, "metrics", ref, ("metrics", i), errors)
        if choice is not None:
            resolved.metrics.append(choice)
    for name, options in config.transports.items():
        registration = host.transports.get(name)
        if registration is None:
            errors.append((f"transports.{name}", host.unknown_message("transport", name)))
            continue
        try:
            settings = registration.cls.Settings.model_validate(options or {})
        except ValidationError as exc:
            errors.extend(pydantic_errors(exc, ("transports", name)))
            continue
        resolved.transports.append((registration.cls, settings))
    for i, name in enumerate(config.agent.tools):
        spec = host.tools.get(name)
        if spec is None:
            known = ", ".join(sorted(host.tools)) or "none"
            errors.append((f"agent.tools[{i}]", f"unknown tool {name!r}; plugins registered: {known}"))
        else:
            resolved.tools[name] = spec
    if errors:
        raise ConfigError(errors)
    return resolved


def _redact(value: Any, key: str = "") -> Any:
    if isinstance(value, SecretStr):
        return REDACTED if value.get_secret_value() else ""
    if isinstance(value, BaseModel):
        return {k: _redact(getattr(value, k), k) for k in type(value).model_fields}
    if isinstance(value, dict):
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(v, key) for v in value]
    if isinstance(value, str) and value and is_secret_key(key):
        return REDACTED
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def redacted(resolved: ResolvedConfig) -> dict[str, Any]:
    """The effective config as JSON-able data with every secret replaced (for ``GET /config``)."""
    config = resolved.config
    out: dict[str, Any] = _redact(config.model_dump(exclude={"pipeline", "metrics", "transports"}))
    pipeline = _redact(config.pipeline.model_dump(exclude={"vad", "turn", "interruption", "stt", "llm", "tts"}))
    for kind, chain in resolved.chains.items():
        pipeline[kind] = [
            {"provider": c.name, "timeout_s": c.ref.timeout_s, "retries": c.ref.retries,
             "retry_delay_s": c.ref.retry_delay_s, "breaker": c.ref.breaker.model_dump(), **_redact(c.settings)}
            for c in chain
        ]
    out["pipeline"] = pipeline
    out["metrics"] = [{"provider": c.name, **_redact(c.settings)} for c in resolved.metrics]
    out["transports"] = {cls.name: _redact(settings) for cls, settings in resolved.transports}
    return out
