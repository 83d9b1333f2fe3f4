"""Labeling functions: plain Python rules `record -> label name | index | None` (None abstains), registered
with `@labeling_function` in a user's file and loaded with `load_labeling_functions(path)`; each is one more
source for the label models (`llmst aggregate --labeling-functions FILE`).
"""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ABSTAIN = -1
LabelingFunction = Callable[[dict[str, Any]], Any]

_REGISTRY: dict[str, LabelingFunction] = {}


def labeling_function(fn: LabelingFunction | None = None, *, name: str | None = None) -> Any:
    """Register a labeling function: `record -> label name (or index) | None` (None abstains).

    Use as `@labeling_function` or `@labeling_function(name="has_refund")` in a file passed to
    `llmst aggregate --labeling-functions FILE`.
    """

    def register(func: LabelingFunction) -> LabelingFunction:
        key = name or func.__name__
        if key in _REGISTRY and _REGISTRY[key] is not func:
            raise ValueError(f"two labeling functions are named '{key}'; give one another name=")
        _REGISTRY[key] = func
        return func

    return register(fn) if fn is not None else register


def load_labeling_functions(path: str | Path) -> dict[str, LabelingFunction]:
    """Execute a user's Python file and return the functions it registered, by name (in definition order).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file registers no labeling function.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labeling-function file not found: {path}")
    module_name = f"llmst_user_lfs_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {path} as a Python file")
    module = importlib.util.module_from_spec(spec)
    saved = dict(_REGISTRY)
    _REGISTRY.clear()
    try:
        spec.loader.exec_module(module)
        found = dict(_REGISTRY)
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(saved)
    if not found:
        raise ValueError(
            f"{path} registers no labeling function: decorate functions with "
            "`@labeling_function` (from llmst.aggregate import labeling_function)"
        )
    return found


def apply_labeling_functions(
    records: Sequence[Mapping[str, Any]],
    functions: Mapping[str, LabelingFunction],
    label_names: Sequence[str],
) -> np.ndarray:
    """Run labeling functions over records.

    Returns
    -------
    np.ndarray
        Shape (N, L), int: class index, or -1 where a function abstained (returned None or "").

    Raises
    ------
    ValueError
        A function raised or returned something that is not a label name, a label index or None.
    """
    index = {name: i for i, name in enumerate(label_names)}
    out = np.full((len(records), len(functions)), ABSTAIN, dtype=np.int64)
    for column, (name, func) in enumerate(functions.items()):
        for row, record in enumerate(records):
            try:
                value = func(dict(record))
            except Exception as err:  # the user's code: report which function and row, then stop
                raise ValueError(
                    f"labeling function '{name}' raised {type(err).__name__}: {err} on record "
                    f"{record.get('id', row)!r}"
                ) from err
            if value is None or value == "" or value == ABSTAIN:
                continue
            if isinstance(value, str) and value in index:
                out[row, column] = index[value]
            elif (
                isinstance(value, (int, np.integer))
                and not isinstance(value, bool)
                and 0 <= value < len(index)
            ):
                out[row, column] = int(value)
            else:
                raise ValueError(
                    f"labeling function '{name}' returned {value!r} on record {record.get('id', row)!r}; "
                    f"return one of {list(label_names)} or None to abstain"
                )
    return out
