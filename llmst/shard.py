"""`--shard I/N`: a deterministic partition of a corpus's rows for job arrays (Slurm, Kubernetes).

Row r belongs to shard `sha256(key(r)) mod N`, where key(r) is the row's record id (`llmst.records.record_id`:
its `--id-field`, else a hash of its text), so the same row lands in the same shard on every machine, in every
Python process and after any reordering of the file. A row with no id and no text (a missing text field) and a
row the reader rejects (malformed JSON, a bad encoding) are keyed by their input line instead: every input row
belongs to exactly one shard, so the N shard outputs hold every labeled row and every reject exactly once.

Light: no numpy, no torch (configs import it).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any

from llmst.errors import ConfigError

# The input line (or row) of a sharded record, so `llmst merge` restores input order. Reserved: an input row
# that has this field is a reject (`llmst.label.run.Labeler.prepare`), so input fields always survive as given.
INPUT_LINE = "_llmst_input_line"
RESERVED_FIELD = (
    f"the field '{INPUT_LINE}' is reserved (sharded outputs record the input line in it); rename it"
)
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
SHARD_HINT = "e.g. --shard 0/4 (shard 0 of 4; shards are numbered 0 to N-1, as Slurm's SLURM_ARRAY_TASK_ID)"


def parse_shard(value: Any) -> tuple[int, int] | None:
    """'I/N' (0 <= I < N) as (I, N); None stays None; anything else is a ConfigError."""
    if value is None:
        return None
    match = _SHARD.match(str(value))
    if match is None:
        raise ConfigError(f"--shard: expected I/N, got {value!r}", hint=SHARD_HINT)
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise ConfigError(f"--shard {value}: need 0 <= I < N", hint=SHARD_HINT)
    return index, count


def normalize_shard(value: Any) -> str | None:
    """The canonical spelling 'I/N' of a shard option (so ' 1 / 4' and '1/4' sign alike)."""
    parsed = parse_shard(value)
    return None if parsed is None else f"{parsed[0]}/{parsed[1]}"


def shard_of(key: str, count: int) -> int:
    """The shard (0..count-1) of a row key: a stable hash (sha256), the same in every process."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def row_key(item: Any, text_fields: Sequence[str], id_field: str) -> str:
    """The key a reader item (`Row` or `Reject`) is sharded by: its record id, else its input line."""
    from llmst.readers import Row
    from llmst.records import record_id, record_text

    if isinstance(item, Row):
        text = record_text(item.record, text_fields)
        if text is not None:
            return record_id(item.record, text, id_field)
        value = item.record.get(id_field)
        if value is not None and value != "":
            return str(value)
    return f"line:{item.line}"


def shard_filter(
    shard: str | None, text_fields: Sequence[str], id_field: str
) -> Callable[[Any], bool] | None:
    """A predicate keeping the reader items of `shard` ('I/N'); None (keep everything) when not sharded."""
    parsed = parse_shard(shard)
    if parsed is None:
        return None
    index, count = parsed
    return lambda item: shard_of(row_key(item, text_fields, id_field), count) == index
