"""Settings and the SDK client that the three ``openai`` providers share: endpoint, key, Azure, extras.

``base_url`` picks the server: OpenAI itself (the default), or any server that speaks its API (Ollama, vLLM,
LM Studio, llama.cpp's server, OpenRouter, a faster-whisper or Kokoro server...). ``api_key`` may be left
out for local servers, which accept any key, but not for OpenAI or Azure: there a blank key is an error at
``vocable check`` rather than a 401 at the first turn. ``api_version`` selects Azure OpenAI through the
SDK's ``AsyncAzureOpenAI``: ``base_url`` is then the resource endpoint, requests go to
``/openai/deployments/{deployment}/...?api-version=...`` and the key travels in the ``api-key`` header.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from vocable.providers.base import Requirement
from vocable.providers.hosted import HostedSettings
from vocable.redaction import url_secrets

OPENAI_URL = "https://api.openai.com/v1"
INSTALL = "pip install 'vocable[openai]'"
REQUIRES = (Requirement("openai", INSTALL),)
# Sent as the bearer token when no key is configured: local servers want some key, and the SDK must not
# fall back to OPENAI_API_KEY from the environment (that would send a real OpenAI key to another server).
NO_KEY = "no-key"


class OpenAISettings(HostedSettings):
    api_key: SecretStr | None = Field(  # type: ignore[assignment]
        None, description="The API key; use ${ENV_VAR} in YAML. Optional for local servers, required for "
                          "api.openai.com and Azure.")
    base_url: str = Field(OPENAI_URL, description="The server's API root, with its /v1 (Azure: the resource "
                                                  "endpoint, https://NAME.openai.azure.com).")
    model: str = Field(min_length=1, description="The model as the server names it (Azure: the model the "
                                                  "deployment serves).")
    api_version: str | None = Field(None, min_length=1, description="Azure OpenAI's API version, e.g. 2024-10-21; "
                                                                    "setting it selects Azure.")
    deployment: str | None = Field(None, min_length=1, description="Azure OpenAI: the deployment; default: model.")
    extra_headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="Headers added to every request (values are kept secret).")
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="Fields added to every request body, for servers with their own "
                                          "parameters (Ollama's options, vLLM's top_k...).")

    @field_validator("api_key")
    @classmethod
    def _key_not_blank(cls, value: SecretStr | None) -> SecretStr | None:  # type: ignore[override]
        """A blank key (``${VAR:-}``) means no key; whether that is allowed depends on the server."""
        if value is None or not value.get_secret_value().strip():
            return None
        return value

    @model_validator(mode="after")
    def _key_where_needed(self) -> OpenAISettings:
        if self.deployment is not None and self.api_version is None:
            raise _error("deployment", "azure_only", "deployment is an Azure setting: set api_version as well")
        if self.api_key is None and self.needs_key():
            where = "Azure OpenAI" if self.azure else urlsplit(self.base_url).hostname
            raise _error("api_key", "key_required",
                         f"api_key is empty: {where} needs a key; set the environment variable the config refers to")
        return self

    @property
    def azure(self) -> bool:
        return self.api_version is not None

    def needs_key(self) -> bool:
        host = (urlsplit(self.base_url).hostname or "").lower()
        return self.azure or host == "api.openai.com" or host.endswith(".openai.azure.com")

    def secrets(self) -> tuple[str, ...]:
        key = self.api_key.get_secret_value() if self.api_key is not None else ""
        headers = [v.get_secret_value() for v in self.extra_headers.values()]
        tokens = [h.split()[-1] for h in headers if len(h.split()) > 1]  # "Bearer TOKEN": the token alone too
        return (key, *headers, *tokens, *url_secrets(self.base_url))

    def headers(self) -> dict[str, str]:
        return {name: value.get_secret_value() for name, value in self.extra_headers.items()}

    def new_client(self) -> Any:
        """An ``AsyncOpenAI`` (or ``AsyncAzureOpenAI``) with the SDK's retries off: the engine retries."""
        key = self.api_key.get_secret_value() if self.api_key is not None else NO_KEY
        common: dict[str, Any] = {
            "api_key": key,
            "timeout": self.request_timeout_s,
            "max_retries": 0,
            "default_headers": self.headers() or None,
        }
        if self.azure:
            from openai import AsyncAzureOpenAI

            return AsyncAzureOpenAI(
                azure_endpoint=self.base_url, azure_deployment=self.deployment, api_version=self.api_version, **common
            )
        from openai import AsyncOpenAI

        return AsyncOpenAI(base_url=self.base_url, **common)


def _error(field: str, kind: str, message: str) -> ValidationError:
    """A validation error located at ``field`` (so ``vocable check`` names its path), never echoing input."""
    return ValidationError.from_exception_data(
        "OpenAISettings", [InitErrorDetails(type=PydanticCustomError(kind, message), loc=(field,), input=None)]
    )
