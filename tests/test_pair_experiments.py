"""The pair experiments on tiny random-init BERTs: `llmst augsbert` and `llmst transencoder` end to end, reruns
that recompute nothing or only what changed, config errors, the leak guard, and the bi-encoder teacher."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import read_lines, write_jsonl

from llmst.pairs.config import ScoreConfig, parse_teacher, teacher_name
from llmst.pairs.score import score_pairs
from llmst.pairs.teachers import cosine_to_target


def test_cosine_to_target_clips_to_the_unit_interval():
    assert cosine_to_target(np.array([-0.3, 0.0, 0.42, 1.0])).tolist() == [0.0, 0.0, 0.42, 1.0]


def test_a_bi_encoder_teacher_scores_the_clipped_cosine_of_its_embeddings(tmp_path, tiny_bert_dir):
    from sentence_transformers import SentenceTransformer

    pairs = [
        {"id": "p0", "text_a": "a red car", "text_b": "a red car"},
        {"id": "p1", "text_a": "a red car", "text_b": "the stock market fell sharply"},
        {"id": "p2", "text_a": "two dogs run", "text_b": "dogs are running"},
    ]
    source = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    spec = f"bi-encoder:{tiny_bert_dir}"
    assert parse_teacher(spec) == ("bi-encoder", tiny_bert_dir)
    config = ScoreConfig(teachers=spec, progress=False, cache=False)
    score_pairs(source, tmp_path / "scored.jsonl", config)
    scored = read_lines(tmp_path / "scored.jsonl")
    # by hand: mean-pooled embeddings of each text, cosine, clipped to [0, 1]
    model = SentenceTransformer(tiny_bert_dir)
    a = model.encode([p["text_a"] for p in pairs])
    b = model.encode([p["text_b"] for p in pairs])
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    expected = np.clip(cosine, 0, 1)
    name = teacher_name(spec)
    assert [r["id"] for r in scored] == ["p0", "p1", "p2"]
    assert [r["scores"][name] for r in scored] == pytest.approx(expected.tolist(), abs=1e-5)
    assert [r["score"] for r in scored] == pytest.approx(expected.tolist(), abs=1e-5)
    assert scored[0]["score"] == pytest.approx(1.0, abs=1e-5)
    # a bi-encoder and a cross-encoder teacher of the same folder are different teachers (cache, signature)
    from llmst.pairs.teachers import teacher_identity

    assert teacher_identity(spec, config) != teacher_identity(f"cross-encoder:{tiny_bert_dir}", config)
