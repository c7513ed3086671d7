"""Typed experiment configs and ``key=value`` overrides from the command line.

Every experiment config is a frozen dataclass whose ``__post_init__`` validates its values and raises
:class:`~dynamics.errors.UserError`; so any config that exists is valid, and a bad ``--set`` fails
before anything runs or is written.  A field's help text lives in ``field(metadata={"help": ...})``.

**Specs.**  A field whose type is itself a frozen dataclass (a *spec*, e.g. the data model
:class:`dynamics.scan_snap.data.SyntheticSpec`) is composed, not restated::

    @dataclasses.dataclass(frozen=True)
    class SynConfig:
        data: SyntheticSpec = field(SyntheticSpec(), "data model")
        eta_z: float = field(1.0, "learning rate of Z")

Its keys have qualified names (``data.num_last``, to any depth).  Every function here that takes a key
(:func:`build`, :func:`coerce`, :func:`resolve`, :func:`get`; so ``--set``, ``--grid``,
``dyn.run(**overrides)`` and ``dyn.sweep(grid=...)``) accepts, in this order: the qualified name; a
top-level field's own name; or any dotted suffix of a qualified name that names exactly one key
(the bare ``num_last`` when no other key at any depth is called ``num_last``).  A suffix that names
several keys is a UserError listing the qualified choices.  A spec is rebuilt with its new values, so
its own ``__post_init__`` validation runs, then the config's.  Grid keys, table columns and the cell
hash use each key's *short name*: the shortest suffix that resolves to it (:func:`short_name`), so
moving flat fields into a spec changes neither the tables nor the claim fingerprints when the names stay
unique.  The cell hash does change when the spec brings fields the flat config did not have (derived
fields, a spec default that was no key before): ``--resume`` into a directory written before the move
then refuses with a config difference instead of mixing cells.  Results store the nested structure (``dataclasses.asdict``); :func:`build` reads it back, and
also the flat configs that results written before a field moved into a spec hold.

**Derived spec fields.**  A spec field of a library spec whose value the config sets itself (the
model's ``canvas`` is the scenes' ``canvas``; a learning rate chosen per replica) is named in
``field(spec, help, derived=("canvas", ...))``: it is no key (not listed, not settable), and the
config's ``__post_init__`` fills it in with ``dataclasses.replace``, which also validates the spec (not
validated before, while a derived field may still hold the old value), so a shared quantity has one key.

**Renamed keys.**  A config class may map old key names to their keys in a class variable
``RENAMED: ClassVar[dict[str, str]]`` (``{"plane_objects": "plane.objects"}``): a name that is no
key, or names several, is looked up there, so the flat configs of results written before the move
build, and claim inputs written under the old names keep their values and fingerprints.

**Bare names that would mislead.**  ``QUALIFY: ClassVar[dict[str, str]]`` lists bare names that are
unique suffixes but that a user would read as something else (dacdetr-gather's bare ``lr`` is the
probe's rate, not the training rates ``lrs``): such a name must be written qualified, and the bare one
is a UserError carrying the class's hint.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import typing
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from .errors import UserError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def field(default: Any, help: str, derived: tuple[str, ...] = (), **kw: Any) -> Any:
    """A dataclass field with a help string (shown by ``dynamics describe EXP``).  A spec field takes
    the spec's instance as its default: ``field(SyntheticSpec(num_last=1), "data model")``; ``derived``
    names the spec's fields that the config sets itself (no keys, see the module docstring)."""
    metadata = {"help": help, "derived": tuple(derived)} if derived else {"help": help}
    return dataclasses.field(default=default, metadata=metadata, **kw)


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def is_spec(tp: Any) -> bool:
    """A field type that is itself a dataclass: its fields are nested config keys."""
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


class Key(NamedTuple):
    """One config key: its path from the config class, declared type, help text, and whether it is a
    spec (whose own fields are further keys)."""

    path: tuple[str, ...]
    type: Any
    help: str
    spec: bool

    @property
    def name(self) -> str:
        return ".".join(self.path)


@functools.cache
def keys(cls: type) -> dict[str, Key]:
    """Every key of ``cls`` by qualified name, specs and their fields alike, in declaration order (a
    spec's derived fields are none)."""
    out: dict[str, Key] = {}

    def walk(c: type, prefix: tuple[str, ...], derived: tuple[str, ...] = ()) -> None:
        types = field_types(c)
        for f in dataclasses.fields(c):
            if f.name in derived:
                continue
            tp = types[f.name]
            key = Key(prefix + (f.name,), tp, f.metadata.get("help", ""), is_spec(tp))
            out[key.name] = key
            if key.spec:
                walk(tp, key.path, f.metadata.get("derived", ()))

    walk(cls, ())
    return out


