"""Settings shared by every hosted-vendor provider: key, endpoint and the vendor client's timeout.

Kept in one base model so that Deepgram, Groq and ElevenLabs spell these keys the same way in YAML and
validate them the same way (a blank key is an error at ``vocable check``, not a 401 at the first turn).
Retries are not a provider setting: the engine retries every provider with one policy (``retries`` and
``retry_delay_s`` beside ``provider:``), so ``max_retries`` is refused with a message naming ``retries``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from vocable.providers.base import ProviderSettings
from vocable.redaction import url_secrets


class HostedSettings(ProviderSettings):
    """Keys common to hosted providers. Subclasses set ``base_url``'s default to the vendor's endpoint."""

    api_key: SecretStr = Field(description="The vendor API key; use ${ENV_VAR} in YAML, never a literal.")
    base_url: str = Field(description="The vendor endpoint; point it at a proxy or a stand-in for tests.")
    request_timeout_s: float = Field(
        10.0, gt=0, description="The vendor client's longest wait for a connection or the next piece of output "
                                "(the chain's own timeout_s, beside provider:, bounds the wait for the first output).")

    @model_validator(mode="before")
    @classmethod
    def _retries_moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_retries" in data:
            raise PydanticCustomError(
                "moved_key",
                "max_retries is no longer a provider setting: the engine retries every provider; "
                "write retries: N (0 to 5) beside provider: instead (and retry_delay_s for the first backoff)",
            )
        return data

    @field_validator("api_key")
    @classmethod
    def _key_not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("api_key is empty: set the environment variable the config refers to")
        return value

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://", "ws://", "wss://")):
            raise ValueError("base_url must start with http://, https://, ws:// or wss://")
        return value

    def secrets(self) -> tuple[str, ...]:
        """Values to scrub from any error text."""
        return (self.api_key.get_secret_value(), *url_secrets(self.base_url))
