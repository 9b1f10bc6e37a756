"""The scenario file (``vocable test FILE``): YAML, validated like a config, so a typo is an error with its path.

::

    config: vocable.yaml            # the engine's config: a path (from this file) or a mapping; -c replaces it
    voice: {provider: espeak}       # the offline TTS that speaks `say:` steps
    judge: {provider: scripted}     # the LLM that grades `judge:` expectations (default: the config's first)
    scenarios:
      - name: weather
        config: {agent: {greeting: null}}   # merged into the file's config for this scenario
        steps:
          - say: what is the weather today  # or text:, wav: (a file), dtmf: "12#"
            after_ms: 300                   # speak this long after the agent's previous reply began to play
            expect:
              transcript_contains: weather
              reply_contains: [sunny, hat]
              tool_called: {name: book_table, arguments: {people: 2}}
              interrupted: false
              within_ms: {voice_to_voice_ms: 1500}   # a number: voice_to_voice_ms (typed: text_to_voice_ms)
              judge: the agent says what the weather is
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vocable.config.loader import ConfigError, pydantic_errors

INPUTS = ("text", "say", "wav", "dtmf")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolExpectation(Strict):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict, description="these keys, with these values")


class JudgeExpectation(Strict):
    intent: str
    llm: dict[str, Any] | None = Field(default=None, description="the grading LLM ({provider: ...}); default: "
                                       "the file's judge, else the config's first LLM")


class Expect(Strict):
    transcript_contains: list[str] = Field(default_factory=list)
    reply_contains: list[str] = Field(default_factory=list)
    tool_called: ToolExpectation | None = None
    interrupted: bool | None = None
    within_ms: dict[str, float] = Field(default_factory=dict)
    judge: JudgeExpectation | None = None

    @field_validator("transcript_contains", "reply_contains", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("tool_called", mode="before")
    @classmethod
    def _named(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("judge", mode="before")
    @classmethod
    def _intent(cls, value: Any) -> Any:
        return {"intent": value} if isinstance(value, str) else value

    @field_validator("within_ms", mode="before")
    @classmethod
    def _budget(cls, value: Any) -> Any:
        return {"": value} if isinstance(value, (int, float)) else value  # "": the step's own voice figure


class Step(Strict):
    text: str | None = Field(default=None, description="typed by the user")
    say: str | None = Field(default=None, description="spoken by the offline TTS (the file's voice)")
    wav: str | None = Field(default=None, description="a 16-bit PCM WAV file, from the scenario file's folder")
    dtmf: str | None = Field(default=None, pattern=r"^[0-9*#A-D]+$", description="keys pressed, as a phone sends them")
    after_ms: int | None = Field(default=None, ge=0, description="speak over the agent: this long after its "
                                 "reply to the previous step began to play; null: once it is quiet")
    expect: Expect = Field(default_factory=Expect)

    @model_validator(mode="after")
    def _one_input(self) -> Step:
        given = [name for name in INPUTS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a step has exactly one of {', '.join(INPUTS)} (this one has {len(given) or 'none'})")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in INPUTS if getattr(self, name) is not None)

    def describe(self) -> str:
        value = getattr(self, self.kind)
        return f"{self.kind} {value!r}" + (f" after {self.after_ms} ms" if self.after_ms is not None else "")


class Scenario(Strict):
    name: str = Field(min_length=1)
    config: dict[str, Any] = Field(default_factory=dict, description="merged into the file's config")
    steps: list[Step] = Field(min_length=1)
    timeout_s: float = Field(default=30.0, gt=0, description="the longest a step may wait for its turn")


class ScenarioFile(Strict):
    config: str | dict[str, Any] | None = None
    voice: dict[str, Any] = Field(default_factory=lambda: {"provider": "espeak"})
    judge: dict[str, Any] | None = None
    dtmf_template: str = Field(default="The caller pressed {digits} on the keypad.",
                               description="the text a dtmf step sends, as the phone transports' dtmf.as_text")
    scenarios: list[Scenario] = Field(min_length=1)
    folder: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _unique_names(self) -> ScenarioFile:
        names = [s.name for s in self.scenarios]
        if len(set(names)) != len(names):
            raise ValueError(f"scenario names must be unique: {sorted({n for n in names if names.count(n) > 1})}")
        return self

    def base_config(self) -> dict[str, Any] | None:
        """The file's config as a mapping (a path is read; ``${VAR}`` is expanded when it is parsed), or None."""
        if isinstance(self.config, str):
            path = self.folder / self.config
            try:
                return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except OSError as exc:
                raise ConfigError([("config", f"cannot read {path}: {exc.strerror}")], str(path)) from None
        return self.config


def load(path: str | Path) -> ScenarioFile:
    """Read and validate a scenario file; ConfigError listing every problem with its path."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([("", f"cannot read the file: {exc.strerror}")], str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError([("", f"YAML syntax error: {getattr(exc, 'problem', exc)}")], str(path)) from None
    try:
        return ScenarioFile.model_validate({**(data if isinstance(data, dict) else {"scenarios": data}),
                                            "folder": path.parent})
    except ValidationError as exc:
        raise ConfigError(pydantic_errors(exc), str(path)) from None


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` deep-merged into ``base`` (mappings merge, anything else replaces)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
