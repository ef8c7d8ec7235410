"""Settings declared once: a dataclass field whose metadata says everything about it.

A field made with `setting(...)` carries its help text, its limits, its CLI flag,
its group in ``--help`` and whether it is part of what a measurement *is* (and so
of the config id). From that one declaration come

- `coerce`: YAML or flag values (strings, numbers, lists) to the field's type,
  with one line per problem (``repeats: must be >= 1, got 0``);
- `check`: the same rules applied to a record constructed directly in Python
  (types are not coerced there: ``"3"`` is not an integer);
- `add_flags` / `given`: the argparse flags and the values a command line gave;
- `keys`: the names a YAML file may use (the field's name, or its flag's).

So adding a setting is one field plus its test: the flag, the YAML key, the
validation and the ``--help`` line follow. The supported annotations are ``str``,
``bool``, ``int``, ``float`` (each optionally ``| None``); anything else needs a
`parse` function.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import numbers
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass
from typing import Any

from tilesweep.errors import UsageError

KEY = "tilesweep.setting"


@dataclass(frozen=True, slots=True, kw_only=True)
class Meta:
    """What `setting` stores in a field's metadata."""

    help: str
    minimum: float | None = None
    choices: tuple[str, ...] | None = None
    flag: str | bool = True  # True: --<name-with-dashes>; False: no flag; a string: that flag
    metavar: str | None = None
    group: str = ""
    measurement: bool = False  # part of what a config measures (and of its config id)
    # parse(name, raw) -> value for a type the generic rules do not know (lists, tilings).
    parse: Callable[[str, Any], Any] | None = None
    default_text: str | None = None  # the default as --help shows it; None: the field's default


def setting(default: Any = MISSING, *, help: str, minimum: float | None = None,
            choices: Iterable[str] | None = None, flag: str | bool = True, metavar: str | None = None,
            group: str = "", measurement: bool = False, parse: Callable[[str, Any], Any] | None = None,
            default_text: str | None = None) -> Any:
    """A dataclass field with its `Meta` (see the module docstring); no default makes it required."""
    meta = Meta(help=help, minimum=minimum, choices=tuple(choices) if choices is not None else None, flag=flag,
                metavar=metavar, group=group, measurement=measurement, parse=parse, default_text=default_text)
    return dataclasses.field(default=default, metadata={KEY: meta})


def meta(field: dataclasses.Field) -> Meta | None:
    return field.metadata.get(KEY)


def settings(cls: type) -> list[tuple[dataclasses.Field, Meta]]:
    """The declared settings of a dataclass (or instance): its own first, then the inherited ones, each in order."""
    own = vars(cls if isinstance(cls, type) else type(cls)).get("__annotations__", {})
    found = [(f, m) for f in dataclasses.fields(cls) if (m := meta(f)) is not None]
    return [fm for fm in found if fm[0].name in own] + [fm for fm in found if fm[0].name not in own]


def flag_of(field: dataclasses.Field) -> str | None:
    m = meta(field)
    if m is None or m.flag is False:
        return None
    return "--" + field.name.replace("_", "-") if m.flag is True else str(m.flag)


def keys(cls: type) -> dict[str, str]:
    """``{key a YAML file may use: field name}``: every setting's name, and its flag's name."""
    out = {f.name: f.name for f, _ in settings(cls)}
    for f, _ in settings(cls):
        flag = flag_of(f)
        if flag is not None:
            out.setdefault(flag.lstrip("-").replace("-", "_"), f.name)
    return out


def unknown_key(key: str, cls: type) -> str:
    """``unknown key 'modle' (did you mean 'model'?); allowed keys: ...``"""
    names = [f.name for f, _ in settings(cls)]
    close = difflib.get_close_matches(key, list(keys(cls)), n=1)
    hint = f" (did you mean {keys(cls)[close[0]]!r}?)" if close else ""
    return f"unknown key {key!r}{hint}; allowed keys: {', '.join(names)}"


# ----- types -----

def _kind(cls: type, field: dataclasses.Field) -> tuple[Any, bool]:
    """(base annotation, optional) of a field, e.g. ``(int, True)`` for ``int | None``."""
    annotation = typing.get_type_hints(cls)[field.name]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), True
    return annotation, False


_NAMES = {str: "a string", bool: "true or false", int: "an integer", float: "a number"}


def coerce(cls: type, name: str, value: Any) -> Any:
    """A YAML or flag value as the field `name` of `cls` holds it.

    Raises:
        UsageError: one line, ``<name>: <what is wrong>``.
    """
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    m = meta(field)
    assert m is not None, f"{cls.__name__}.{name} is not a setting"
    base, optional = _kind(cls, field)
    if value is None:
        if optional:
            return None
        raise UsageError(f"{name}: must be set ({_NAMES.get(base, base)})")
    if m.parse is not None:
        return m.parse(name, value)
    if base is str:
        if not isinstance(value, str):
            raise UsageError(f"{name}: must be a string, got {value!r} ({type(value).__name__})")
    elif base is bool:
        if not isinstance(value, bool):
            raise UsageError(f"{name}: must be true or false, got {value!r}")
    elif base in (int, float):
        value = number(name, value, base)
    else:  # pragma: no cover - a declaration error, found by the first test that builds the class
        raise TypeError(f"{cls.__name__}.{name}: {base!r} needs a parse function")
    _limits(name, value, m)
    return value


