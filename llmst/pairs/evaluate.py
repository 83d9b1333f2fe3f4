"""How well a pair model's scores follow gold pair scores: Spearman and Pearson correlation; and, for
query/passage sets, how well it retrieves: MAP, MRR@10 and nDCG@10.

The bi-encoder's score is the cosine of the two embeddings (sentence-transformers' `EmbeddingSimilarityEvaluator`),
the cross-encoder's its predicted score (`CrossEncoderCorrelationEvaluator`). Retrieval (`evaluate_retrieval`)
reads the same pair file as query groups (pairs sharing `text_a`; a passage is relevant when its gold field is
true or > 0, as a positive marker is read everywhere: `llmst.pairs.data.relevance`): `ranking="all"` ranks every
passage of the file for every query (`InformationRetrievalEvaluator`, bi-encoders), `ranking="candidates"` only
each query's own passages (`RerankingEvaluator`, `CrossEncoderRerankingEvaluator`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from llmst.errors import ConfigError
from llmst.pairs.data import RELEVANCE, read_pair_rows, read_scored_pairs, relevance

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


def retrieval_sets(
    pairs: str | Path, fields: Sequence[str] = ("text_a", "text_b"), gold_field: str = "label"
) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, bool]]]:
    """Queries `{qid: text}`, corpus `{cid: text}` (every distinct passage of the file) and each query's
    candidates `{qid: {cid: relevant}}`, relevant when `gold_field` is true or > 0 (`llmst.pairs.data.relevance`:
    gold labels 1 / 0, or the `positive` booleans of `llmst pairs sample --method hard-negatives`). Texts are
    matched after collapsing whitespace and case; ids follow the file's order (zero-padded, so
    sentence-transformers' tie-break by id keeps that order)."""
    from llmst.pairs.sample import normalize

    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    qids: dict[str, str] = {}
    cids: dict[str, str] = {}
    candidates: dict[str, dict[str, bool]] = {}
    for row in read_pair_rows(pairs, fields, gold_field, target=relevance, expected=RELEVANCE):
        qid = qids.setdefault(normalize(row.text_a), f"q{len(qids):07d}")
        cid = cids.setdefault(normalize(row.text_b), f"c{len(cids):07d}")
        queries.setdefault(qid, row.text_a)
        corpus.setdefault(cid, row.text_b)
        seen = candidates.setdefault(qid, {})
        seen[cid] = seen.get(cid, False) or row.target  # a passage listed twice: relevant if either says so
    return queries, corpus, candidates


