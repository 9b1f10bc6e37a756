"""The stand-ins themselves: runnable as a separate process and in a thread, and driven over HTTP.

These are how the whole-server test (``vocable serve -c config.yaml``) will use them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from standins import STANDINS, GroqStandin

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(STANDINS))
def test_standin_runs_as_a_process_and_is_driven_over_http(name: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.vendors.standins", name, "--port", "0", "--api-key", "k-123"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())
        assert line["name"] == name and line["url"] == f"http://127.0.0.1:{line['port']}"
        with httpx.Client(base_url=line["url"], timeout=5) as client:
            assert client.get("/_standin/stats").json()["attempts"] == 0
            assert client.post("/_standin/mode", json={"mode": "500", "times": 1}).json()["mode"] == "500"
            assert client.post("/_standin/mode", json={"mode": "nope"}).status_code == 400
            assert client.post("/_standin/reset").json()["mode"] == "normal"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""


def test_standin_runs_in_a_thread_for_synchronous_callers() -> None:
    standin = GroqStandin(api_key="k-123")
    with standin.run_in_thread():
        with httpx.Client(base_url=standin.url, timeout=5) as client:
            response = client.post(
                "/openai/v1/chat/completions",
                headers={"authorization": "Bearer k-123"},
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert response.status_code == 200
            assert response.json()["choices"][0]["message"]["content"] == standin.reply
            refused = client.post(
                "/openai/v1/chat/completions",
                headers={"authorization": "Bearer other"},
                json={"model": "m", "messages": []},
            )
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert standin.attempts == 2
