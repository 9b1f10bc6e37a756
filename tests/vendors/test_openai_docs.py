"""docs/config.md's worked examples for ``provider: openai`` each pass ``vocable check``, and an empty key for
api.openai.com fails it with the key's path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from vocable.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"
SECTION = "## OpenAI and OpenAI-compatible servers"
ENV = {"OPENAI_API_KEY": "sk-doc-example-key", "AZURE_OPENAI_API_KEY": "azure-doc-key",
       "VLLM_API_KEY": "vllm-doc-key"}


def examples() -> list[str]:
    text = DOC.read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return re.findall(r"```yaml\n(.*?)```", text[start:end], flags=re.DOTALL)


def check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "example.yaml"
    path.write_text(text)
    code = main(["check", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_examples_cover_every_server_the_issue_names() -> None:
    blocks = examples()
    assert len(blocks) == 6
    joined = "\n".join(blocks)
    for needle in ("OPENAI_API_KEY", "api_version", "11434", "VLLM_API_KEY",
                   "8080", "faster-distil-whisper", "kokoro"):
        assert needle in joined, needle
    for block in blocks:
        pipeline = yaml.safe_load(block)["pipeline"]
        assert "openai" in str(pipeline), block


@pytest.mark.parametrize("index", range(6))
def test_each_example_passes_vocable_check(
    index: int, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    code, output = check(tmp_path, examples()[index], capsys)
    assert code == 0, output


def test_an_empty_key_for_api_openai_com_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "")
    config = examples()[0].replace('"${OPENAI_API_KEY}"', '"${OPENAI_API_KEY:-}"')
    code, output = check(tmp_path, config, capsys)
    assert code == 1
    for slot in ("stt", "llm", "tts"):
        assert f"pipeline.{slot}.api_key: api_key is empty: api.openai.com needs a key" in output, output
