"""Content-addressed cache of model answers (sqlite).

The key is a hash of everything that changes an answer (`score_key`): the backend, the model and the
fingerprint of its weights (content hash, or the hub snapshot commit), the dtype actually computed in, the
device kind (CPU and GPU kernels round differently, so their scores are not interchangeable bit for bit),
the backend's scoring mode, the full rendered prompt, where its shared prefix ends (tokenized apart), and
the candidates. Only successful answers are stored: a failed call is never cached.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any


def cache_key(**parts: Any) -> str:
    """Stable sha256 over JSON-serialised parts (sorted keys)."""
    payload = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def score_key(backend: Any, prompt: str, prefix_chars: int, candidates: tuple[str, ...] | list[str]) -> str:
    """Cache key of one scoring request (`backend` follows `llmst.backends.base.Backend`)."""
    return cache_key(
        kind="score",
        backend=backend.name,
        model=backend.model_id,
        fingerprint=backend.fingerprint,
        dtype=getattr(backend, "dtype", None),
        device=getattr(backend, "device_kind", None),
        scoring=getattr(backend, "scoring", None),  # e.g. the openai backend's token ids vs text prompts
        prompt=prompt,
        prefix_chars=prefix_chars,  # the prefix is tokenized on its own
        candidates=list(candidates),
    )


class AnswerCache:
    """A key -> JSON value store. `path=None` gives an in-memory cache (nothing persisted)."""

    def __init__(self, path: Path | None):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path else ":memory:", timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.commit()

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT key, value FROM answers WHERE key IN ({marks})", chunk)
            found.update((key, json.loads(value)) for key, value in rows)
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO answers (key, value) VALUES (?, ?)",
            [(key, json.dumps(value)) for key, value in items.items()],
        )
        self._db.commit()

    def __bool__(self) -> bool:  # an empty cache is still a cache (`if cache:` must not read its size)
        return True

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self._db.close()
