"""vocable: a small, fast, pluggable engine for real-time voice agents.

The names here are loaded when first used (PEP 562), so ``from vocable import hookimpl`` in a plugin loads the
hook specifications and not the engine; ``from vocable import Engine`` loads the engine.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vocable.engine.engine import CapacityError, Engine, NotReady
    from vocable.plugins.hookspecs import hookimpl

__all__ = ["CapacityError", "Engine", "NotReady", "hookimpl", "__version__"]
__version__ = "0.1.0"

_HOMES = {  # name -> the module it lives in
    "CapacityError": "vocable.engine.engine",
    "Engine": "vocable.engine.engine",
    "NotReady": "vocable.engine.engine",
    "hookimpl": "vocable.plugins.hookspecs",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'vocable' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value  # once loaded, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