def leaves(cls: type) -> list[Key]:
    """The keys that hold values (every key but the specs themselves)."""
    return [k for k in keys(cls).values() if not k.spec]


def _matches(names: Iterable[str], key: str) -> list[str]:
    """Qualified names that ``key`` names: itself, else those it is a dotted suffix of."""
    names = list(names)
    if key in names:
        return [key]
    return [n for n in names if n.endswith("." + key)]


def _short_names(names: Iterable[str]) -> dict[str, str]:
    """Each qualified name's shortest dotted suffix that names it alone (see :func:`_matches`)."""
    names = list(names)
    out = {}
    for n in names:
        parts = n.split(".")
        out[n] = next(s for s in (".".join(parts[i:]) for i in range(len(parts) - 1, -1, -1))
                      if _matches(names, s) == [n])
    return out


def resolve(cls: type, key: str) -> Key:
    """The key ``key`` names (qualified, a top-level name, a unique suffix, or an old name in the
    class's ``RENAMED``); else a UserError that lists the qualified choices of an ambiguous key or
    suggests the closest known one."""
    table = keys(cls)
    hint = getattr(cls, "QUALIFY", {}).get(key.strip())
    if hint is not None:
        raise UserError(f"config key {key.strip()!r} is ambiguous here: {hint}")
    found = _matches(table, key.strip())
    if len(found) == 1:
        return table[found[0]]
    renamed = getattr(cls, "RENAMED", {})
    if key.strip() in renamed:
        return table[renamed[key.strip()]]
    if found:
        raise UserError(f"config key {key!r} is ambiguous: write one of {', '.join(found)}")
    raise unknown_key(cls, key)


def short_name(cls: type, key: str) -> str:
    """The name tables and grids use for ``key``: its shortest unambiguous suffix."""
    return _short_names(keys(cls))[resolve(cls, key).name]


def get(cfg: Any, key: str, default: Any = dataclasses.MISSING) -> Any:
    """The value of ``key`` (any accepted spelling) in config instance ``cfg``.  A name that is no key
    is looked up as an attribute (a derived property such as ``eta_y``); ``default`` when there is none
    (a UserError if no default is given)."""
    if dataclasses.is_dataclass(cfg):
        try:
            path = resolve(type(cfg), key).path
        except UserError:
            if default is dataclasses.MISSING and not hasattr(cfg, key):
                raise
        else:
            value = cfg
            for part in path:
                value = getattr(value, part)
            return value
    return getattr(cfg, key) if default is dataclasses.MISSING else getattr(cfg, key, default)


def flat(config: Mapping[str, Any]) -> dict[str, Any]:
    """A nested config dict (``dataclasses.asdict``, a manifest's config) as {short name: value}.  A
    flat config is returned as it is, so a flat config and its nested successor compare and hash alike
    while their names stay unique."""
    paths: dict[str, Any] = {}

    def walk(d: Mapping[str, Any], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, Mapping):
                walk(v, f"{prefix}{k}.")
            else:
                paths[f"{prefix}{k}"] = v

    walk(config, "")
    short = _short_names(paths)
    return {short[k]: v for k, v in paths.items()}


INT_MIN, INT_MAX = -(2 ** 63), 2 ** 63 - 1  # torch and numpy hold ints as int64


def is_seed_key(key: str) -> bool:
    """Keys that feed numpy's SeedSequence or count seeds: negative values make no sense."""
    key = key.rsplit(".", 1)[-1]
    return key == "seed" or key.endswith("_seed") or key == "seeds" or key.endswith("_seeds")


