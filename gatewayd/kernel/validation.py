"""Reading TOML and saying what is wrong with it: the one place validation errors are worded.

A config problem reads ``doors[12](A-101).lock.device: unknown device 'relay-x' (expected one
of: ...)``: the path to the field, list items named by their id, and what was expected. A
command problem (``bad_request``) reads ``params.duration_s: Input should be greater than 0``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from gatewayd.kernel.errors import CommandError, ConfigError, ErrorCode


class Model(BaseModel):
    """Base of every config model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's document; unreadable, non-UTF-8 or malformed is a :class:`ConfigError`."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read file: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"not UTF-8 text: {exc}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"TOML syntax error: {exc}"]) from exc


def where(loc: Sequence[int | str], raw: Any) -> str:
    """Render a pydantic location as ``doors[3](A-101).lock``, naming list items by id."""
    out = ""
    node: Any = raw
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list | tuple) and part < len(node) else None
            if isinstance(node, Mapping) and isinstance(node.get("id"), str):
                out += f"({node['id']})"
        else:
            out += f".{part}" if out else part
            node = node.get(part) if isinstance(node, Mapping) else None
    return out or "(top level)"


def describe_errors(
    exc: ValidationError,
    raw: Mapping[str, Any],
    prefix: tuple[int | str, ...] = (),
    *,
    tagged: bool = False,
) -> list[str]:
    """One line per problem in a config document, for :class:`ConfigError`."""
    problems = []
    for err in exc.errors(include_url=False):
        # A discriminated union puts the tag (the driver name) first in the location.
        inner = tuple(err["loc"])[1:] if tagged else tuple(err["loc"])
        problems.append(f"{where(prefix + inner, raw)}: {_expectation(err)}")
    return problems


def _expectation(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return f"unknown field (value {err.get('input')!r}); check the spelling"
    message = str(err["msg"])
    return f"{message} (got {err.get('input')!r})"


def bad_request(exc: ValidationError, *, prefix: str = "") -> CommandError:
    """A request body's validation problems as one ``bad_request``, fields named by path."""
    problems = "; ".join(
        f"{prefix}{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
        for e in exc.errors(include_url=False)
    )
    return CommandError(ErrorCode.BAD_REQUEST, problems)
