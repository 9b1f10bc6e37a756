"""The JSON Schema of a config, with every installed provider's settings, for editor completion."""

from __future__ import annotations

from typing import Any

from vocable.config.model import ProviderRef, VocableConfig
from vocable.plugins.manager import PluginHost

SLOTS = ("vad", "turn", "interruption", "stt", "llm", "tts")


def _provider_schema(defs: dict[str, Any], kind: str, name: str, settings: type) -> dict[str, Any]:
    schema = settings.model_json_schema()
    defs.update(schema.pop("$defs", {}))
    properties = {"provider": {"const": name}}
    engine_keys = ProviderRef.model_json_schema()  # timeout_s, retries, retry_delay_s, breaker
    defs.update(engine_keys.pop("$defs", {}))
    properties.update({k: v for k, v in engine_keys["properties"].items() if k != "provider"})
    properties.update(schema.get("properties", {}))
    key = f"{kind}__{name}".replace("-", "_")
    defs[key] = {
        "type": "object",
        "title": f"{kind} provider {name}",
        "description": (schema.get("description") or "").strip(),
        "properties": properties,
        "required": ["provider", *schema.get("required", [])],
        "additionalProperties": False,
    }
    return {"$ref": f"#/$defs/{key}"}


def config_schema(host: PluginHost) -> dict[str, Any]:
    schema = VocableConfig.model_json_schema()
    defs = schema.setdefault("$defs", {})
    choices: dict[str, list[dict[str, Any]]] = {}
    for kind in (*SLOTS, "metrics"):
        choices[kind] = [
            _provider_schema(defs, kind, name, reg.cls.Settings)
            for name, reg in sorted(host.providers[kind].items())
        ]
    pipeline = defs["PipelineConfig"]["properties"]
    for kind in SLOTS:
        one = {"oneOf": choices[kind]} if choices[kind] else {"type": "object"}
        pipeline[kind] = {"anyOf": [one, {"type": "array", "items": one, "minItems": 1}],
                          "description": f"a {kind} provider, or a list tried in order (fallback chain)"}
    metrics_one = {"oneOf": choices["metrics"]} if choices["metrics"] else {"type": "object"}
    schema["properties"]["metrics"] = {"type": "array", "items": metrics_one}
    transports = {name: reg.cls.Settings.model_json_schema() for name, reg in sorted(host.transports.items())}
    for sub in transports.values():
        defs.update(sub.pop("$defs", {}))
    schema["properties"]["transports"] = {
        "type": "object", "properties": transports, "additionalProperties": False,
    }
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "vocable config"
    return schema
