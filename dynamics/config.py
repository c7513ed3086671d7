"""Typed experiment configs and ``key=value`` overrides from the command line.

Every experiment config is a frozen dataclass whose ``__post_init__`` validates its values and raises
:class:`~dynamics.errors.UserError`; so any config that exists is valid, and a bad ``--set`` fails
before anything runs or is written.  A field's help text lives in ``field(metadata={"help": ...})``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import UserError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def field(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a help string (shown by ``dynamics run EXP --help``)."""
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


INT_MIN, INT_MAX = -(2 ** 63), 2 ** 63 - 1  # torch and numpy hold ints as int64


def is_seed_key(key: str) -> bool:
    """Keys that feed numpy's SeedSequence or count seeds: negative values make no sense."""
    return key == "seed" or key.endswith("_seed") or key == "seeds" or key.endswith("_seeds")


def coerce(cls: type, key: str, raw: Any) -> Any:
    """Convert ``raw`` (usually a string from the CLI) to the declared type of ``cls.key``.

    Numbers are checked here, before any config is built: floats must be finite, integers must be
    whole numbers that fit in int64 (``1e3`` is accepted as 1000, ``1e400`` and ``2.5`` are not), and
    seeds are non-negative.  Anything else is a UserError naming the key.
    """
    types = field_types(cls)
    if key not in types:
        raise unknown_key(cls, key)
    tp = types[key]
    if not isinstance(raw, str):
        return _check_value(key, tp, raw)
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
            return check_int(key, parse_int(text))
        if tp is float:
            return check_float(key, float(text))
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
            return tuple(coerce_scalar(inner, part, key) for part in text.split(",") if part.strip())
    except (ValueError, OverflowError):
        raise UserError(f"{key}={text!r}: expected {type_name(tp)}") from None
    raise UserError(f"{key}: cannot be set from the command line")


def parse_int(text: str) -> int:
    """``"12"``, ``"-3"``, ``"1e3"`` -> int; a fraction, inf or nan raises ValueError."""
    try:
        return int(text, 10)
    except ValueError:
        value = float(text)
        if not math.isfinite(value) or value != int(value):
            raise ValueError(text) from None
        return int(value)


def check_int(key: str, value: int) -> int:
    if not INT_MIN <= value <= INT_MAX:
        raise UserError(f"{key}={value}: out of range (integers must fit in 64 bits)")
    if value < 0 and is_seed_key(key):
        raise UserError(f"{key} must be a non-negative integer, got {value}")
    return value


def check_float(key: str, value: float) -> float:
    if not math.isfinite(value):
        raise UserError(f"{key}={value}: must be a finite number")
    return value


def _check_value(key: str, tp: Any, value: Any) -> Any:
    """Values that arrive already typed (from a manifest, or from Python): the same checks."""
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return check_int(key, value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return check_float(key, float(value))
    if typing.get_origin(tp) is tuple and isinstance(value, (list, tuple)):
        (inner, *_) = typing.get_args(tp)
        return tuple(_check_value(key, inner, v) for v in value)
    return value


def coerce_scalar(tp: type, text: str, key: str = "value") -> Any:
    if tp is int:
        return check_int(key, parse_int(text.strip()))
    if tp is float:
        return check_float(key, float(text))
    return text.strip()


def type_name(tp: Any) -> str:
    """How to write a value of ``tp`` on the command line: choices for a Literal, list syntax for a tuple."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + "|".join(map(str, typing.get_args(tp)))
    if origin is tuple:
        inner = typing.get_args(tp)[0] if typing.get_args(tp) else str
        return f"list of {type_name(inner)} (a,b,c)"
    if tp is bool:
        return "bool (true/false)"
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
        cfg = dataclasses.replace(base, **values) if base is not None else cls(**values)
    except (TypeError, ValueError, OverflowError) as exc:  # a check in __post_init__ outside `require`
        raise UserError(f"invalid config: {exc}") from None
    check_device(cfg)
    return cfg


def check_device(cfg: Any) -> None:
    """A ``device`` field names a device this machine has (checked up front, not at the first tensor)."""
    device = getattr(cfg, "device", None)
    if not isinstance(device, str) or device == "cpu":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"device={device!r}: not a torch device (cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device={device!r}: this machine has no CUDA device (use device=cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UserError(f"device={device!r}: MPS is not available on this machine")
    elif dev.type != "cpu":
        raise UserError(f"device={device!r}: unsupported device type {dev.type!r}")


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


def take(spec_cls: type, cfg: Any, prefix: str = "", **over: Any) -> Any:
    """Build the library spec ``spec_cls`` from a flat experiment config: each of its fields from
    ``cfg.<prefix><field>`` or, failing that, ``cfg.<field>``; fields the config lacks keep their
    defaults; ``over`` wins.  One call instead of restating every field (a config that composes
    specs as nested dataclasses needs none of this)."""
    values = {}
    for f in dataclasses.fields(spec_cls):
        for name in (prefix + f.name, f.name) if prefix else (f.name,):
            if hasattr(cfg, name):
                values[f.name] = getattr(cfg, name)
                break
    return spec_cls(**(values | over))
