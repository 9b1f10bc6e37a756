"""WebRTC tests run inside a network namespace that has nothing but loopback.

Why: ICE gathers candidates on every interface and checks every pair it can form; outside a namespace a test
could send traffic to the machine's other addresses. Inside ``unshare -n`` (with ``lo`` brought up) the
only possible traffic is on 127.0.0.1.

How: network tests carry the ``netns`` mark (``pytestmark = pytest.mark.netns``). If this pytest process
is already in a loopback-only namespace they simply run. Otherwise the first of them re-runs every selected
``netns`` test once, in one child pytest under ``unshare -n sh -c 'ip link set lo up && exec ...'``, and
each test then reports the child's outcome: passed, failed with the child's traceback, or skipped with its
reason. Where no namespace can be made (not root, no unshare) they are skipped, never run on the host's
network. Unmarked tests (pure functions) run in the normal way.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

BATCH_TIMEOUT_S = 1800


def in_loopback_namespace() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


@dataclass(frozen=True)
class Outcome:
    kind: str  # passed, failed, skipped
    message: str = ""


class NamespaceBatch:
    """Runs the selected ``netns`` tests once in a child pytest inside ``unshare -n``; keeps each outcome."""

    def __init__(self, rootdir: Path, nodeids: list[str]) -> None:
        self.rootdir = rootdir
        self.nodeids = nodeids
        self.outcomes: dict[str, Outcome] | None = None
        self.output = ""

    def outcome(self, nodeid: str) -> Outcome:
        if self.outcomes is None:
            self.outcomes = self._run()
        found = self.outcomes.get(nodeid)
        if found is None:
            return Outcome("failed", f"no result for {nodeid} from the namespace run:\n{self.output[-6000:]}")
        return found

    def _run(self) -> dict[str, Outcome]:
        reason = _namespace_unavailable()
        if reason:
            return {nodeid: Outcome("skipped", reason) for nodeid in self.nodeids}
        with tempfile.TemporaryDirectory(prefix="vocable-netns-") as tmp:
            junit = Path(tmp) / "junit.xml"
            command = [
                "unshare", "-n", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--rootdir={self.rootdir}",
                f"--junitxml={junit}", "-o", "junit_family=xunit2", *self.nodeids,
            ]
            try:
                proc = subprocess.run(command, cwd=self.rootdir, capture_output=True, text=True,
                                      check=False, timeout=BATCH_TIMEOUT_S, env=os.environ.copy())
                self.output = proc.stdout + proc.stderr
            except subprocess.TimeoutExpired as exc:
                self.output = f"the namespace run timed out after {BATCH_TIMEOUT_S} s\n{exc.stdout or ''}"
                return {}
            sys.stdout.write(f"\n[netns] {' '.join(command[:9])} ... -> exit {proc.returncode}\n")
            return _read_junit(junit, self.rootdir) if junit.exists() else {}


def _namespace_unavailable() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare and ip (util-linux, iproute2) for a loopback-only network namespace"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"cannot create a network namespace (unshare -n needs root): {probe.stderr.strip()[:200]}"
    return None


def _read_junit(path: Path, rootdir: Path) -> dict[str, Outcome]:
    """junit testcase (classname, name) -> outcome, keyed back to pytest node ids."""
    outcomes: dict[str, Outcome] = {}
    for case in ET.parse(path).iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        parts = classname.split(".")
        # classname is the module path, dotted, then any classes: rebuild "a/b/test_x.py::Class::name"
        for cut in range(len(parts), 0, -1):
            module = "/".join(parts[:cut]) + ".py"
            if (rootdir / module).exists() or cut == 1:
                nodeid = "::".join([module, *parts[cut:], name])
                break
        kind, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                kind, message = "failed", (child.text or child.get("message") or child.tag)
            elif child.tag == "skipped":
                kind, message = "skipped", child.get("message") or "skipped in the namespace run"
        if kind == "failed" or nodeid not in outcomes:
            outcomes[nodeid] = Outcome(kind, message)
    return outcomes


_BATCH = pytest.StashKey[NamespaceBatch]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "netns: runs inside a loopback-only network namespace (unshare -n)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if in_loopback_namespace():
        return
    selected = [item for item in items if item.get_closest_marker("netns")]
    if not selected:
        return
    config.stash[_BATCH] = NamespaceBatch(config.rootpath, [item.nodeid for item in selected])
    for item in selected:  # the first one waits for the whole batch
        item.add_marker(pytest.mark.timeout(BATCH_TIMEOUT_S + 60))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if pyfuncitem.get_closest_marker("netns") is None or in_loopback_namespace():
        return None
    outcome = pyfuncitem.config.stash[_BATCH].outcome(pyfuncitem.nodeid)
    if outcome.kind == "skipped":
        pytest.skip(outcome.message)
    if outcome.kind == "failed":
        pytest.fail(f"in the loopback-only namespace:\n{outcome.message}", pytrace=False)
    return True
