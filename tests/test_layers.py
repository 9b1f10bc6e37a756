"""vocable's structure: the import-linter contracts in pyproject.toml, a lazy top-level package, no module-level
import cycle, and no long module without a word on why it is long."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from import_graph import SRC, cycles, import_graph, module_files

ROOT = SRC.parent
LONG = 400  # lines; a module past this says why in its docstring, with its size ("about 500 lines")
SAYS_ITS_SIZE = re.compile(r"\b\d+ lines\b")
# Long modules whose docstring is their owner's to write (none now: engine/session.py was split).
PENDING: set[str] = set()


def test_import_linter_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def test_the_top_level_package_loads_no_engine() -> None:
    """``import vocable`` and ``from vocable import hookimpl`` (what a plugin does) load the hook specs only;
    ``from vocable import Engine`` still works. In a fresh interpreter: other tests have imported everything."""
    script = (
        "import sys, vocable\n"
        "from vocable import hookimpl\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('vocable'))\n"
        "assert loaded == ['vocable', 'vocable.plugins', 'vocable.plugins.hookspecs'], loaded\n"
        "from vocable import CapacityError, Engine, NotReady, __version__\n"
        "from vocable.engine.engine import Engine as Home\n"
        "assert Engine is Home and 'Engine' in dir(vocable) and __version__\n"
        "try:\n"
        "    vocable.nothing_here\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('vocable.nothing_here')\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def test_no_import_cycle_at_module_level() -> None:
    """Counting what runs on import: imports under ``if TYPE_CHECKING:`` and inside functions do not count."""
    graph = import_graph()
    assert len(graph) > 50 and "vocable.engine.session" in graph["vocable.engine.engine"]  # it sees the imports
    assert cycles(graph) == []


def test_the_cycle_finder_finds_cycles(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import x\n")
    (package / "b.py").write_text("from pkg import c\nx = 1\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.d import y\nfrom . import a\n")
    (package / "d.py").write_text("def f():\n    from pkg.c import z\ny = 1\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.c"] == {"pkg.a"} and graph["pkg.d"] == set()
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_long_modules_say_why_they_are_long() -> None:
    silent = []
    for name, path in module_files().items():
        text = path.read_text()
        if text.count("\n") <= LONG:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if not SAYS_ITS_SIZE.search(docstring):
            silent.append(name)
    assert sorted(set(silent) - PENDING) == [], f"over {LONG} lines without a sentence in the docstring on why"
