"""What ``vocable test`` prints (pytest's style) and writes with ``--junit`` (JUnit XML, for CI)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from vocable.scenarios.runner import Outcome

WIDTH = 100


def rule(text: str, fill: str = "=") -> str:
    text = f" {text} " if text else ""
    side = max(3, (WIDTH - len(text)) // 2)
    return f"{fill * side}{text}{fill * side}"


def progress(source: str, outcome: Outcome) -> str:
    return f"{source}::{outcome.name} {'PASSED' if outcome.passed else 'FAILED'} ({outcome.seconds:.1f} s)"


def summary(outcomes: Sequence[Outcome], seconds: float, notes: Sequence[str] = ()) -> list[str]:
    lines: list[str] = []
    failed = [o for o in outcomes if not o.passed]
    if failed:
        lines.append(rule("FAILURES"))
        for outcome in failed:
            lines.append(rule(outcome.name, "_"))
            lines.extend(f"E   {failure}" for failure in outcome.failures)
    for note in notes:
        lines.append(f"note: {note}")
    counts = ", ".join(part for part in (f"{len(failed)} failed" if failed else "",
                                         f"{len(outcomes) - len(failed)} passed") if part)
    lines.append(rule(f"{counts or 'no scenarios'} in {seconds:.1f} s"))
    return lines


def junit(outcomes: Sequence[Outcome], source: str, seconds: float) -> str:
    suite = ET.Element("testsuite", name="vocable", tests=str(len(outcomes)),
                       failures=str(sum(not o.passed for o in outcomes)), errors="0", time=f"{seconds:.3f}")
    for outcome in outcomes:
        case = ET.SubElement(suite, "testcase", classname=source, name=outcome.name, time=f"{outcome.seconds:.3f}")
        if not outcome.passed:
            failure = ET.SubElement(case, "failure", message=outcome.failures[0])
            failure.text = "\n".join(outcome.failures)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)
