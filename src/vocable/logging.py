"""structlog set-up: console or JSON lines, session and turn ids bound by the engine, secrets scrubbed.

Every configured secret value is registered with ``SecretScrubber``; any log field containing one is
redacted before it is written, so a provider that logs a URL or an error body cannot leak a key.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

from vocable.redaction import REDACTED, SECRET_WORDS, redact_url, url_secrets

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
    for name in ("uvicorn.access", "uvicorn.error"):  # request lines, and the WebSocket ones
        logging.getLogger(name).addFilter(query_secret_filter)


def _add_field(key: str, value: str) -> Any:
    def add(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        event_dict.setdefault(key, value)
        return event_dict
    return add


_QUERY_SECRET = re.compile(rf"([?&][^=&\s\"]*(?:{'|'.join(SECRET_WORDS)})[^=&\s\"]*=)[^&#\s\"]*", re.IGNORECASE)


def redact_query(text: str) -> str:
    """``text`` with the value of every query parameter whose name holds a ``SECRET_WORDS`` word
    (``?token=``, ``&api_key=``) hidden; unlike ``redact_url`` it needs no scheme: log lines carry bare paths."""
    return _QUERY_SECRET.sub(r"\1" + REDACTED, text) if "=" in text else text


class QuerySecretFilter(logging.Filter):
    """Hides secret query parameters in uvicorn's log records.

    uvicorn logs each request's path with its query string, and a session token travels in the query
    (``/ws/audio?token=...``: a browser cannot set headers on a WebSocket), so its access log would hand
    every token to whoever reads the logs. The filter sits on the loggers themselves, so it holds whatever
    handlers uvicorn's own logging config (applied after ``configure_logging``) puts on them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_query(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(a) if isinstance(a, str) else a for a in record.args)
        return True


query_secret_filter = QuerySecretFilter()
