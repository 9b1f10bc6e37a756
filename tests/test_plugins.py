"""The plugin system: isolation between engines, failure isolation, autoload switch, documented hooks."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
from vocable.testing.scripted import SCRIPTED_PLUGINS, scripted_config

from vocable import Engine, hookimpl
from vocable.config import ConfigError
from vocable.plugins.manager import AUTOLOAD_ENV, PluginHost, iter_hookspecs
from vocable.providers.base import LLM, TextDelta

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


class EchoLLM(LLM):
    name = "only-in-a"

    async def stream(self, messages, *, tools=()):
        yield TextDelta("from plugin a")


class PluginA:
    def __init__(self):
        self.sessions = []

    @hookimpl
    def register_providers(self, register):
        register(EchoLLM)

    @hookimpl
    async def session_started(self, session):
        self.sessions.append(session.id)


def test_every_hookspec_is_documented():
    docs = DOCS.read_text()
    specs = dict(iter_hookspecs())
    assert {"register_providers", "register_transports", "session_started", "session_ended",
            "turn_completed", "turn_metrics"} <= set(specs)
    for name, fn in specs.items():
        assert fn.__doc__ and len(fn.__doc__.strip()) > 40, f"hookspec {name} has no docstring"
        assert re.search(rf"^### `{name}\(", docs, re.M), f"hookspec {name} is not documented in docs/plugins.md"


async def test_two_engines_share_no_plugins():
    plugin = PluginA()
    a = Engine.from_dict(scripted_config(llm={"provider": "only-in-a"}), autoload=False,
                         plugins=[*SCRIPTED_PLUGINS, plugin])
    with pytest.raises(ConfigError):
        Engine.from_dict(scripted_config(llm={"provider": "only-in-a"}), autoload=False, plugins=SCRIPTED_PLUGINS)
    b = Engine.from_dict(scripted_config(), autoload=False, plugins=SCRIPTED_PLUGINS)
    assert a.host.pm is not b.host.pm
    assert b.host.provider("llm", "only-in-a") is None
    await a.start()
    await b.start()
    async with a.conversation(pace=False):
        pass
    async with b.conversation(pace=False):
        pass
    assert len(plugin.sessions) == 1, "an async observer of engine a must see only a's session"
    await a.stop()
    await b.stop()


def test_a_broken_plugin_is_reported_not_fatal():
    broken = types.ModuleType("broken_plugin")

    def register_providers(register):
        raise RuntimeError("boom at registration")

    broken.register_providers = hookimpl(register_providers)
    host = PluginHost(autoload=False, plugins=[*SCRIPTED_PLUGINS, broken, "no.such.module"])
    failures = {f.plugin: f.error for f in host.failures}
    assert "boom at registration" in failures["broken_plugin"]
    assert "ModuleNotFoundError" in failures["no.such.module"]
    assert host.provider("llm", "scripted") is not None
    message = host.unknown_message("llm", "missing")
    assert "broken_plugin" in message


def test_autoload_switch(monkeypatch):
    monkeypatch.setenv(AUTOLOAD_ENV, "1")
    host = PluginHost()
    assert host.plugin_names() == []
    monkeypatch.delenv(AUTOLOAD_ENV)
    host = PluginHost()
    assert "core" in host.plugin_names() and "testing" in host.plugin_names()
    assert host.provider("llm", "scripted").plugin == "testing"


def test_first_party_providers_come_through_entry_points():
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="vocable")}
    assert names["core"] == "vocable.plugins.core"
    host = PluginHost()
    assert host.provider("vad", "energy").plugin == "core"
