"""Config validation: paths in every error, env interpolation, unknown providers, secrets redacted."""

from __future__ import annotations

import json

import pytest
from vocable.testing.scripted import SCRIPTED_PLUGINS, scripted_config

from vocable import Engine
from vocable.config import ConfigError, load_yaml, parse_config
from vocable.plugins.manager import PluginHost


def engine_from(data, env=None):
    return Engine.from_dict(data, env=env or {}, autoload=False, plugins=SCRIPTED_PLUGINS)


def errors_of(exc: ConfigError) -> dict[str, str]:
    return dict(exc.errors)


def test_misspelt_provider_key_names_its_path():
    data = scripted_config(llm={"provider": "scripted", "replly": "x"})
    with pytest.raises(ConfigError) as info:
        engine_from(data)
    assert errors_of(info.value) == {"pipeline.llm.replly": "unknown key"}


def test_errors_in_a_fallback_chain_name_the_index():
    data = scripted_config(llm=[{"provider": "scripted"}, {"provider": "scripted", "token_delay_ms": "slow"}])
    with pytest.raises(ConfigError) as info:
        engine_from(data)
    assert list(errors_of(info.value)) == ["pipeline.llm[1].token_delay_ms"]


def test_every_error_is_reported_at_once():
    data = scripted_config(llm={"provider": "scripted", "bogus": 1}, tts={"provider": "scripted", "sample_rate": "x"})
    data["server"] = {"port": 99999}
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    assert "server.port" in errors_of(info.value)
    data.pop("server")
    with pytest.raises(ConfigError) as info:
        engine_from(data)
    assert set(errors_of(info.value)) == {"pipeline.llm.bogus", "pipeline.tts.sample_rate"}


def test_unknown_section_key():
    data = scripted_config()
    data["pipline"] = {}
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    assert errors_of(info.value) == {"pipline": "unknown key"}


def test_unknown_provider_lists_installed_and_install_hint():
    with pytest.raises(ConfigError) as info:
        engine_from(scripted_config(llm={"provider": "groq"}))
    message = errors_of(info.value)["pipeline.llm.provider"]
    assert "unknown llm provider 'groq'" in message
    assert "installed: scripted" in message
    assert "pip install 'vocable[groq]'" in message
    with pytest.raises(ConfigError) as info:
        engine_from(scripted_config(tts={"provider": "nonesuch"}))
    assert "pip install" not in errors_of(info.value)["pipeline.tts.provider"]


def test_missing_slot_and_empty_chain():
    data = scripted_config()
    del data["pipeline"]["llm"]
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    assert "pipeline.llm" in errors_of(info.value)
    data = scripted_config(llm=[])
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    assert "at least one provider" in str(info.value)


def test_environment_interpolation():
    data = scripted_config(llm={"provider": "scripted", "reply": "${GREETING}", "first_token_ms": "${DELAY:-5}"})
    data["server"] = {"port": "${PORT:-8123}"}
    engine = engine_from(data, env={"GREETING": "Hi there."})
    assert engine.runtime.llm[0].provider.settings.reply == "Hi there."
    assert engine.runtime.llm[0].provider.settings.first_token_ms == 5
    assert engine.config.server.port == 8123
    with pytest.raises(ConfigError) as info:
        engine_from(data, env={})
    assert errors_of(info.value) == {"pipeline.llm.reply": "environment variable GREETING is not set"}
    literal = parse_config(scripted_config(llm={"provider": "scripted", "reply": "costs $$5"}), env={})
    assert literal.pipeline.llm[0].options["reply"] == "costs $5"


def test_yaml_errors_are_clear(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("pipeline: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert "YAML syntax error at line" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_yaml(tmp_path / "missing.yaml")
    assert "cannot read" in str(info.value)


def test_secrets_are_redacted_and_never_in_errors():
    from pydantic import SecretStr

    from vocable.providers.base import LLM, ProviderSettings

    class KeyedSettings(ProviderSettings):
        api_key: SecretStr
        temperature: float = 0.5

    class KeyedLLM(LLM):
        name = "keyed"
        Settings = KeyedSettings

        def stream(self, messages, *, tools=()):
            raise NotImplementedError

    class Plugin:
        from vocable import hookimpl

        @hookimpl
        def register_providers(self, register):
            register(KeyedLLM)

    data = scripted_config(llm={"provider": "keyed", "api_key": "${KEY}"})
    data["server"] = {"auth": {"api_key": "server-secret-123"}}
    engine = Engine.from_dict(data, env={"KEY": "sk-very-secret-999"}, autoload=False, plugins=[*SCRIPTED_PLUGINS, Plugin()])
    dumped = json.dumps(engine.redacted_config())
    assert "sk-very-secret-999" not in dumped and "server-secret-123" not in dumped
    assert engine.redacted_config()["pipeline"]["llm"][0]["api_key"] == "**********"
    bad = scripted_config(llm={"provider": "keyed", "api_key": "sk-very-secret-999", "temperature": "hot"})
    with pytest.raises(ConfigError) as info:
        Engine.from_dict(bad, env={}, autoload=False, plugins=[*SCRIPTED_PLUGINS, Plugin()])
    assert "sk-very-secret-999" not in str(info.value)
    assert "pipeline.llm.temperature" in dict(info.value.errors)


def test_config_schema_lists_providers_and_their_settings():
    from vocable.config.schema import config_schema

    schema = config_schema(PluginHost(autoload=False, plugins=SCRIPTED_PLUGINS))
    llm_choice = schema["$defs"]["llm__scripted"]
    assert llm_choice["properties"]["provider"] == {"const": "scripted"}
    assert "token_delay_ms" in llm_choice["properties"]
    assert llm_choice["additionalProperties"] is False
    json.dumps(schema)


def test_passwords_in_urls_are_redacted():
    from vocable.config.resolve import _redact

    assert _redact("postgresql://ann:s3cret@db:5432/voice") == "postgresql://ann:**********@db:5432/voice"
    assert _redact("postgresql://db/voice?user=ann&password=s3cret&sslmode=require") == (
        "postgresql://db/voice?user=ann&password=**********&sslmode=require")
    assert _redact("sqlite:///var/lib/vocable.db") == "sqlite:///var/lib/vocable.db"