def coerce(cls: type, key: str, raw: Any) -> Any:
    """Convert ``raw`` (usually a string from the CLI) to the declared type of ``cls``'s key ``key``
    (any spelling :func:`resolve` accepts).

    Numbers are checked here, before any config is built: floats must be finite, integers must be
    whole numbers that fit in int64 (``1e3`` is accepted as 1000, ``1e400`` and ``2.5`` are not), and
    seeds are non-negative.  Anything else is a UserError naming the key.  A spec key takes an
    instance of the spec, or a mapping of its keys (as a manifest stores it), never a string.
    """
    k = resolve(cls, key)
    name, tp = k.name, k.type
    if k.spec:
        if isinstance(raw, tp):
            return raw
        if isinstance(raw, Mapping):
            return {sub: coerce(tp, sub, v) for sub, v in raw.items()}
        raise UserError(f"{name} is a group of keys: set them one by one ({name}.KEY=VALUE; "
                        "`dynamics describe EXP` lists them)")
    if not isinstance(raw, str):
        return _check_value(name, tp, raw)
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
            return check_int(name, parse_int(text))
        if tp is float:
            return check_float(name, float(text))
        if tp is str:
            return text
        origin = typing.get_origin(tp)
        if origin is typing.Literal:
            choices = typing.get_args(tp)
            if text not in choices:
                raise UserError(f"{name}={text!r} is not one of {', '.join(map(str, choices))}")
            return text
        if origin is tuple:
            (inner, *_) = typing.get_args(tp)
            return tuple(coerce_scalar(inner, part, name) for part in text.split(",") if part.strip())
    except (ValueError, OverflowError):
        raise UserError(f"{name}={text!r}: expected {type_name(tp)}") from None
    raise UserError(f"{name}: cannot be set from the command line")


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
    table = keys(cls)
    names = [n for n, k in table.items() if not k.spec]
    candidates = sorted(set(names) | {n.rsplit(".", 1)[-1] for n in names})
    close = difflib.get_close_matches(key, candidates, n=1)
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


def _paths(cls: type, overrides: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
    """``overrides`` coerced and keyed by path; a spec given whole (an instance or a mapping) is
    spread into its keys.  One key given twice under two spellings is a UserError."""
    out: dict[tuple[str, ...], Any] = {}
    given: dict[tuple[str, ...], str] = {}

    def put(path: tuple[str, ...], value: Any, spelled: str) -> None:
        if path in out:
            raise UserError(f"config key {'.'.join(path)} is given twice ({given[path]!r} and {spelled!r})")
        out[path], given[path] = value, spelled

    for key, raw in overrides.items():
        k = resolve(cls, key)
        value = coerce(cls, key, raw)
        if not k.spec:
            put(k.path, value, key)
            continue
        items = ({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
                 if isinstance(value, k.type) else value)
        for path, v in _paths(k.type, items).items():
            put(k.path + path, v, key)
    return out


def _default(cls: type, name: str) -> Any:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _apply(cls: type, base: Any, values: Mapping[tuple[str, ...], Any], check: bool = True) -> Any:
    """``base`` (or ``cls``'s defaults) with ``values`` set; specs are rebuilt (validated) first.  A spec
    with derived fields is not validated here (they may still hold the old values: the model's canvas
    before the new scenes' is copied in); its config validates it when filling them in."""
    top: dict[str, Any] = {}
    nested: dict[str, dict[tuple[str, ...], Any]] = {}
    for path, value in values.items():
        if len(path) == 1:
            top[path[0]] = value
        else:
            nested.setdefault(path[0], {})[path[1:]] = value
    types = field_types(cls)
    derived = {f.name: bool(f.metadata.get("derived")) for f in dataclasses.fields(cls)}
    for name, sub in nested.items():
        inner = getattr(base, name) if base is not None else _default(cls, name)
        top[name] = _apply(types[name], inner, sub, check=not derived[name])
    if not check:
        out = copy.copy(base)
        for name, value in top.items():
            object.__setattr__(out, name, value)
        return out
    return dataclasses.replace(base, **top) if base is not None else cls(**top)


def build(cls: type, overrides: Mapping[str, Any], base: Any = None) -> Any:
    """A validated config: ``base`` (or the defaults) with ``overrides`` coerced and applied.  Keys may
    be qualified, top-level or unique suffixes; a spec may be given as a mapping of its keys (the nested
    form of a manifest) or as an instance."""
    values = _paths(cls, overrides)
    try:
        cfg = _apply(cls, base, values)
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


def defaults(cls: type) -> dict[str, Any]:
    """Each value key's default by qualified name (a spec field's default instance supplies its keys')."""
    out = {}

    def walk(c: type, inst: Any, prefix: str) -> None:
        types = field_types(c)
        for f in dataclasses.fields(c):
            value = getattr(inst, f.name) if inst is not None else _default(c, f.name)
            if is_spec(types[f.name]):
                walk(types[f.name], value, f"{prefix}{f.name}.")
            else:
                out[f"{prefix}{f.name}"] = value

    walk(cls, None, "")
    return out


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """(qualified name, type, default, help) for each value key, for ``dynamics describe`` and the README."""
    table = keys(cls)
    values = defaults(cls)
    rows = []
    for name, k in table.items():
        if k.spec:
            continue
        rows.append((name, type_name(k.type), values[name], k.help))
    return rows

