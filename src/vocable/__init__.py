"""vocable: a small, fast, pluggable engine for real-time voice agents."""

from vocable.engine.engine import CapacityError, Engine, NotReady
from vocable.plugins.hookspecs import hookimpl

__all__ = ["CapacityError", "Engine", "NotReady", "hookimpl", "__version__"]
__version__ = "0.1.0"
