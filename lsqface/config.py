"""Frozen-dataclass configuration read from TOML files.

Every configurable part of lsqface is a frozen dataclass whose defaults are the
paper's settings. ``from_dict`` builds one from a (nested) mapping such as a
parsed TOML file, checking every key and type so that a typo in a config file
is an error that names the key, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

from lsqface.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

T = TypeVar("T")


def read_toml(path: str | Path) -> dict:
    """Parse a TOML file, turning every failure into a ``ConfigError`` with the file's name."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} does not exist; pass the path of a TOML file such as configs/tiny.toml.") from None
    except OSError as error:
        raise ConfigError(f"Config file {path} cannot be read ({error.strerror}); check its permissions.") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"Config file {path} is not valid TOML ({error}); fix the line it names.") from None


def _convert(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"Config key '{where}' must be a table, not {value!r}.")
        return from_dict(annotation, value, prefix=where)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"Config key '{where}' has an invalid value {value!r}.")
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            choices = ", ".join(repr(choice) for choice in typing.get_args(annotation))
            raise ConfigError(f"Config key '{where}' must be one of {choices}, not {value!r}.")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"Config key '{where}' must be a list, not {value!r}.")
        args = typing.get_args(annotation)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(item, args[0], f"{where}[{i}]") for i, item in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"Config key '{where}' must have {len(args)} entries, not {len(value)}.")
            return tuple(_convert(item, arg, f"{where}[{i}]") for i, (item, arg) in enumerate(zip(value, args)))
        item_type = args[0] if args else Any
        return origin(_convert(item, item_type, f"{where}[{i}]") for i, item in enumerate(value))
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"Config key '{where}' must be a number, not {value!r}.")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"Config key '{where}' must be a whole number, not {value!r}.")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"Config key '{where}' must be true or false, not {value!r}.")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"Config key '{where}' must be a string, not {value!r}.")
        return value
    return value


def from_dict(cls: type[T], values: Mapping[str, Any], prefix: str = "") -> T:
    """Build the frozen dataclass ``cls`` from ``values``, recursing into nested dataclasses.

    Missing keys keep their defaults; unknown keys and wrongly typed values raise ``ConfigError``.
    """
    hints = typing.get_type_hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        known = ", ".join(sorted(fields))
        raise ConfigError(f"Unknown config key '{where}{unknown[0]}'; the keys here are: {known}.")
    kwargs = {}
    for name, value in values.items():
        where = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _convert(value, hints[name], where)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"Config section '{prefix or cls.__name__}' is invalid: {error}.") from None


def to_dict(config: Any) -> dict:
    """The plain nested dict of a dataclass config (for checkpoints and reports)."""
    return dataclasses.asdict(config)


def load_config(cls: type[T], path: str | Path) -> T:
    """Read the TOML file ``path`` into the frozen dataclass ``cls``."""
    return from_dict(cls, read_toml(path))
