"""Plain-words errors for configs read from plain data (dicts, parsed YAML).

``dacite`` reports a wrong type as ``should be "list" instead of value
"<generator object ...>"``; :func:`from_dict` re-raises it as a
:class:`ConfigTypeError` that names the field path, the expected type in
plain words ("a list of strings") and the value that was given.
"""

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar, Union

import dacite

T = TypeVar("T")

_SINGULAR: dict[Any, tuple[str, str]] = {
    str: ("a string", "strings"),
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    bool: ("true or false", "true/false values"),
    Any: ("any value", "values"),
}


class ConfigTypeError(dacite.WrongTypeError, TypeError):
    """A config field holds a value of the wrong type; the message names the
    field path, the expected type in plain words and the value given.

    A ``dacite.WrongTypeError`` (for callers that catch it) and a ``TypeError``.
    """

    def __init__(self, message: str, field_type: Any, value: Any, field_path: str | None):
        super().__init__(field_type=field_type, value=value, field_path=field_path)
        self.message = message

    def __str__(self) -> str:
        return self.message


def plain_type(tp: Any, plural: bool = False) -> str:
    """``tp`` in plain words: ``list[str]`` -> "a list of strings"."""
    if tp in _SINGULAR:
        return _SINGULAR[tp][1 if plural else 0]
    if tp is type(None):
        return "nulls" if plural else "null"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        words = [plain_type(a, plural) for a in args if a is not type(None)]
        if type(None) in args:
            words.append("null")
        return " or ".join(words)
    if origin in (list, tuple, Sequence, set, frozenset):
        inner = plain_type(args[0], plural=True) if args else "values"
        return f"lists of {inner}" if plural else f"a list of {inner}"
    if origin in (dict, Mapping):
        key, value = (plain_type(a, plural=True) for a in args) if args else ("keys", "values")
        return f"mappings of {key} to {value}" if plural else f"a mapping of {key} to {value}"
    if dataclasses.is_dataclass(tp):
        name = getattr(tp, "__name__", str(tp))
        return f"mappings of {name} fields" if plural else f"a mapping of {name} fields"
    return str(tp)


def _is_instance(value: Any, tp: Any) -> bool:
    """A shallow check for the scalar types of config fields."""
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp in (str, bool):
        return isinstance(value, tp)
    return True


def _lookup(data: Any, path: str) -> Any:
    """The value at ``path`` ("a.b.c") in the plain data, as it was given."""
    for part in path.split("."):
        if not isinstance(data, Mapping) or part not in data:
            return None
        data = data[part]
    return data


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return "a string"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def describe(err: dacite.WrongTypeError, data: Mapping[str, Any]) -> str:
    """The plain-words message for dacite's ``err`` on ``data``."""
    path = err.field_path or "(top level)"
    tp = err.field_type
    value = _lookup(data, err.field_path) if err.field_path else err.value
    message = f"Config field {path} must be {plain_type(tp)}, got {value!r} ({_kind(value)})"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, tuple, Sequence) and args:
        if isinstance(value, str):
            message += f"; write a list, e.g. [{value}] in YAML or [{value!r}] in Python"
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                if not _is_instance(item, args[0]):
                    message += f"; item {i} is {item!r} ({_kind(item)}), not {plain_type(args[0])}"
                    break
    elif origin in (dict, Mapping) and len(args) == 2 and isinstance(value, Mapping):
        for key, item in value.items():
            if not _is_instance(key, args[0]):
                message += f"; key {key!r} is {_kind(key)}, not {plain_type(args[0])}"
                break
            if not _is_instance(item, args[1]):
                message += f"; {key!r} is {item!r} ({_kind(item)}), not {plain_type(args[1])}"
                break
    return message + "."


def from_dict(cls: type[T], data: Mapping[str, Any], config: dacite.Config) -> T:
    """``dacite.from_dict`` whose type errors are :class:`ConfigTypeError`."""
    if not isinstance(data, Mapping):
        raise ConfigTypeError(
            f"A {cls.__name__} config must be a mapping of its fields, got {data!r} "
            f"({_kind(data)}).",
            cls,
            data,
            None,
        )
    try:
        return dacite.from_dict(cls, dict(data), config=config)
    except dacite.WrongTypeError as err:
        if isinstance(err, ConfigTypeError):
            raise
        raise ConfigTypeError(
            describe(err, data), err.field_type, err.value, err.field_path
        ) from err
