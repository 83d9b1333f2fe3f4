"""A BERT encoder exported to ONNX, rewritten as a transformers + sentence-transformers folder.

Some bundled encoders ship only as an ONNX graph (paraphrase-MiniLM-L3-v2). `convert_onnx_bert` copies the
graph's initializers into the tensor names `transformers.BertModel` uses and writes `config.json`,
`model.safetensors`, the tokenizer files of a base BERT folder with the same vocabulary, and the
sentence-transformers files (Transformer + mean Pooling). The ONNX file is read with a small protobuf
reader (only initializers and nodes are needed), so neither `onnx` nor torch is imported: numpy and
safetensors only. The export has no pooler (sentence-transformers never uses it); transformers initializes
one when a model with a pooler head is loaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Bump when convert_onnx_bert changes what it writes (the converted folder's cache name includes it).
ONNX_BERT_CONVERSION = "onnx-bert-v1"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
# ONNX TensorProto data types -> numpy
_DTYPES = {1: np.float32, 6: np.int32, 7: np.int64, 10: np.float16, 11: np.float64}
_BERT_NAME = re.compile(r"(?:^|\.)((?:embeddings|encoder|pooler)\..+)$")


@dataclass
class Node:
    """An ONNX graph node: its op, name, inputs and float attributes (e.g. LayerNormalization epsilon)."""

    op: str
    name: str
    inputs: list[str]
    floats: dict[str, float] = field(default_factory=dict)


def _varint(data: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _fields(data: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Protobuf wire format: (field number, wire type, varint value or bytes) for each field."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        value: int | memoryview
        if wire == 0:
            value, i = _varint(data, i)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = data[i : i + size], i + size
        elif wire == 2:
            size, i = _varint(data, i)
            value, i = data[i : i + size], i + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _buf(value: int | memoryview) -> memoryview:
    if not isinstance(value, memoryview):
        raise ValueError("malformed ONNX file: expected a length-delimited field")
    return value


def _int(value: int | memoryview) -> int:
    if not isinstance(value, int):
        raise ValueError("malformed ONNX file: expected a varint field")
    return value


def _text(value: int | memoryview) -> str:
    return bytes(_buf(value)).decode()


def _packed_varints(data: memoryview) -> Iterator[int]:
    i = 0
    while i < len(data):
        value, i = _varint(data, i)
        yield value


def _tensor(data: memoryview) -> tuple[str, np.ndarray]:
    """A TensorProto: dims (1), data_type (2), float_data (4, packed), name (8), raw_data (9)."""
    dims: list[int] = []
    dtype, name, raw = 1, "", None
    floats: list[np.ndarray] = []
    for number, wire, value in _fields(data):
        if number == 1:  # unpacked (proto2's default) or packed
            dims.extend([_int(value)] if wire == 0 else _packed_varints(_buf(value)))
        elif number == 2:
            dtype = _int(value)
        elif number == 4 and wire == 2:
            floats.append(np.frombuffer(_buf(value), dtype="<f4"))
        elif number == 8:
            name = _text(value)
        elif number == 9:
            raw = _buf(value)
        elif number == 14 and value == 1:
            raise ValueError("ONNX tensors stored as external data are not supported")
    if dtype not in _DTYPES:
        raise ValueError(f"ONNX tensor {name!r} has unsupported data type {dtype}")
    if raw is not None:
        array = np.frombuffer(raw, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<"))
    elif floats:
        array = np.concatenate(floats)
    else:
        array = np.zeros(0, dtype=_DTYPES[dtype])
    return name, array.reshape(dims)


def _node(data: memoryview) -> Node:
    """A NodeProto: input (1), name (3), op_type (4), attribute (5: name 1, float f 2)."""
    node = Node("", "", [])
    for number, _, value in _fields(data):
        if number == 1:
            node.inputs.append(_text(value))
        elif number == 3:
            node.name = _text(value)
        elif number == 4:
            node.op = _text(value)
        elif number == 5:
            attribute = {n: v for n, _, v in _fields(_buf(value))}
            if 2 in attribute and 1 in attribute:
                (value32,) = struct.unpack("<f", _buf(attribute[2]))
                # float32 1e-12 read back as 1e-12, not as its float64 neighbour
                node.floats[_text(attribute[1])] = float(f"{value32:.7g}")
    return node


def read_onnx(path: Path) -> tuple[dict[str, np.ndarray], list[Node]]:
    """The graph's initializers (name -> array, read-only views of the file) and nodes, in graph order."""
    data = memoryview(Path(path).read_bytes())
    graphs = [_buf(value) for number, _, value in _fields(data) if number == 7]  # ModelProto.graph
    if not graphs:
        raise ValueError(f"{path} holds no ONNX graph")
    initializers: dict[str, np.ndarray] = {}
    nodes: list[Node] = []
    for number, _, value in _fields(graphs[0]):
        if number == 1:  # GraphProto.node
            nodes.append(_node(_buf(value)))
        elif number == 5:  # GraphProto.initializer
            name, array = _tensor(_buf(value))
            initializers[name] = array
    return initializers, nodes


