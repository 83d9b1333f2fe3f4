"""Parsers of option values that several stage configs share (light: no numpy), so one spelling parses
the same way everywhere: comma lists from the CLI or lists from Python/YAML, and label priors."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from llmst.errors import ConfigError

PRIOR_WORDS = ("uniform", "estimated", "em")  # the words any stage's --prior may take (each stage says which)


def parse_floats(value: Any, option: str) -> list[float] | None:
    """'0.3,0.7' (CLI) or a list (Python, YAML) as floats; a bad value is a ConfigError naming `option`."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    parts = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, (list, tuple)):
        raise ConfigError(f"{option}: expected numbers separated by commas, not {value!r}")
    numbers = []
    for part in parts:
        text = str(part).strip()
        if not text:
            continue
        try:
            numbers.append(float(text))
        except ValueError as err:
            raise ConfigError(
                f"{option}: '{text}' is not a number", hint="give numbers separated by commas, e.g. 0.3,0.7"
            ) from err
    return numbers


def refuse_booleans(parts: list | tuple, option: str) -> None:
    """A ConfigError if a list of names holds booleans: YAML 1.1 (PyYAML) reads unquoted yes/no/on/off as
    booleans, so a config's `labels: [no, yes]` would otherwise become the labels 'False' and 'True'."""
    if any(isinstance(part, bool) for part in parts):
        raise ConfigError(
            f"{option}: {list(parts)} holds booleans, not names",
            hint="YAML reads unquoted yes/no/on/off/true/false as booleans: quote them, e.g. ['no', 'yes']",
        )


def parse_names(value: Any, option: str) -> list[str] | None:
    """'a,b' (CLI) or a list as stripped names; None (or nothing but commas) stays None."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, (list, tuple)):
        raise ConfigError(f"{option}: expected names separated by commas, not {value!r}")
    refuse_booleans(parts, option)
    names = [str(part).strip() for part in parts if str(part).strip()]
    return names or None


def normalize_prior(value: Any, words: tuple[str, ...] = ("uniform", "estimated")) -> str:
    """One of `words`, or shares as a canonical comma string ('0.3,0.7'); None is `uniform`."""
    if value is None:
        return "uniform"
    if isinstance(value, str) and value.strip() in words:
        return value.strip()
    hint = f"use {', '.join(words)}, or shares like --prior 0.3,0.7"
    if isinstance(value, str) and value.strip().replace(".", "").replace(",", "").replace(" ", "").isalpha():
        raise ConfigError(f"--prior: unknown value '{value.strip()}'", hint=hint)
    shares = parse_floats(value, "--prior") or []
    if not shares or min(shares) < 0 or sum(shares) <= 0:
        raise ConfigError("--prior shares must be non-negative and not all zero", hint=hint)
    return ",".join(str(share) for share in shares)


def prior_shares(value: str) -> str | list[float]:
    """A normalized prior as stages use it: "uniform", "estimated" or the list of shares."""
    return value if value in PRIOR_WORDS else (parse_floats(value, "--prior") or [])


def check_choices(config: Any) -> None:
    """Every `Literal` field of a config dataclass holds one of its choices (else one ConfigError)."""
    hints = typing.get_type_hints(type(config))
    for item in dataclasses.fields(config):
        choices = typing.get_args(hints[item.name]) if typing.get_origin(hints[item.name]) is Literal else ()
        value = getattr(config, item.name)
        if choices and value not in choices:
            option = "--" + item.name.replace("_", "-")
            raise ConfigError(f"{option}: unknown value '{value}'", hint="use one of: " + ", ".join(choices))


_NUMBERS = {int: "a whole number", float: "a number", bool: "true or false"}


def check_number_types(config_cls: type, values: Mapping[str, Any], where: str = "") -> None:
    """Values from a YAML file for the plain int, float or bool fields (optional ones too) of a config
    dataclass have that type (an int is a float too), else one ConfigError naming the option: `abc` or a
    quoted "5" would otherwise fail deep inside the config's validation with an unrelated TypeError."""
    hints = typing.get_type_hints(config_cls)
    for name, value in values.items():
        hint = hints.get(name)
        if hint is None or value is None:
            continue
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        kinds = [t for t in (typing.get_args(hint) if union else (hint,)) if t is not type(None)]
        if len(kinds) != 1 or kinds[0] not in _NUMBERS:
            continue
        kind = kinds[0]
        fits = isinstance(value, kind) or (kind is float and isinstance(value, int))
        if fits and (kind is bool or not isinstance(value, bool)):
            continue
        option = "--" + name.replace("_", "-")
        raise ConfigError(f"{where}{option}: expected {_NUMBERS[kind]}, got {value!r}")
