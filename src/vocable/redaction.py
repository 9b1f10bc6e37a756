"""What counts as a secret in text that vocable shows or logs, in one place.

``GET /config``, the log scrubber and error messages all hide the same things: values of secret-named keys,
the password in a URL's userinfo (``postgresql://user:PASSWORD@host``) and secret query parameters
(``?token=``, ``?api_key=``). A URL may come from anywhere (a provider's ``base_url``, an environment
variable), so URL redaction works on any string, not only on values the config marked ``SecretStr``.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

REDACTED = "**********"
SECRET_WORDS = ("key", "token", "secret", "password", "credential", "authorization")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_URL_SECRET_PARAM = re.compile(r"([?&](?:password|passwd|pwd|secret|token|api_key|key)=)[^&#\s]*", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    return any(word in key.lower() for word in SECRET_WORDS)


def redact_url(text: str) -> str:
    """``text`` with every URL password and secret query parameter replaced (cheap when there is no URL)."""
    if "://" not in text:
        return text
    text = _URL_PASSWORD.sub(r"\1" + REDACTED + "@", text)
    return _URL_SECRET_PARAM.sub(r"\1" + REDACTED, text)


def url_secrets(url: str) -> list[str]:
    """The secret parts of ``url`` (its password, raw and decoded, and secret parameters' values), so the log
    scrubber can also hide them where they appear on their own, e.g. in a vendor's error text."""
    if "://" not in url:
        return []
    found: list[str] = []
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        found += [password, unquote(password)]
    found += [m.group(0).split("=", 1)[1] for m in _URL_SECRET_PARAM.finditer(url)]
    return [value for value in found if value]
