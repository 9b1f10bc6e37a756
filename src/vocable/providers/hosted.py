"""Settings shared by every hosted-vendor provider: key, endpoint, timeout and retry budget.

Kept in one base model so that Deepgram, Groq and ElevenLabs spell these keys the same way in YAML and
validate them the same way (a blank key is an error at ``vocable check``, not a 401 at the first turn).
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from vocable.providers.base import ProviderSettings
from vocable.providers.vendor_errors import RetryPolicy
from vocable.redaction import url_secrets


class HostedSettings(ProviderSettings):
    """Keys common to hosted providers. Subclasses set ``base_url``'s default to the vendor's endpoint."""

    api_key: SecretStr = Field(description="The vendor API key; use ${ENV_VAR} in YAML, never a literal.")
    base_url: str = Field(description="The vendor endpoint; point it at a proxy or a stand-in for tests.")
    request_timeout_s: float = Field(
        10.0, gt=0, description="The vendor client's longest wait for a connection or the next piece of output "
                                "(the chain's own timeout_s, beside provider:, bounds the wait for the first output).")
    max_retries: int = Field(2, ge=0, le=10, description="Retries of rate limits, 5xx and timeouts before giving up.")
    retry_delay_s: float = Field(0.25, ge=0, le=30, description="First backoff delay; doubles on each retry.")

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

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            retries=self.max_retries, base_delay_s=self.retry_delay_s, max_delay_s=max(4.0, self.retry_delay_s)
        )

    def secrets(self) -> tuple[str, ...]:
        """Values to scrub from any error text."""
        return (self.api_key.get_secret_value(), *url_secrets(self.base_url))
