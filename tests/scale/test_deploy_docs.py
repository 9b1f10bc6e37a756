"""docs/deploy.md shows the nginx configuration the cluster tests run, with example addresses."""

from __future__ import annotations

from pathlib import Path

from deploy_nginx import site

DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"


def test_the_documented_nginx_site_is_the_tested_one() -> None:
    text = DOC.read_text()
    block = text.split("```nginx\n", 1)[1].split("```", 1)[0]
    assert block == site("80", ["10.0.0.11:8000", "10.0.0.12:8000", "10.0.0.13:8000"])
