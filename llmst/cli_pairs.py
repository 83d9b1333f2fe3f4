"""The text-pair commands: `llmst pairs sample | score` and `llmst evaluate-pairs` (registered on the main app
by `register_pair_commands`)."""

from __future__ import annotations

from pathlib import Path

import typer

from llmst.cli_options import add_config_command, argument, echo_json, out_option
from llmst.pairs.config import EvaluatePairsConfig, SampleConfig, ScoreConfig

pairs_app = typer.Typer(
    help="Text pairs: sample candidate pairs (leak-guarded) for teachers to score and bi-encoders to learn.",
    no_args_is_help=True,
)


def pairs_sample_cmd(*, config: SampleConfig, input: str, out: Path) -> None:
    """Candidate pairs from a sentence corpus (one --text-field) or a pair / query-passage corpus (two): bm25 or
    semantic top-k neighbours, random partners, recombine (each side-a sentence with its top-k side-b ones), or
    hard-negatives (each query/positive pair plus the query's --negatives mined negatives, marked positive:
    false).

    The leak guard: no pair of an --exclude file comes out, in either order (with --exclude-sentences, no pair
    with one of its sentences either); candidates already paired in INPUT are dropped unless --no-new-only.
    Writes pair records (id, text_a, text_b, sampler, sampler_rank, sampler_score), OUT.rejects.jsonl and
    OUT.report.json (counts of what was dropped and why); prints the report.
    """
    from llmst.pairs.sample import sample_pairs

    echo_json(sample_pairs(input, out, config))


def pairs_score_cmd(*, config: ScoreConfig, pairs: str, out: Path) -> None:
    """Score text pairs with teachers: cross-encoders (cross-encoder:PATH|HUB_ID), bi-encoders
    (bi-encoder:PATH|HUB_ID: the cosine of the two embeddings clipped to [0, 1]) or LLM judges (llm:MODEL:
    P(Yes), or the expected grade of a graded judge task), each into `scores`, combined into `score`.

    With --calibrate-on GOLD_PAIRS each teacher is first mapped onto the gold scale (isotonic or linear), so
    teachers on different scales can be averaged. Each teacher's scores are cached and resumable (kill it,
    rerun the same command); pairs a teacher cannot score go to OUT.rejects.jsonl. Prints a JSON report.
    """
    from llmst.pairs.score import score_pairs

    echo_json(score_pairs(pairs, out, config))


def evaluate_pairs_cmd(*, config: EvaluatePairsConfig, model: str, pairs: str) -> None:
    """Score a pair model against gold pairs: Spearman and Pearson correlation, or (--metrics retrieval) MAP,
    MRR@10 and nDCG@10 with pairs sharing text_a as queries and --gold-field true or > 0 as relevant.

    The bi-encoder's score is its cosine (EmbeddingSimilarityEvaluator, InformationRetrievalEvaluator), the
    cross-encoder's its prediction (CrossEncoderCorrelationEvaluator, CrossEncoderRerankingEvaluator). Prints
    JSON; --report-dir adds report.json and a plot."""
    from llmst.pairs.evaluate import evaluate_pairs_report

    echo_json(evaluate_pairs_report(model, pairs, config))


def register_pair_commands(app: typer.Typer) -> None:
    """Add `llmst pairs ...` and `llmst evaluate-pairs` to `app`."""
    app.add_typer(pairs_app, name="pairs")
    add_config_command(
        app,
        "evaluate-pairs",
        EvaluatePairsConfig,
        evaluate_pairs_cmd,
        arguments=[
            argument(
                "model", str, "A bi-encoder or cross-encoder: llmst train output, bundled name or folder."
            ),
            argument(
                "pairs", str, "Gold pairs: text_a, text_b and a score or relevance field (--gold-field)."
            ),
        ],
    )
    add_config_command(
        pairs_app,
        "score",
        ScoreConfig,
        pairs_score_cmd,
        arguments=[
            argument(
                "pairs", str, "Pair records (text_a, text_b): llmst pairs sample output or any pair file."
            ),
            out_option("Output JSONL of scored pair records."),
        ],
    )
    add_config_command(
        pairs_app,
        "sample",
        SampleConfig,
        pairs_sample_cmd,
        arguments=[
            argument(
                "input", str, "Sentences or pairs: .jsonl, .csv, .tsv, .parquet, a saved HF dataset, ..."
            ),
            out_option("Output JSONL of candidate pair records."),
        ],
    )