def number(name: str, value: Any, kind: type) -> int | float:
    """An int or float from a number or a numeric string (never a bool)."""
    if isinstance(value, bool):
        raise UsageError(f"{name}: must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = int(value) if kind is int else float(value)
        except ValueError:
            raise UsageError(f"{name}: must be {_NAMES[kind]}, got {value!r}") from None
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, numbers.Integral):
            raise UsageError(f"{name}: must be an integer, got {value!r} ({type(value).__name__})")
        return int(value)
    if not isinstance(value, numbers.Real):
        raise UsageError(f"{name}: must be a number, got {value!r} ({type(value).__name__})")
    return float(value)


def _limits(name: str, value: Any, m: Meta) -> None:
    if m.minimum is not None and value < m.minimum:
        raise UsageError(f"{name}: must be >= {m.minimum:g}, got {value!r}")
    if m.choices is not None and value not in m.choices:
        raise UsageError(f"{name}: {value!r} is not one of {', '.join(m.choices)}")


def check(record: Any) -> None:
    """Check a directly constructed record's settings: types as annotated, limits as declared.

    Raises:
        UsageError: the first bad field, as ``<Class>.<name>: <what is wrong>``.
    """
    cls = type(record)
    for field, m in settings(cls):
        value = getattr(record, field.name)
        base, optional = _kind(cls, field)
        where = f"{cls.__name__}.{field.name}"
        if value is None:
            if optional:
                continue
            raise UsageError(f"{where}: must be set ({_NAMES.get(base, base)}), got None")
        if m.parse is not None:
            continue  # composite values are checked where they are parsed
        fits = {
            str: isinstance(value, str),
            bool: isinstance(value, bool),
            int: isinstance(value, numbers.Integral) and not isinstance(value, bool),
            float: isinstance(value, numbers.Real) and not isinstance(value, bool),
        }.get(base, True)
        if not fits:
            raise UsageError(f"{where}: must be {_NAMES[base]}, got {value!r} ({type(value).__name__})")
        _limits(where, value, m)


def build(cls: type, values: Mapping[str, Any], *, base: Any = None, where: str = "") -> tuple[Any, list[str]]:
    """``cls`` (or `base` with `values` laid over it) from raw values, and one line per problem.

    Keys may be field names or flag names (dashes read as underscores). Returns
    ``(None, problems)`` when any value is bad; cross-field checks are the caller's.
    """
    aliases = keys(cls)
    prefix = f"{where}: " if where else ""
    coerced: dict[str, Any] = {}
    problems: list[str] = []
    for raw_key, value in values.items():
        key = str(raw_key).replace("-", "_")
        name = aliases.get(key)
        if name is None:
            problems.append(prefix + unknown_key(key, cls))
            continue
        try:
            coerced[name] = coerce(cls, name, value)
        except ValueError as exc:
            problems.append(prefix + str(exc))
    if problems:
        return None, problems
    return (dataclasses.replace(base, **coerced) if base is not None else cls(**coerced)), []


# ----- the command line -----

def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def add_flags(parser: argparse.ArgumentParser, cls: type, *, groups: Mapping[str, str] | None = None) -> None:
    """One flag per setting of `cls` that has one, every default None ("not given").

    Args:
        groups: ``{group name: title}`` in the order ``--help`` shows them; settings of
            a group not named here go to the parser itself.
    """
    sections = {name: parser.add_argument_group(title) for name, title in (groups or {}).items()}
    for field, m in sorted(settings(cls), key=lambda fm: list(sections).index(fm[1].group)
                           if fm[1].group in sections else len(sections)):
        flag = flag_of(field)
        if flag is None:
            continue
        shown = m.default_text if m.default_text is not None else (
            "" if field.default in (MISSING, None) else _shown(field.default))
        text = m.help + (f" (default {shown})" if shown else "")
        target = sections.get(m.group, parser)
        base, _ = _kind(cls, field)
        if base is bool:
            # Absent means "as the spec file or the run says", never False.
            target.add_argument(flag, dest=field.name, action="store_const", const=True, default=None, help=text)
        else:
            target.add_argument(flag, dest=field.name, default=None, choices=m.choices,
                                metavar=m.metavar or (None if m.choices else field.name.split("_")[0].upper()),
                                help=text)


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The settings of `cls` that the command line gave (flags left out are not in the dict)."""
    return {f.name: v for f, _ in settings(cls) if flag_of(f) and (v := getattr(args, f.name, None)) is not None}


def measurement_fields(cls: type) -> tuple[str, ...]:
    """The settings that define what a config measures (``measurement=True``), in field order."""
    return tuple(f.name for f, m in settings(cls) if m.measurement)
