"""The plugin system: isolation between engines, failure isolation, autoload switch, documented hooks."""

from __future__ import annotations

import asyncio
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


# ---------------------------------------------------------------------------------------- observer order


def observer(calls, label, *, is_async=False, fail=False, **opts):
    """A plugin whose session_started records ``label`` (after a yield to the loop when async), then maybe fails."""
    if is_async:
        async def session_started(session):
            await asyncio.sleep(0)
            calls.append(label)
            if fail:
                raise RuntimeError(f"{label} failed")
    else:
        def session_started(session):
            calls.append(label)
            if fail:
                raise RuntimeError(f"{label} failed")
    plugin = types.ModuleType(label)
    plugin.session_started = hookimpl(**opts)(session_started)
    return plugin


async def test_observers_run_in_pluggys_order():
    calls = []
    host = PluginHost(autoload=False)
    for label, opts in [("plain-a", {}), ("first", {"tryfirst": True}), ("last", {"trylast": True}), ("plain-b", {})]:
        host.add(observer(calls, label, **opts), name=label)
    host.pm.hook.session_started(session="s")
    pluggy_order, calls[:] = list(calls), []
    await host.notify("session_started", session="s")
    assert calls == pluggy_order == ["first", "plain-b", "plain-a", "last"]


async def test_async_observers_are_awaited_in_order_and_failures_stay_local():
    calls = []
    host = PluginHost(autoload=False)
    for label, opts in [("async-last", {"trylast": True, "is_async": True}), ("sync-boom", {"fail": True}),
                        ("async-boom", {"is_async": True, "fail": True}), ("sync", {}),
                        ("async-first", {"tryfirst": True, "is_async": True})]:
        host.add(observer(calls, label, **opts), name=label)
    await host.notify("session_started", session="s")
    assert calls == ["async-first", "sync", "async-boom", "sync-boom", "async-last"]


@pytest.mark.parametrize("style", ["wrapper", "hookwrapper"])
async def test_observer_wrappers_are_refused_at_registration(style):
    calls = []

    def session_started(session):
        calls.append("before")
        result = yield
        calls.append("after")
        return result

    wrapping = types.ModuleType("wrapping")
    wrapping.session_started = hookimpl(**{style: True})(session_started)
    host = PluginHost(autoload=False)
    host.add(observer(calls, "plain"), name="plain")
    host.add(wrapping, name="wrapping")
    assert host.plugin_names() == ["plain"]
    (failure,) = host.failures
    assert failure.plugin == "wrapping"
    assert "session_started" in failure.error and "wrapping" in failure.error and style in failure.error
    await host.notify("session_started", session="s")
    assert calls == ["plain"]
