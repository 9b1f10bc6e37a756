"""What a tool is to vocable: the ``Tool`` an LLM sees, its handler, and how its calls behave.

A low-layer type, beside ``Tool`` and ``ToolCall`` in ``providers/base.py``: the config, the plugin host and
the engine all use it (``engine/tools.py`` runs the calls).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from vocable.providers.base import Tool

ToolHandler = Callable[..., Awaitable[Any] | Any]
DEFAULT_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool and how its calls behave: ``@engine.tool(...)`` or a plugin's ``register_tools`` make one."""

    tool: Tool
    handler: ToolHandler
    timeout_s: float = DEFAULT_TIMEOUT_S
    cancel_on_interruption: bool = False  # default: a call the user talks over still finishes

    @property
    def name(self) -> str:
        return self.tool.name


def tool_spec(
    handler: ToolHandler, *, name: str | None = None, description: str = "", parameters: dict[str, Any] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S, cancel_on_interruption: bool = False,
) -> ToolSpec:
    """A ``ToolSpec`` from a function and options: one way to make a tool, for ``@engine.tool`` and plugins."""
    if not callable(handler):
        raise TypeError(f"a tool needs a callable handler, not {handler!r}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, not {timeout_s}")
    tool = Tool(name or handler.__name__, description or (handler.__doc__ or "").strip(),
                parameters or {"type": "object", "properties": {}})
    return ToolSpec(tool, handler, timeout_s, cancel_on_interruption)