def evaluate_retrieval(
    model: str | Path,
    pairs: str | Path,
    *,
    kind: PairModelKind | None = None,
    fields: Sequence[str] = ("text_a", "text_b"),
    gold_field: str = "label",
    ranking: Literal["all", "candidates"] = "all",
    batch_size: int = 64,
) -> dict[str, Any]:
    """MAP, MRR@10 and nDCG@10 (0..1) of `model` on the queries of `pairs` (module docstring)."""
    from llmst.models import resolve_model

    queries, passages, candidates = retrieval_sets(pairs, fields, gold_field)
    kind = kind or pair_model_kind(model)
    path = resolve_model(str(model)).path
    relevant = {q: {c for c, is_relevant in found.items() if is_relevant} for q, found in candidates.items()}
    scored = [q for q in queries if relevant[q]]
    result: dict[str, Any] = {"kind": kind, "ranking": ranking, "queries": len(scored)}
    result["queries_without_relevant"] = len(queries) - len(scored)
    if not scored:
        raise ConfigError(
            f"{pairs}: no query has a relevant passage ({gold_field} true or > 0)",
            hint="retrieval metrics need gold labels such as 1 (relevant) / 0 on query/passage pairs",
        )
    if ranking == "all":
        if kind != "bi-encoder":
            raise ConfigError(
                "--ranking all ranks every passage for every query: for bi-encoders only",
                hint="score a cross-encoder on each query's own passages: --ranking candidates",
            )
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
        from sentence_transformers.util import cos_sim

        evaluator = InformationRetrievalEvaluator(
            {q: queries[q] for q in scored},
            passages,
            {q: relevant[q] for q in scored},
            mrr_at_k=[10],
            ndcg_at_k=[10],
            accuracy_at_k=[1, 10],
            precision_recall_at_k=[10],
            map_at_k=[len(passages)],  # MAP over the whole ranking
            batch_size=batch_size,
            write_csv=False,
            score_functions={"cosine": cos_sim},
        )
        found = evaluator(SentenceTransformer(path))
        metrics = {
            "map": found[f"cosine_map@{len(passages)}"],
            "mrr@10": found["cosine_mrr@10"],
            "ndcg@10": found["cosine_ndcg@10"],
            "accuracy@1": found["cosine_accuracy@1"],
            "recall@10": found["cosine_recall@10"],
        }
        result["corpus_size"] = len(passages)
    else:
        samples = []
        for q in scored:
            negatives = [passages[c] for c, is_relevant in candidates[q].items() if not is_relevant]
            if negatives:  # a query whose every candidate is relevant ranks perfectly whatever the model
                samples.append(
                    {
                        "query": queries[q],
                        "positive": [passages[c] for c in relevant[q]],
                        "negative": negatives,
                    }
                )
        result["queries"], result["queries_without_negative"] = len(samples), len(scored) - len(samples)
        if not samples:
            raise ConfigError(f"{pairs}: no query has both a relevant and an irrelevant candidate")
        if kind == "bi-encoder":
            from sentence_transformers import SentenceTransformer
            from sentence_transformers.sentence_transformer.evaluation import RerankingEvaluator
            from sentence_transformers.util import cos_sim

            evaluator = RerankingEvaluator(
                samples, at_k=10, batch_size=batch_size, write_csv=False, similarity_fct=cos_sim
            )
            found = evaluator(SentenceTransformer(path))
        else:
            from sentence_transformers.cross_encoder import CrossEncoder
            from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

            evaluator = CrossEncoderRerankingEvaluator(
                samples, at_k=10, batch_size=batch_size, write_csv=False
            )
            found = evaluator(CrossEncoder(path))
        metrics = {"map": found["map"], "mrr@10": found["mrr@10"], "ndcg@10": found["ndcg@10"]}
        result["candidates"] = sum(len(s["positive"]) + len(s["negative"]) for s in samples)
    result.update({name: round(float(value), 4) for name, value in metrics.items()})
    result["n"] = result["queries"]
    return result


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
    """`llmst evaluate-pairs`: the correlations, and with `config.report_dir` report.json and scatter.png; or
    the retrieval metrics (`config.metrics == "retrieval"`), with report.json and a bar chart (metrics.png)."""
    options = dict(kind=config.kind, fields=config.text_fields, batch_size=config.batch_size)
    if config.metrics == "retrieval":
        result = evaluate_retrieval(
            model, pairs, gold_field=config.gold_field, ranking=config.ranking, **options
        )
    else:
        result = evaluate_pairs(model, pairs, score_field=config.gold_field, **options)
    result.update(model=str(model), pairs=str(pairs))
    if config.report_dir:
        name = Path(str(model)).name

        def scatter(axis) -> None:
            gold = read_scored_pairs(pairs, config.text_fields, config.gold_field)
            predicted = predicted_scores(model, gold.text_a, gold.text_b, result["kind"], config.batch_size)
            axis.scatter(gold.scores, predicted, s=6, alpha=0.4)
            axis.set_xlabel(f"gold ({config.gold_field})")
            axis.set_ylabel("cosine" if result["kind"] == "bi-encoder" else "cross-encoder score")
            axis.set_title(f"{name}: Spearman {result['spearman']:.3f}, n={result['n']}")

        def bars(axis) -> None:
            names = ["map", "mrr@10", "ndcg@10"]
            axis.bar_label(axis.bar(names, [result[n] for n in names]), fmt="%.3f")
            axis.set_ylim(0, 1.05)
            axis.set_title(f"{name}: {result['queries']} queries, ranking {config.ranking}")

        if config.metrics == "retrieval":
            _save_report(config.report_dir, result, "metrics.png", bars, size=(5, 3.5))
        else:
            _save_report(config.report_dir, result, "scatter.png", scatter, size=(5, 5))
    return result


def _save_report(
    report_dir: str | Path, result: dict[str, Any], plot: str, draw, *, size: tuple[float, float]
) -> None:
    """report.json (`result`) and the plot `draw(axis)` makes, as `plot`, in `report_dir`; adds the folder to
    `result`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llmst.records import write_json_atomic

    folder = Path(report_dir)
    folder.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=size)
    draw(axis)
    figure.tight_layout()
    figure.savefig(folder / plot, dpi=120)
    plt.close(figure)
    write_json_atomic(folder / "report.json", result)
    result["report_dir"] = str(folder)
