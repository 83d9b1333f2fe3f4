"""The stage contract shared by every stage: config signatures, input fingerprints, output markers.

A stage is a typed config dataclass plus a pure `run(inputs, out, config) -> Report`. A config field is
part of the stage's signature unless its metadata says `"runtime": True` (batch size, progress, cache
location, overwrite: what changes how fast or where, never what). `signature(config, inputs)` hashes the
signature fields and the content fingerprints of the inputs; every output records it in a marker file
(`OUT.signature.json`, or `OUT/llmst_signature.json` for a folder), and orchestrations (selftrain, eval
scripts) rerun exactly the stages whose signature differs from the one on disk (the design of distilabel's
step signatures).

Nothing here imports torch: configs and signatures are cheap to import and compute.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SIGNATURE_VERSION = 1
FOLDER_MARKER = "llmst_signature.json"
# Files at most this large are hashed whole; larger ones by size, mtime and their first and last MiB.
FULL_HASH_BYTES = 64 << 20
_SKIP_IN_FOLDERS = {FOLDER_MARKER, "checkpoints"}


def runtime(help: str, **extra: Any) -> dict[str, Any]:
    """Field metadata of an option that never changes a stage's output (left out of its signature)."""
    return {"help": help, "runtime": True, **extra}


def only_if(help: str, field: str, value: Any, **extra: Any) -> dict[str, Any]:
    """Field metadata of an option that matters only while option `field` equals `value` (or is one of
    `value`, a tuple).

    Otherwise the option is left out of the signature, so e.g. `--logconf-weight` does not re-key every
    `--loss ce` run. The option still parses and validates either way.
    """
    return {"help": help, "only_if": (field, value), **extra}


def only_if_set(help: str, **extra: Any) -> dict[str, Any]:
    """Field metadata of an option that is part of the signature only when it is set (not None), so adding
    it (e.g. `--shard`) leaves the signatures of the outputs made without it unchanged."""
    return {"help": help, "only_if_set": True, **extra}


def check_encoding(encoding: str) -> None:
    """A ConfigError unless `encoding` names a codec Python knows (the `--encoding` of text inputs)."""
    import codecs

    from llmst.errors import ConfigError

    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise ConfigError(
            f"unknown --encoding '{encoding}'", hint="e.g. utf-8 (the default), latin-1, cp1252, utf-16"
        ) from None


def signature_fields(config: Any) -> dict[str, Any]:
    """The config's fields that change the output, as a JSON-able dict."""
    values = {}
    for item in dataclasses.fields(config):
        if item.metadata.get("runtime"):
            continue
        if item.metadata.get("only_if_set") and getattr(config, item.name) is None:
            continue
        condition = item.metadata.get("only_if")
        if condition:
            current, wanted = getattr(config, condition[0]), condition[1]
            if current not in (wanted if isinstance(wanted, tuple) else (wanted,)):
                continue
        values[item.name] = getattr(config, item.name)
    return json.loads(json.dumps(values, default=str))


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    stat = path.stat()
    with open(path, "rb") as handle:
        if stat.st_size <= FULL_HASH_BYTES:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        else:  # a cheap, still content-based identity for big files (weights, large corpora)
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
            digest.update(handle.read(1 << 20))
            handle.seek(-(1 << 20), os.SEEK_END)
            digest.update(handle.read())
    return digest.hexdigest()


def fingerprint(source: str | Path) -> str:
    """Content fingerprint of a file or folder (or the spec itself for `hf:` / hub names).

    Files up to 64 MiB are hashed whole; larger files by size, mtime and their first and last MiB. A folder
    is the fingerprint of its files' relative paths and contents (llmst's markers and checkpoints left out).
    """
    spec = str(source)
    path = Path(spec).expanduser()
    if spec.startswith("hf:") or not path.exists():
        return hashlib.sha256(f"name:{spec}".encode()).hexdigest()[:16]
    digest = hashlib.sha256()
    if path.is_file():
        digest.update(_file_digest(path).encode())
    else:
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            relative = file.relative_to(path)
            if relative.parts[0] in _SKIP_IN_FOLDERS or file.name.endswith(".signature.json"):
                continue
            digest.update(f"{relative.as_posix()}:{_file_digest(file)}".encode())
    return digest.hexdigest()[:16]


def signature(
    stage: str, config: Any, inputs: Mapping[str, str | Path | None] | None = None, **extra: Any
) -> str:
    """Hash of a stage's name, its config's signature fields, its inputs' fingerprints and `extra`."""
    payload = {
        "version": SIGNATURE_VERSION,
        "stage": stage,
        "config": signature_fields(config) if dataclasses.is_dataclass(config) else config,
        "inputs": {k: (fingerprint(v) if v is not None else None) for k, v in (inputs or {}).items()},
        "extra": json.loads(json.dumps(extra, default=str)),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def marker_path(out: str | Path) -> Path:
    """Where the signature of output `out` is kept."""
    out = Path(out)
    if out.is_dir():
        return out / FOLDER_MARKER
    return out.with_name(out.name + ".signature.json")


def write_marker(out: str | Path, sig: str, **details: Any) -> None:
    """Record that `out` is complete and was computed under signature `sig` (written last, atomically)."""
    from llmst.records import write_json_atomic

    path = marker_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"signature": sig, **json.loads(json.dumps(details, default=str))})


def read_marker(out: str | Path) -> str | None:
    """The signature recorded for `out`, or None when it is missing, incomplete or unreadable."""
    path = marker_path(out)
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("signature")
    except (OSError, ValueError, AttributeError):
        return None


def is_current(out: str | Path, sig: str) -> bool:
    """True when `out` exists and was completed under signature `sig` (so a rerun may reuse it)."""
    return Path(out).exists() and read_marker(out) == sig


def clear_marker(out: str | Path) -> None:
    """Forget that `out` is complete (before it is recomputed)."""
    marker_path(out).unlink(missing_ok=True)


def _options_yaml_loader():
    """PyYAML's safe loader, with floats as YAML 1.2 writes them: PyYAML (YAML 1.1) reads `1e-5` and `2E3`,
    which have no dot, as strings, so `learning_rate: 1e-5` would reach a config as "1e-5"."""
    import re

    import yaml

    class OptionsYamlLoader(yaml.SafeLoader):
        pass

    OptionsYamlLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )
    return OptionsYamlLoader


def read_options_file(path: str | Path, what: str) -> dict[str, Any]:
    """A YAML file holding a mapping of options (for `--config FILE.yaml` and `llmst selftrain`)."""
    import yaml

    from llmst.errors import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_options_yaml_loader()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{what} {path} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must be a YAML mapping of option names to values")
    return data
