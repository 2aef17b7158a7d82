"""Settings from the environment: ``OCSP_STAPLER_<FIELD>`` for every field of a settings class.

Each component (operator, ingress) declares a frozen dataclass whose fields carry a default
and a docstring. ``from_environment`` reads ``OCSP_STAPLER_<FIELD_NAME_UPPER>`` for each field,
parses it by the field's type (str, int, float, bool, tuple of str as a comma list), and fails
at start with a message naming the variable, not later with a stack trace.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from ocsp_stapler.names import ENV_PREFIX

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def _parse(raw: str, kind: Any, var: str) -> Any:  # noqa: PLR0911 (one return per type)
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):  # Optional[X]: empty means None
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        return None if raw == "" else _parse(raw, inner[0], var)
    if origin is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if kind is bool:
        value = raw.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ConfigError(f"{var}={raw!r}: expected true or false")
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            raise ConfigError(f"{var}={raw!r}: expected a number") from None
    if typing.get_origin(kind) is typing.Literal:
        allowed = typing.get_args(kind)
        if raw not in allowed:
            raise ConfigError(f"{var}={raw!r}: expected one of {', '.join(map(str, allowed))}")
        return raw
    return raw


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def from_environment(cls: type[T], environ: Mapping[str, str], **overrides: Any) -> T:
    """Build ``cls`` from defaults, then the environment, then explicit overrides (CLI flags)."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        var = env_name(f.name)
        if var in environ:
            values[f.name] = _parse(environ[var], hints[f.name], var)
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = cls(**values)
    validate = getattr(settings, "validate", None)
    if validate is not None:
        validate()
    return settings
