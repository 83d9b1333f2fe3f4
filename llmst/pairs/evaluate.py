"""How well a pair model's scores follow gold pair scores: Spearman and Pearson correlation.

The bi-encoder's score is the cosine of the two embeddings (sentence-transformers' `EmbeddingSimilarityEvaluator`),
the cross-encoder's its predicted score (`CrossEncoderCorrelationEvaluator`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from llmst.errors import ConfigError
from llmst.pairs.data import read_scored_pairs

PairModelKind = Literal["bi-encoder", "cross-encoder"]


def pair_model_kind(model: str | Path) -> PairModelKind:
    """A folder's kind: from its llmst card, else a sentence-transformers bi-encoder folder (modules.json)."""
    from llmst.models import resolve_model
    from llmst.train.model import STUDENT_FILE

    path = Path(resolve_model(str(model)).path)
    card = path / STUDENT_FILE
    if card.exists():
        kind = json.loads(card.read_text()).get("kind")
        if kind in ("bi-encoder", "cross-encoder"):
            return kind
        raise ConfigError(f"{model} is a {kind} student, not a pair model")
    if (path / "modules.json").exists():
        return "bi-encoder"
    raise ConfigError(f"cannot tell whether {model} is a bi-encoder or a cross-encoder", hint="pass the kind")


def evaluate_pairs(
    model: str | Path,
    pairs: str | Path,
    *,
    kind: PairModelKind | None = None,
    fields: Sequence[str] = ("text_a", "text_b"),
    score_field: str = "label",
    batch_size: int = 64,
) -> dict[str, Any]:
    """Spearman and Pearson correlation (0..1) of `model`'s pair scores with the gold `score_field` of `pairs`."""
    from llmst.models import resolve_model

    gold = read_scored_pairs(pairs, fields, score_field)
    kind = kind or pair_model_kind(model)
    path = resolve_model(str(model)).path
    if kind == "bi-encoder":
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

        evaluator = EmbeddingSimilarityEvaluator(
            gold.text_a, gold.text_b, gold.scores.tolist(), batch_size=batch_size, main_similarity="cosine"
        )
        result = evaluator(SentenceTransformer(path))
        spearman, pearson = result["spearman_cosine"], result["pearson_cosine"]
    else:
        from sentence_transformers.cross_encoder import CrossEncoder
        from sentence_transformers.cross_encoder.evaluation import CrossEncoderCorrelationEvaluator

        evaluator = CrossEncoderCorrelationEvaluator(
            list(zip(gold.text_a, gold.text_b, strict=True)), gold.scores.tolist(), batch_size=batch_size
        )
        result = evaluator(CrossEncoder(path))
        spearman, pearson = result["spearman"], result["pearson"]
    return {
        "kind": kind,
        "spearman": round(float(spearman), 4),
        "pearson": round(float(pearson), 4),
        "n": len(gold),
    }


def predicted_scores(
    model: str | Path, text_a: list[str], text_b: list[str], kind: PairModelKind, batch_size: int
):
    """Each pair's model score (cosine of the embeddings, or the cross-encoder's score), for plots."""
    import numpy as np

    from llmst.models import resolve_model

    path = resolve_model(str(model)).path
    if kind == "bi-encoder":
        from sentence_transformers import SentenceTransformer

        encoder = SentenceTransformer(path)
        a, b = (encoder.encode(t, batch_size=batch_size, normalize_embeddings=True) for t in (text_a, text_b))
        return np.sum(a * b, axis=1)
    from sentence_transformers.cross_encoder import CrossEncoder

    return CrossEncoder(path).predict(list(zip(text_a, text_b, strict=True)), batch_size=batch_size)


def evaluate_pairs_report(model: str | Path, pairs: str | Path, config) -> dict[str, Any]:
    """`llmst evaluate-pairs`: the correlations, and with `config.report_dir` report.json and scatter.png."""
    result = evaluate_pairs(
        model,
        pairs,
        kind=config.kind,
        fields=config.text_fields,
        score_field=config.gold_field,
        batch_size=config.batch_size,
    )
    result.update(model=str(model), pairs=str(pairs))
    if config.report_dir:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from llmst.records import write_json_atomic

        folder = Path(config.report_dir)
        folder.mkdir(parents=True, exist_ok=True)
        gold = read_scored_pairs(pairs, config.text_fields, config.gold_field)
        predicted = predicted_scores(model, gold.text_a, gold.text_b, result["kind"], config.batch_size)
        figure, axis = plt.subplots(figsize=(5, 5))
        axis.scatter(gold.scores, predicted, s=6, alpha=0.4)
        axis.set_xlabel(f"gold ({config.gold_field})")
        axis.set_ylabel("cosine" if result["kind"] == "bi-encoder" else "cross-encoder score")
        axis.set_title(f"{Path(str(model)).name}: Spearman {result['spearman']:.3f}, n={result['n']}")
        figure.tight_layout()
        figure.savefig(folder / "scatter.png", dpi=120)
        plt.close(figure)
        write_json_atomic(folder / "report.json", result)
        result["report_dir"] = str(folder)
    return result
