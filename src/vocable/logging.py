"""structlog set-up: console or JSON lines, session and turn ids bound by the engine, secrets scrubbed.

Every configured secret value is registered with ``SecretScrubber``; any log field containing one is
redacted before it is written, so a provider that logs a URL or an error body cannot leak a key.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from vocable.redaction import REDACTED, redact_url, url_secrets

__all__ = ["REDACTED", "SecretScrubber", "configure_logging", "scrubber"]


class SecretScrubber:
    """A structlog processor that replaces known secret values in every string field."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()

    def add(self, value: str | None) -> None:
        if value and len(value) >= 4:
            self.secrets.add(value)

    def add_url(self, url: str) -> None:
        """A configured URL's password and secret parameters become known secrets too."""
        for secret in url_secrets(url):
            self.add(secret)

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return redact_url(value)
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.scrub(v) for v in value)
        return value

    def __call__(self, logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        return {k: self.scrub(v) for k, v in event_dict.items()}


scrubber = SecretScrubber()


def configure_logging(level: str = "info", fmt: str = "console", stream: Any = None, *, worker: str | None = None) -> None:
    """Configure structlog and the stdlib root logger (uvicorn's logs go through it too).

    ``worker``: with ``vocable serve --workers N``, every line names the worker process it came from.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: Any = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *([_add_field("worker", worker)] if worker is not None else []),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            scrubber,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=numeric, stream=stream or sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def _add_field(key: str, value: str) -> Any:
    def add(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        event_dict.setdefault(key, value)
        return event_dict
    return add
