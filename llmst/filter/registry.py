"""The selector registry of `llmst filter`: method name -> `fn(data, config) -> Selection`.

Each entry is a thin adapter: it takes the arrays the stage read (`FilterData`) and the config, calls the
public, tested selector functions of this package (`select_balanced`, `certify_precision`, ...), and returns
the mask with what the report needs. Entries never read or write files (the stage does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from llmst.errors import ConfigError
from llmst.records import Labeled, label_index

if TYPE_CHECKING:
    from llmst.filter.config import FilterConfig


@dataclass
class FilterData:
    """The arrays a selector works on."""

    pool: Labeled  # the rows to select from
    calibration: Labeled | None = None  # gold-labeled rows only, label columns in the pool's order
    calibration_skipped: int = 0  # calibration rows without a usable gold label (left out)


@dataclass
class Selection:
    """What a selector returns: the mask (N,) and the report's method details."""

    mask: np.ndarray
    details: dict[str, Any] = field(default_factory=dict)
    ranking: np.ndarray | None = None  # (N,) trust order for the pool's precision-coverage curve
    guarantee: dict[str, Any] | None = None
    calibration_curve: dict[str, Any] | None = None


Selector = Callable[[FilterData, "FilterConfig"], Selection]


@dataclass(frozen=True)
class SelectorSpec:
    name: str
    fn: Selector
    fields: Callable[[FilterConfig], list[str]]  # record fields the selector needs besides probs


SELECTORS: dict[str, SelectorSpec] = {}


def register_selector(
    name: str, *, fields: Callable[[FilterConfig], list[str]] | None = None
) -> Callable[[Selector], Selector]:
    """Decorator: register `fn(data, config) -> Selection` as `llmst filter --method NAME`."""

    def register(fn: Selector) -> Selector:
        SELECTORS[name] = SelectorSpec(name, fn, fields or (lambda config: []))
        return fn

    return register


def get_selector(name: str) -> SelectorSpec:
    """The registered selector `name` (the built-in ones are registered on first use)."""
    import llmst.filter.calibrated  # noqa: F401  (registers conformal, learned, student-oof)
    import llmst.filter.selectors  # noqa: F401  (registers the others)

    if name not in SELECTORS:
        raise ConfigError(f"unknown filter method '{name}'", hint=f"use one of {', '.join(SELECTORS)}")
    return SELECTORS[name]


def source_matrix(data: Labeled, sources_field: str) -> tuple[np.ndarray, list[str]]:
    """Per-source labels (N, S) from each record's `sources_field` ({source: label}); None abstains.

    A value that is not one of the labels is a `ConfigError` naming the row and the source.
    """
    values = data.columns.get(sources_field) or []
    rows = [value if isinstance(value, dict) else {} for value in values]
    names: list[str] = list(dict.fromkeys(key for row in rows for key in row))
    matrix = np.full((len(rows), len(names)), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        for j, name in enumerate(names):
            value = row.get(name)
            if value is None:
                continue
            index = label_index(value, data.names)
            if index < 0:
                raise ConfigError(
                    f"{data.where(i)}: field '{sources_field}': source '{name}' gives the unknown label "
                    f"{value!r}",
                    hint=f"labels are {data.names}",
                )
            matrix[i, j] = index
    return matrix, names
