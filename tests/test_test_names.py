"""Every test module and test helper module has a name of its own across tests/: pytest imports them by
basename (the test directories are not packages), so two ``standins`` or two ``test_offline`` shadow each
other and the whole suite stops at collection, while each directory alone still passes."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ALLOWED = {"conftest.py", "__init__.py", "__main__.py"}  # conftest files are loaded per directory by pytest


def test_module_names_are_unique_across_test_directories() -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("*.py"):
        if path.name in ALLOWED or "__pycache__" in path.parts:
            continue
        if (path.parent / "__init__.py").exists():  # inside a package: imported by the package's name
            continue
        seen[path.stem].append(str(path.relative_to(TESTS)))
    for package in TESTS.rglob("__init__.py"):
        if not (package.parent.parent / "__init__.py").exists():  # a top-level package, e.g. vendors/standins
            seen[package.parent.name].append(str(package.parent.relative_to(TESTS)) + "/")
    clashes = {name: places for name, places in seen.items() if len(places) > 1}
    assert not clashes, f"modules that shadow each other: {clashes}"
