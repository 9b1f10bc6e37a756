"""The one check of the uvicorn internals vocable's server protocols rely on, made at start-up.

``vocable serve`` runs two subclasses of uvicorn's protocols: ``DirectFramesProtocol`` (WebSocket frames
without the ASGI queue, ``transports/direct_frames.py``) and ``HeadTimeoutProtocol`` (a deadline for each
request head, ``serving.py``). Both use names uvicorn does not document. pyproject keeps uvicorn below the
next minor release (``<0.56``); within that range each protocol lists the names it uses, and this module
says which are gone. When one is, ``vocable serve`` runs uvicorn's stock protocol instead and says so in one
warning (``unavailable``), rather than failing on the first connection.

A name counts as there when a class of the same package in the class's MRO has it (a method, a property, a
class attribute) or assigns it in one of its functions (``self.name = ...``, read in the bytecode: instance
attributes exist only once ``__init__`` has run).
"""

from __future__ import annotations

import dis
import importlib
from collections.abc import Iterable, Iterator
from types import CodeType
from typing import Any

import structlog

log = structlog.get_logger("vocable.serving")


def find(where: str) -> Any:
    """The object at ``"module:Name"``, or None when the module or the name is gone."""
    module, _, name = where.partition(":")
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def missing(*needs: tuple[str | type | None, Iterable[str]]) -> list[str]:
    """Which of the names each class needs it lacks, as ``"Class.name"``; every name when the class is gone.

    A class is given as itself or as ``"module:Class"``.
    """
    lacking: list[str] = []
    for where, names in needs:
        cls = find(where) if isinstance(where, str) else where
        label = where if cls is None else cls.__qualname__
        present = _names_of(cls) if isinstance(cls, type) else set()
        lacking += [f"{label}.{name}" for name in names if name not in present]
    return lacking


def unavailable(feature: str, lacking: list[str], instead: str) -> None:
    """The one warning when ``feature`` cannot run on this uvicorn: ``<feature>_unavailable``."""
    import uvicorn

    log.warning(f"{feature}_unavailable", uvicorn=uvicorn.__version__, missing=lacking, instead=instead)


def _names_of(cls: type) -> set[str]:
    package = cls.__module__.partition(".")[0]
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__.partition(".")[0] != package:
            continue
        for name, value in vars(klass).items():
            names.add(name)
            function = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
            code = getattr(function, "__code__", None)
            if isinstance(code, CodeType):
                names.update(_assigned(code))
    return names


def _assigned(code: CodeType) -> Iterator[str]:
    for instruction in dis.get_instructions(code):
        if instruction.opname == "STORE_ATTR":
            yield instruction.argval
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _assigned(const)