def bert_state_dict(initializers: Mapping[str, np.ndarray], nodes: Sequence[Node]) -> dict[str, np.ndarray]:
    """BertModel tensors from an exported graph. Named initializers keep their name after the module
    prefix (`model.0.auto_model.embeddings...` -> `embeddings...`); the exporter's anonymous MatMul weights
    (`onnx::MatMul_470`) take the name of the node that uses them, transposed to torch's (out, in)."""
    state: dict[str, np.ndarray] = {}
    for name, array in initializers.items():
        found = _BERT_NAME.search(name)
        if found and array.dtype.kind == "f":
            state[found.group(1)] = array
    for node in nodes:
        if node.op != "MatMul" or len(node.inputs) != 2 or node.inputs[1] not in initializers:
            continue
        found = _BERT_NAME.search(node.name.replace("/", ".").removesuffix(".MatMul"))
        if found is None:
            raise ValueError(f"cannot name the weight of MatMul node {node.name!r}")
        state[found.group(1) + ".weight"] = initializers[node.inputs[1]].T
    required = [f"embeddings.{n}.weight" for n in ("word_embeddings", "position_embeddings", "LayerNorm")]
    missing = [name for name in required if name not in state]
    if missing or not _layers(state):
        raise ValueError("not a BERT encoder graph: missing " + (", ".join(missing) or "encoder layers"))
    return {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in sorted(state.items())}


def _layers(state: Mapping[str, np.ndarray]) -> int:
    indices = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.layer\.(\d+)\.", k))}
    return max(indices) + 1 if indices else 0


def bert_config(
    state: Mapping[str, np.ndarray], base: Mapping[str, Any], layer_norm_eps: float | None = None
) -> dict[str, Any]:
    """`config.json` for `state`: sizes from the tensors' shapes, the rest (heads, activation) from `base`."""
    vocab, hidden = state["embeddings.word_embeddings.weight"].shape
    config = {k: v for k, v in base.items() if k not in ("_name_or_path", "transformers_version")}
    config.update(
        architectures=["BertModel"],
        model_type="bert",
        vocab_size=int(vocab),
        hidden_size=int(hidden),
        num_hidden_layers=_layers(state),
        intermediate_size=int(state["encoder.layer.0.intermediate.dense.weight"].shape[0]),
        max_position_embeddings=int(state["embeddings.position_embeddings.weight"].shape[0]),
    )
    if "embeddings.token_type_embeddings.weight" in state:
        config["type_vocab_size"] = int(state["embeddings.token_type_embeddings.weight"].shape[0])
    if layer_norm_eps is not None:
        config["layer_norm_eps"] = layer_norm_eps
    heads = int(config.get("num_attention_heads", 0))
    if heads <= 0 or hidden % heads:
        raise ValueError(f"base config's num_attention_heads ({heads}) does not divide hidden size {hidden}")
    return config


def sentence_transformer_files(hidden: int, max_seq_length: int) -> dict[str, Any]:
    """sentence-transformers files for Transformer + mean Pooling (no Normalize), as paraphrase models use."""
    return {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ],
        "sentence_bert_config.json": {"max_seq_length": max_seq_length, "do_lower_case": False},
        "1_Pooling/config.json": {
            "word_embedding_dimension": hidden,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        },
    }


def write_bert_folder(
    state: Mapping[str, np.ndarray],
    config: Mapping[str, Any],
    tokenizer_dir: Path,
    out_dir: Path,
    max_seq_length: int = 128,
) -> Path:
    """Write the HF + sentence-transformers folder `out_dir` (atomic: it appears whole or not at all)."""
    from safetensors.numpy import save_file

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=out_dir.name + ".tmp-"))
    try:
        save_file(dict(state), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        files = {
            "config.json": config,
            **sentence_transformer_files(int(config["hidden_size"]), max_seq_length),
        }
        for name, content in files.items():
            (tmp / name).parent.mkdir(exist_ok=True)
            (tmp / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
        for name in TOKENIZER_FILES:
            if (tokenizer_dir / name).is_file():
                shutil.copyfile(tokenizer_dir / name, tmp / name)
        try:
            os.replace(tmp, out_dir)
        except OSError:  # another process may have written it first
            if not (out_dir / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def convert_onnx_bert(onnx_file: Path, base_dir: Path, out_dir: Path) -> Path:
    """Convert an exported BERT encoder into `out_dir`, with the tokenizer and head count of `base_dir`."""
    initializers, nodes = read_onnx(onnx_file)
    state = bert_state_dict(initializers, nodes)
    eps = [n.floats["epsilon"] for n in nodes if n.op == "LayerNormalization" and "epsilon" in n.floats]
    base = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    return write_bert_folder(state, bert_config(state, base, eps[0] if eps else None), base_dir, out_dir)
