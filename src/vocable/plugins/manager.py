"""Loading plugins and keeping the registry of what they provide.

Each Engine owns one ``PluginHost`` (no module-global plugin manager), so two engines in one process share
nothing and tests need no globals. Entry points are loaded one by one, each in its own try/except: a plugin
that fails to import is recorded and only becomes an error when the config selects one of its providers.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy
import structlog

from vocable.providers.tools import ToolSpec, tool_spec
from vocable.plugins import hookspecs

log = structlog.get_logger("vocable.plugins")

ENTRY_POINT_GROUP = "vocable"
AUTOLOAD_ENV = "VOCABLE_DISABLE_PLUGIN_AUTOLOAD"
KINDS = ("stt", "llm", "tts", "vad", "turn", "interruption", "metrics")
# The hooks ``PluginHost.notify`` calls, one implementation at a time, instead of through pluggy's own call.
OBSERVER_HOOKS = frozenset({"session_started", "session_ended", "turn_completed", "turn_metrics"})

# First-party provider names and the install that brings them: used in "unknown provider" errors.
FIRST_PARTY_EXTRAS: dict[str, str] = {
    "whisper": "pip install 'vocable[local]'",
    "smollm": "pip install 'vocable[local]'",
    "piper": "pip install 'vocable[local]'",
    "silero": "pip install 'vocable[local]'",
    "webrtcvad": "pip install 'vocable[local]'",
    "smart-turn": "pip install 'vocable[local,smart-turn]'",
    "espeak": "apt-get install espeak-ng",
    "deepgram": "pip install 'vocable[deepgram]'",
    "groq": "pip install 'vocable[groq]'",
    "openai": "pip install 'vocable[openai]'",
    "elevenlabs": "pip install 'vocable[elevenlabs]'",
    "webrtc": "pip install 'vocable[webrtc]'",
    "twilio": "pip install 'vocable[phone]'",
    "telnyx": "pip install 'vocable[phone]'",
    "plivo": "pip install 'vocable[phone]'",
    "prometheus": "pip install 'vocable[prometheus]'",
}


@dataclass(frozen=True, slots=True)
class Registration:
    """One registered class and the plugin that registered it."""

    cls: type
    plugin: str


@dataclass(frozen=True, slots=True)
class PluginFailure:
    plugin: str
    error: str


def autoload_enabled() -> bool:
    return os.environ.get(AUTOLOAD_ENV, "").strip().lower() not in {"1", "true", "yes"}


class PluginHost:
    """A pluggy manager plus the providers and transports its plugins registered."""

    def __init__(self, *, autoload: bool | None = None, plugins: Sequence[ModuleType | object | str] = ()) -> None:
        self.pm = pluggy.PluginManager("vocable")
        self.pm.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self.providers: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
        self.transports: dict[str, Registration] = {}
        self.tools: dict[str, ToolSpec] = {}  # registered by plugins; a config enables them by name
        if autoload_enabled() if autoload is None else autoload:
            self._load_entry_points()
        for plugin in plugins:
            self.add(plugin)

    # ------------------------------------------------------------------------------------------ loading

    def _load_entry_points(self) -> None:
        seen: set[str] = set()
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in seen:
                continue
            seen.add(ep.name)
            try:
                module = ep.load()
            except Exception as exc:  # one broken plugin must not take the others down
                self._fail(ep.name, exc)
                continue
            self.add(module, name=ep.name)

    def add(self, plugin: ModuleType | object | str, *, name: str | None = None) -> None:
        """Register a plugin module or object (or a dotted module path) and collect what it registers."""
        if isinstance(plugin, str):
            try:
                plugin = importlib.import_module(plugin)
            except Exception as exc:
                self._fail(plugin, exc)
                return
        plugin_name = name or getattr(plugin, "__name__", None) or repr(plugin)
        if self.pm.is_registered(plugin) or self.pm.has_plugin(plugin_name):
            return
        try:
            self.pm.register(plugin, name=plugin_name)
            self._refuse_observer_wrappers(plugin, plugin_name)
            self._collect(plugin, plugin_name)
        except Exception as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            self._fail(plugin_name, exc)

    def _fail(self, name: str, exc: BaseException) -> None:
        self.failures.append(PluginFailure(name, f"{type(exc).__name__}: {exc}"))
        log.warning("plugin_failed", plugin=name, error=f"{type(exc).__name__}: {exc}")

    def _refuse_observer_wrappers(self, plugin: object, plugin_name: str) -> None:
        """Refuse a ``wrapper=True``/``hookwrapper=True`` implementation of an observer hook.

        ``notify`` calls observers one by one (so one failure stays local and each awaitable is awaited in
        turn), which leaves nothing for a wrapper to wrap: accepted, it would silently never run. Wrappers
        of the registration hooks are fine, since pluggy calls those itself.
        """
        for caller in self.pm.get_hookcallers(plugin) or ():
            if caller.name not in OBSERVER_HOOKS:
                continue
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin and (impl.wrapper or impl.hookwrapper):
                    style = "wrapper=True" if impl.wrapper else "hookwrapper=True"
                    raise pluggy.PluginValidationError(
                        plugin, f"plugin {plugin_name!r} implements the observer hook {caller.name} with {style}; "
                        "observer hooks do not support wrappers (use tryfirst/trylast to order them)")

    def _collect(self, plugin: object, plugin_name: str) -> None:
        caller = self.pm.subset_hook_caller
        others = [p for p in self.pm.get_plugins() if p is not plugin]
        found: list[tuple[str, type]] = []
        caller("register_providers", others)(register=lambda cls: found.append(("provider", cls)))
        caller("register_transports", others)(register=lambda cls: found.append(("transport", cls)))
        tools: list[ToolSpec] = []
        caller("register_tools", others)(register=lambda handler, **options: tools.append(tool_spec(handler, **options)))
        for what, cls in found:
            self._register(what, cls, plugin_name)
        for spec in tools:
            if spec.name in self.tools:
                log.warning("tool_shadowed", name=spec.name, by=plugin_name)
            self.tools[spec.name] = spec

    def _register(self, what: str, cls: type, plugin_name: str) -> None:
        if not inspect.isclass(cls) or not isinstance(getattr(cls, "name", None), str):
            raise TypeError(f"{plugin_name} registered {cls!r}: expected a class with a 'name'")
        if what == "transport":
            table = self.transports
        else:
            kind = getattr(cls, "kind", None)
            if kind not in self.providers:
                raise TypeError(f"{plugin_name} registered {cls.__name__} with unknown kind {kind!r}")
            table = self.providers[kind]
        existing = table.get(cls.name)
        if existing is not None and existing.cls is not cls:
            log.warning("provider_shadowed", name=cls.name, by=plugin_name, was=existing.plugin)
        table[cls.name] = Registration(cls, plugin_name)

    # ------------------------------------------------------------------------------------------ lookup

    def plugin_names(self) -> list[str]:
        return sorted(name for name, _ in self.pm.list_name_plugin())

    def provider(self, kind: str, name: str) -> Registration | None:
        return self.providers[kind].get(name)

    def unknown_message(self, kind: str, name: str) -> str:
        """The error for a provider name nobody registered: what is installed, and what would bring it."""
        installed = ", ".join(sorted(self.providers.get(kind, {}))) or "none"
        message = f"unknown {kind} provider {name!r}; installed: {installed}"
        failed = [f for f in self.failures]
        if name in FIRST_PARTY_EXTRAS:
            message += f". It ships with vocable: {FIRST_PARTY_EXTRAS[name]}"
        if failed:
            message += ". Plugins that failed to load: " + ", ".join(f"{f.plugin} ({f.error})" for f in failed)
        return message

    # ------------------------------------------------------------------------------------------ observers

    async def notify(self, hook: str, **kwargs: Any) -> None:
        """Call an observer hook on every plugin and await what comes back (datasette's ``await_me_maybe``).

        One failing observer, sync or async, is logged and never stops the others or the session, which is
        why this loops over the implementations rather than calling ``pm.hook.<hook>(...)``. It keeps pluggy's
        order all the same (tryfirst, then last registered first, then trylast): pluggy's own call walks
        ``get_hookimpls()`` from the end, and so does this (tests/test_plugins.py compares the two). Each
        awaitable is awaited before the next observer is called. Wrappers never get here: ``add`` refuses them.
        """
        if hook not in OBSERVER_HOOKS:
            raise ValueError(f"{hook!r} is not an observer hook: {sorted(OBSERVER_HOOKS)}")
        for impl in reversed(getattr(self.pm.hook, hook).get_hookimpls()):
            try:
                result = impl.function(**{k: kwargs[k] for k in impl.argnames if k in kwargs})
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                log.exception("observer_failed", hook=hook, plugin=impl.plugin_name, error=str(exc))


def iter_hookspecs() -> Iterable[tuple[str, Any]]:
    """Every hook spec (name, function), for documentation and the test that checks it."""
    for name in dir(hookspecs):
        fn = getattr(hookspecs, name)
        if callable(fn) and hasattr(fn, "vocable_spec"):
            yield name, fn
