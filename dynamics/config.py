"""Typed experiment configs and ``key=value`` overrides from the command line.

Every experiment config is a frozen dataclass whose ``__post_init__`` validates its values and raises
:class:`~dynamics.errors.UserError`; so any config that exists is valid, and a bad ``--set`` fails
before anything runs or is written.  A field's help text lives in ``field(metadata={"help": ...})``.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Iterable, Mapping

from .errors import UserError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def field(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a help string (shown by ``dynamics run EXP --help``)."""
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce(cls: type, key: str, raw: Any) -> Any:
    """Convert ``raw`` (usually a string from the CLI) to the declared type of ``cls.key``."""
    types = field_types(cls)
    if key not in types:
        raise unknown_key(cls, key)
    tp = types[key]
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    try:
        if tp is bool:
            low = text.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError
        if tp is int:
            value = float(text)
            if value != int(value):
                raise ValueError
            return int(value)
        if tp is float:
            return float(text)
        if tp is str:
            return text
        origin = typing.get_origin(tp)
        if origin is typing.Literal:
            choices = typing.get_args(tp)
            if text not in choices:
                raise UserError(f"{key}={text!r} is not one of {', '.join(map(str, choices))}")
            return text
        if origin is tuple:
            (inner, *_) = typing.get_args(tp)
            return tuple(coerce_scalar(inner, part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(f"{key}={text!r}: expected {type_name(tp)}") from None
    raise UserError(f"{key}: cannot be set from the command line")


def coerce_scalar(tp: type, text: str) -> Any:
    return int(float(text)) if tp is int else float(text) if tp is float else text.strip()


def type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def unknown_key(cls: type, key: str) -> UserError:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(names)}"
    return UserError(f"unknown config key {key!r}{hint}")


def parse_assignments(items: Iterable[str], what: str = "--set") -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; a malformed item is a UserError."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{what} expects key=value, got {item!r}")
        out[key.strip()] = value
    return out


def build(cls: type, overrides: Mapping[str, Any], base: Any = None) -> Any:
    """A validated config: ``base`` (or the defaults) with ``overrides`` coerced and applied."""
    values = {k: coerce(cls, k, v) for k, v in overrides.items()}
    try:
        return dataclasses.replace(base, **values) if base is not None else cls(**values)
    except TypeError as exc:  # a wrong type that slipped through coercion
        raise UserError(str(exc)) from None


def require(condition: bool, message: str) -> None:
    """Validation helper for ``__post_init__``: a failed condition is a UserError."""
    if not condition:
        raise UserError(message)


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) for each field, for ``--help`` text and the README."""
    rows = []
    types = field_types(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((f.name, type_name(types[f.name]), default, f.metadata.get("help", "")))
    return rows
