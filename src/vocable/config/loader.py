"""Reading YAML: environment interpolation, structural validation, and errors that name their path."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from vocable.config.model import VocableConfig

DEFAULT_CONFIG = "default.yaml"  # the built-in offline default, shipped in this package
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


class ConfigError(Exception):
    """Every problem found in a config, each with the dotted path of the key it concerns."""

    def __init__(self, errors: list[tuple[str, str]], source: str | None = None) -> None:
        self.errors = errors
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        head = f"invalid config{f' {self.source}' if self.source else ''}: {len(self.errors)} error(s)"
        return "\n".join([head] + [f"  {path or '<root>'}: {message}" for path, message in self.errors])


def format_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """('pipeline', 'llm', 0, 'temperature') -> 'pipeline.llm[0].temperature'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def pydantic_errors(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> list[tuple[str, str]]:
    """Flatten pydantic errors to (path, message), never echoing the input (it may be a secret)."""
    errors = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = tuple(part for part in err["loc"] if not (isinstance(part, str) and part.startswith("function-")))
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        errors.append((format_path(prefix + loc), message))
    return errors


def interpolate(value: Any, env: Mapping[str, str], path: tuple[Any, ...], errors: list[tuple[str, str]]) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string; ``$$`` is a literal dollar."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, path + (k,), errors) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, path + (i,), errors) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        errors.append((format_path(path), f"environment variable {name} is not set"))
        return ""

    return _VAR.sub(sub, value)


def parse_config(data: Any, *, env: Mapping[str, str] | None = None, source: str | None = None) -> VocableConfig:
    """Validate the structure of an already-parsed mapping (after ``${VAR}`` interpolation)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([("", "the config must be a mapping of sections")], source)
    errors: list[tuple[str, str]] = []
    data = interpolate(data, os.environ if env is None else env, (), errors)
    try:
        config = VocableConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(errors + pydantic_errors(exc), source) from None
    if errors:
        raise ConfigError(errors, source)
    return config


def load_yaml(path: str | Path, *, env: Mapping[str, str] | None = None) -> VocableConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("", f"cannot read {path}: {exc.strerror}")], str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([("", f"YAML syntax error{where}: {getattr(exc, 'problem', exc)}")], str(path)) from None
    return parse_config(data, env=env, source=str(path))


def default_config_path() -> Path:
    return Path(str(resources.files("vocable.config").joinpath(DEFAULT_CONFIG)))


def load_config(path: str | Path | None) -> VocableConfig:
    """The config at ``path``, or the built-in default when there is none (``vocable serve`` without ``-c``)."""
    return load_yaml(path or default_config_path())
