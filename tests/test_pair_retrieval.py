"""Retrieval distillation: the listwise losses (marginmse, kldiv, cprd) against hand-computed values, query groups
from pair records, training a bi-encoder on them, hard-negative mining with the leak guard, and MAP / MRR@10 /
nDCG@10 on a tiny corpus whose rankings are worked out by hand."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import read_lines, write_jsonl

from llmst.errors import ConfigError
from llmst.pairs.config import EvaluatePairsConfig, SampleConfig, sample_signature
from llmst.pairs.data import relevance
from llmst.pairs.evaluate import evaluate_pairs_report, evaluate_retrieval
from llmst.pairs.groups import read_query_groups
from llmst.pairs.sample import pair_key, sample_pairs
from llmst.stage import read_marker
from llmst.train import TrainConfig, train, train_signature
from llmst.train.pair_students import kldiv_teacher_temperature, retrieval_loss
from llmst.train.partial_ranking import PartialRankingDistillLoss, same_passages

R = math.sqrt(0.5)


def _vectors(*rows: tuple[float, ...]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float)


# one query q = (1, 0): positive (1, 0) (cosine 1), negative 1 (0, 1) (cosine 0), negative 2 (1, 1) (cosine 1/sqrt 2)
QUERY, POSITIVE, NEG1, NEG2 = _vectors((1, 0)), _vectors((1, 0)), _vectors((0, 1)), _vectors((1, 1))
TEACHER = torch.tensor([[0.9, 0.5, 0.2]])  # the teacher: positive 0.9, negative 1 0.5, negative 2 0.2


def _loss(name: str, **options) -> torch.nn.Module:
    config = TrainConfig(kind="bi-encoder", loss=name, progress=False, **options)
    return retrieval_loss(None, config)  # the losses only keep the model for forward()


def test_marginmse_fits_cosine_margins_to_teacher_margins():
    # teacher margins 0.9-0.5 = 0.4 and 0.9-0.2 = 0.7; student margins 1-0 = 1 and 1-0.7071 = 0.2929
    expected = ((1 - 0.4) ** 2 + ((1 - R) - 0.7) ** 2) / 2
    got = _loss("marginmse").compute_loss_from_embeddings([QUERY, POSITIVE, NEG1, NEG2], TEACHER)
    assert float(got) == pytest.approx(expected, abs=1e-6)
    # the loss sees cosines, not dot products: scaling an embedding changes nothing
    scaled = _loss("marginmse").compute_loss_from_embeddings([3 * QUERY, POSITIVE, 5 * NEG1, NEG2], TEACHER)
    assert float(scaled) == pytest.approx(expected, abs=1e-6)


def test_kldiv_compares_softmaxes_of_cosine_over_t_and_score_over_teacher_t():
    # student logits cos / 0.5 = [2, 0, 1.4142]; teacher logits score / 0.1 = [9, 5, 2]
    student = [2.0, 0.0, 2 * R]
    teacher = [9.0, 5.0, 2.0]
    log_q = [s - math.log(sum(math.exp(x) for x in student)) for s in student]
    p = [math.exp(t) / sum(math.exp(x) for x in teacher) for t in teacher]
    expected = sum(pi * (math.log(pi) - qi) for pi, qi in zip(p, log_q, strict=True))
    loss = _loss("kldiv", temperature=0.5, teacher_temperature=0.1)
    got = loss.compute_loss_from_embeddings([QUERY, POSITIVE, NEG1, NEG2], TEACHER)
    assert float(got) == pytest.approx(expected, abs=1e-6)  # not shrunk by a squared student temperature
    same = _loss("kldiv", temperature=0.5)  # the teacher temperature defaults to the student's
    assert same.teacher_temperature == 0.5


def test_kldiv_teacher_temperature_fits_probabilities_and_logits_and_warns_on_underflow():
    config = TrainConfig(kind="bi-encoder", loss="kldiv", progress=False)  # temperature 0.05
    probabilities = np.array([[0.9, 0.5, 0.2], [0.7, 0.6, 0.1]])
    assert kldiv_teacher_temperature(config, probabilities) == (0.05, None)  # spread 0.8 / 0.05 = 16
    logits = np.array([[6.0, -2.0, -7.5], [3.0, 1.0, -4.0]])  # a cross-encoder's raw logits
    assert kldiv_teacher_temperature(config, logits) == (1.0, None)  # not 0.05: 13.5 / 0.05 = 270 underflows
    assert retrieval_loss(None, config, logits).teacher_temperature == 1.0
    forced = TrainConfig(kind="bi-encoder", loss="kldiv", teacher_temperature=0.05, progress=False)
    temperature, warning = kldiv_teacher_temperature(forced, logits)
    assert temperature == 0.05
    assert "underflows" in warning and "--teacher-temperature 0.155 or more" in warning  # 13.5 / 87


def test_partial_ranking_loss_learns_the_teacher_order_of_negatives_only():
    # contrastive: -log(e^2 / (e^2 + e^0 + e^1.4142)) at temperature 0.5
    contrastive = -(2 - math.log(math.exp(2) + 1 + math.exp(2 * R)))
    # ranking: the teacher puts negative 1 (0.5) above negative 2 (0.2): -log(e^0 / (e^0 + e^1.4142));
    # negative 2 is above nothing: no term
    ranking = math.log(1 + math.exp(2 * R))
    loss = PartialRankingDistillLoss(None, temperature=0.5, rank_weight=1.0)
    got = loss.compute_loss_from_embeddings([QUERY, POSITIVE, NEG1, NEG2], TEACHER)
    assert float(got) == pytest.approx(contrastive + ranking, abs=1e-6)
    weighted = PartialRankingDistillLoss(None, temperature=0.5, rank_weight=0.25)
    got = weighted.compute_loss_from_embeddings([QUERY, POSITIVE, NEG1, NEG2], TEACHER)
    assert float(got) == pytest.approx(contrastive + 0.25 * ranking, abs=1e-6)
    # only the order counts: any teacher scores with the same order (and any positive score) give the same loss
    other = torch.tensor([[-3.0, 40.0, 7.0]])
    assert float(loss.compute_loss_from_embeddings([QUERY, POSITIVE, NEG1, NEG2], other)) == pytest.approx(
        contrastive + ranking, abs=1e-6
    )
    # a tie in the teacher's order is no evidence either way: no ranking term at all
    tied = torch.tensor([[0.9, 0.3, 0.3]])
    got = loss.compute_loss_from_embeddings([QUERY, POSITIVE, NEG1, NEG2], tied)
    assert float(got) == pytest.approx(contrastive, abs=1e-6)


def test_partial_ranking_at_rank_weight_0_is_multiple_negatives_ranking_loss():
    # the gold-only control of eval/wikiqa_distill.py: no teacher order, only the contrastive term, which is
    # sentence-transformers' MNRL with hard negatives (scale = 1 / temperature); teacher scores are ignored
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    generator = torch.Generator().manual_seed(0)
    columns = [torch.randn(4, 8, generator=generator) for _ in range(4)]  # query, positive, 2 negatives
    teacher = torch.rand(4, 3, generator=generator)
    control = PartialRankingDistillLoss(None, temperature=0.05, rank_weight=0.0)
    mnrl = MultipleNegativesRankingLoss(None, scale=20.0)
    expected = float(mnrl.compute_loss_from_embeddings(columns, None))
    assert float(control.compute_loss_from_embeddings(columns, teacher)) == pytest.approx(expected, rel=1e-5)
    assert float(control.compute_loss_from_embeddings(columns, teacher.flip(1))) == pytest.approx(
        expected, rel=1e-5
    )
    ranked = PartialRankingDistillLoss(None, temperature=0.05, rank_weight=1.0)
    assert float(ranked.compute_loss_from_embeddings(columns, teacher)) > expected + 1e-3


def test_partial_ranking_contrastive_term_uses_every_passage_of_the_batch():
    # two queries with one negative each, temperature 1: each query's candidates are both positives and both
    # negatives; the teacher's order among one negative is empty, so only the contrastive term remains
    queries = _vectors((1, 0), (0, 1))
    positives = _vectors((1, 0), (0, 1))
    negatives = _vectors((1, 1), (-1, 0))
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # query 1: cosines to [p1, p2, n1, n2] = [1, 0, R, -1]; query 2: [0, 1, R, 0]
    first = -(1 - math.log(math.exp(1) + 1 + math.exp(R) + math.exp(-1)))
    second = -(1 - math.log(1 + math.exp(1) + math.exp(R) + 1))
    loss = PartialRankingDistillLoss(None, temperature=1.0)
    got = loss.compute_loss_from_embeddings([queries, positives, negatives], labels)
    assert float(got) == pytest.approx((first + second) / 2, abs=1e-6)
    with pytest.raises(ValueError, match=r"teacher scores of shape \(batch, 1 \+ negatives\)"):
        loss.compute_loss_from_embeddings([queries, positives, negatives], torch.ones(2, 3))


def test_partial_ranking_contrastive_term_leaves_out_copies_of_the_rows_positives():
    # row 1's positive p1 is also row 2's negative; row 3 is a second positive of row 1's query. For row 1 the
    # other copy of p1 (column 2, row 2) and the query's other positive p3 are no negatives: left out
    features = [
        {
            "input_ids": torch.tensor([[1, 5, 0], [1, 6, 0], [1, 5, 0]]),
            "attention_mask": torch.tensor([[1, 1, 0]] * 3),
        },
        {"input_ids": torch.tensor([[7, 0], [8, 0], [9, 0]]), "attention_mask": torch.tensor([[1, 0]] * 3)},
        {
            "input_ids": torch.tensor([[10, 11], [7, 0], [12, 0]]),
            "attention_mask": torch.tensor([[1, 1], [1, 0], [1, 0]]),
        },
    ]
    same = same_passages(features)  # candidates: p1 p2 p3 n1 n2(=p1) n3
    assert same.tolist() == [
        [False, False, True, False, True, False],  # row 1: p3 (same query) and n2 (= p1)
        [False, False, False, False, False, False],
        [True, False, False, False, True, False],  # row 3: p1 and its copy n2
    ]
    assert same_passages([{"input_ids": torch.tensor([1, 2, 3])}, *features[1:]]) is None  # no token rows
    # on fixed embeddings, temperature 1: row 1's softmax runs over p1, p2, n1, n3 only
    queries = _vectors((1, 0), (0, 1), (1, 0))
    positives = _vectors((1, 0), (0, 1), (1, 1))
    negatives = _vectors((-1, 0), (1, 0), (0, -1))
    labels = torch.tensor([[1.0, 0.0]] * 3)
    loss = PartialRankingDistillLoss(None, temperature=1.0)
    masked = same_passages(features)
    got = loss.contrastive(queries, [positives, negatives], masked)
    first = -(1 - math.log(math.exp(1) + 1 + math.exp(-1) + 1))  # p1 1, p2 0, n1 -1, n3 0
    second = -(1 - math.log(1 + math.exp(1) + math.exp(R) + 1 + 1 + math.exp(-1)))  # every passage
    third = -(R - math.log(1 + math.exp(R) + math.exp(-1) + 1))  # p2 0, p3 R, n1 -1, n3 0
    assert float(got) == pytest.approx((first + second + third) / 3, abs=1e-6)
    full = loss.compute_loss_from_embeddings([queries, positives, negatives], labels, masked)
    assert float(full) == pytest.approx(float(got), abs=1e-6)  # one negative each: no ranking term
    assert float(loss.contrastive(queries, [positives, negatives])) > float(got)  # the copies were penalized


# ------------------------------------------------------------------------------------------ query groups


def _group_rows() -> list[dict]:
    rows = []
    for q in range(3):
        for j in range(4):  # passage j of query q; the teacher likes passage q best
            rows.append(
                {
                    "text_a": f"question {q}",
                    "text_b": f"passage {q}-{j}",
                    "score": 0.9 if j == q else 0.1 * j,
                    "label": int(j == 3),
                }
            )
    return rows


def test_query_groups_from_pair_records(tmp_path):
    rows = _group_rows()
    rows.append({**rows[0], "text_a": "  QUESTION 0 "})  # the same pair in another spelling: one pair
    rows.append({"text_a": "lonely question", "text_b": "only passage", "score": 0.5, "label": 1})
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    groups = read_query_groups(path, negatives=3)  # the teacher-best pair is the positive
    assert groups.queries == ["question 0", "question 1", "question 2"]
    assert groups.positives == ["passage 0-0", "passage 1-1", "passage 2-2"]
    assert groups.negatives[1] == ["passage 1-3", "passage 1-2", "passage 1-0"]  # hardest first
    np.testing.assert_allclose(groups.scores[1], [0.9, 0.3, 0.2, 0.0])
    assert groups.counts["duplicate_pairs"] == 1 and groups.counts["queries_with_too_few_negatives"] == 1
    gold = read_query_groups(path, negatives=2, positive_field="label")  # gold positives instead
    assert gold.positives == ["passage 0-3", "passage 1-3", "passage 2-3", "only passage"][:3]
    assert gold.scores.shape == (3, 3) and gold.negatives[0] == ["passage 0-0", "passage 0-2"]
    columns = gold.columns()
    assert list(columns) == ["query", "positive", "negative_1", "negative_2", "label"]


def test_bad_group_files_are_one_clear_error(tmp_path):
    rows = _group_rows()
    cases = {
        "no passage": ([*rows[:2], {"text_a": "q", "score": 0.3}], "line 3: no text"),
        "word score": ([*rows[:3], {**rows[3], "score": "high"}], "line 4: score 'high' is not a number"),
        "bad marker": ([{**rows[0], "label": "maybe"}], "line 1: label 'maybe' is not true/false"),
        "empty": ([], "holds no pairs"),
    }
    for name, (bad, message) in cases.items():
        path = write_jsonl(tmp_path / f"{name}.jsonl", bad)
        with pytest.raises(ConfigError, match=message):
            read_query_groups(path, positive_field="label")
    path = write_jsonl(tmp_path / "few.jsonl", rows)
    with pytest.raises(ConfigError, match="no query has a positive and 9 negatives"):
        read_query_groups(path, negatives=9)


# ------------------------------------------------------------------------------------------ training

COLOURS = ["red", "blue", "green", "black", "white", "brown"]


def _retrieval_pairs(n_queries: int, start: int = 0) -> list[dict]:
    """A query names a colour; its positive passage names it too, the others other colours. The teacher
    scores by colour match and, among negatives, prefers nearby colours in the list (an order to learn)."""
    rows = []
    for i in range(n_queries):
        colour = (start + i) % len(COLOURS)
        for j in range(4):
            other = (colour + j) % len(COLOURS)
            rows.append(
                {
                    "text_a": f"which thing is {COLOURS[colour]} number {start + i}",
                    "text_b": f"the {COLOURS[other]} item {start + 7 * i + j}",
                    "score": 0.95 if j == 0 else 0.5 - 0.1 * j,
                    "label": int(j == 0),
                }
            )
    return rows


@pytest.mark.parametrize("loss", ["marginmse", "kldiv", "cprd"])
def test_retrieval_distillation_trains_and_saves_a_sentence_transformers_folder(
    tiny_bert_dir, tmp_path, loss
):
    data = write_jsonl(tmp_path / "train.jsonl", _retrieval_pairs(48))
    held = write_jsonl(tmp_path / "held.jsonl", _retrieval_pairs(12, 500))
    out = tmp_path / loss
    config = TrainConfig(
        student=tiny_bert_dir,
        kind="bi-encoder",
        loss=loss,
        negatives=3,
        epochs=4,
        batch_size=8,
        learning_rate=3e-3,
        temperature=0.1,
        eval=str(held),
        eval_gold_field="label",
        progress=False,
    )
    before = evaluate_retrieval(tiny_bert_dir, held, kind="bi-encoder")
    summary = train(data, out, config)
    assert summary.rows == 48 and summary.steps == 24  # 48 query rows x 4 epochs / 8
    card = json.loads((out / "llmst_student.json").read_text())
    assert card["query_groups"]["rows"] == 48 and card["loss"].startswith(loss)
    assert card["batch_sampler"] == ("no_duplicates" if loss == "cprd" else "batch_sampler")
    assert set(card["metrics"]) >= {"map", "mrr@10", "ndcg@10"}
    assert read_marker(out) == train_signature(data, config)
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(out)).encode(["a red thing"]).shape == (1, 32)
    assert summary.metrics["ndcg@10"] > before["ndcg@10"], (before, summary.metrics)


def test_retrieval_losses_refuse_unfit_scores_and_options(tiny_bert_dir, tmp_path):
    wide = write_jsonl(tmp_path / "wide.jsonl", [{**r, "score": 5 * r["score"]} for r in _retrieval_pairs(4)])
    config = TrainConfig(student=tiny_bert_dir, kind="bi-encoder", loss="marginmse", progress=False)
    with pytest.raises(ConfigError, match=r"needs teacher scores in \[0, 1\]"):
        train(wide, tmp_path / "m", config)
    assert not (tmp_path / "m").exists()
    with pytest.raises(ConfigError, match="does not train with --loss cprd"):
        TrainConfig(kind="cross-encoder", loss="cprd")
    with pytest.raises(ConfigError, match="--negatives must be >= 1"):
        TrainConfig(kind="bi-encoder", loss="kldiv", negatives=0)
    # options of the listwise losses stay out of the signature of other losses
    assert train_signature(wide, TrainConfig(kind="bi-encoder", temperature=0.2)) == train_signature(
        wide, TrainConfig(kind="bi-encoder")
    )


# ------------------------------------------------------------------------------------------ hard negatives


def test_mined_hard_negatives_never_hold_a_positive_or_an_excluded_pair(tiny_bert_dir, tmp_path):
    rows = [
        {"text_a": "what colour is the sky", "text_b": "The sky is blue.", "label": 1},
        {"text_a": "what colour is the sky", "text_b": "The grass is green.", "label": 0},
        {"text_a": "what colour is grass", "text_b": "Grass is green.", "label": 1},
        {"text_a": "what colour is grass", "text_b": "Snow is white.", "label": 0},
        {"text_a": "who wrote hamlet", "text_b": "Shakespeare wrote Hamlet.", "label": 1},
        {"text_a": "who wrote hamlet", "text_b": "Hamlet is a prince.", "label": 1},
        # the sky's positive re-cased, and the sky question itself, as passages of another query
        {"text_a": "who wrote hamlet", "text_b": "THE SKY  is blue.", "label": 0},
        {"text_a": "who wrote hamlet", "text_b": "What colour is the SKY", "label": 0},
        {"text_a": "what is test data", "text_b": "Test data is held out.", "label": 1},  # an evaluation pair
        {"text_a": "bad row"},
        {"text_a": "who wrote hamlet", "text_b": "Ophelia drowns.", "label": "maybe"},
    ]
    source = write_jsonl(tmp_path / "train.jsonl", rows)
    exclude = write_jsonl(
        tmp_path / "test.jsonl",
        [
            {"text_a": "test data is held OUT.", "text_b": "what is test data"},  # swapped and re-cased
            {"text_a": "what colour is grass", "text_b": "Snow is white."},  # would be mined as a negative
        ],
    )
    config = SampleConfig(
        method="hard-negatives",
        encoder=tiny_bert_dir,
        positive_field="label",
        negatives=10,  # more than the corpus: every candidate is examined
        exclude=[str(exclude)],
        progress=False,
    )
    report = sample_pairs(source, tmp_path / "hn.jsonl", config)
    out = read_lines(tmp_path / "hn.jsonl")
    keys = {pair_key(r["text_a"], r["text_b"]) for r in out}
    positives = {pair_key(r["text_a"], r["text_b"]) for r in rows[:9] if r["label"] == 1}
    excluded = {
        pair_key("what is test data", "Test data is held out."),
        pair_key("what colour is grass", "Snow is white."),
    }
    assert not keys & excluded
    for record in out:
        if not record["positive"]:
            assert pair_key(record["text_a"], record["text_b"]) not in positives
            # nor a positive of the same query in another spelling
            own = {
                pair_key(r["text_a"], r["text_b"])[1]
                for r in rows[:9]
                if r["label"] == 1 and r["text_a"] == record["text_a"]
            }
            assert " ".join(record["text_b"].split()).casefold() not in own
    sky = [r for r in out if r["text_a"] == "what colour is the sky"]
    assert sky[0]["positive"] and sky[0]["text_b"] == "The sky is blue." and sky[0]["sampler_rank"] == 0
    assert [r["sampler_rank"] for r in sky[1:]] == list(range(1, len(sky)))
    assert report["dropped"]["excluded_pair"] == 2  # the evaluation positive and the mined (grass, snow)
    assert report["dropped"]["positive_or_query"] == 1  # "What colour is the SKY" for the sky question
    assert (
        report["rejected"] == 2 and report["positives"] == 4 and report["corpus"] == 8
    )  # "THE SKY  is blue." is "The sky is blue."
    # rows marked not positive are candidate passages only: not written, but counted
    assert report["rows"] == 11 and report["non_positive_rows"] == 4
    assert report["written"] + sum(report["dropped"].values()) == report["candidates"]
    assert len(read_lines(tmp_path / "hn.jsonl.rejects.jsonl")) == 2
    # --corpus adds candidate passages (a re-spaced copy of a positive is still that positive); bad rows rejected
    corpus = write_jsonl(
        tmp_path / "corpus.jsonl",
        [{"text": "Hamlet was written around 1600."}, {"text": " the sky is BLUE. "}, {"text": ""}],
    )
    more = SampleConfig(**{**config.__dict__, "corpus": str(corpus)})
    report = sample_pairs(source, tmp_path / "more.jsonl", more)
    assert report["corpus"] == 9 and report["rejected"] == 3
    mined = {r["text_b"] for r in read_lines(tmp_path / "more.jsonl") if not r["positive"]}
    assert "Hamlet was written around 1600." in mined and " the sky is BLUE. " not in mined


def test_negatives_per_query_is_one_option_across_commands(tmp_path):
    source = write_jsonl(tmp_path / "pairs.jsonl", _retrieval_pairs(2))
    config = SampleConfig(method="hard-negatives", negatives=5)
    assert config.negatives == 5
    # --top-k is the neighbour count of the other methods: not part of a hard-negatives run's signature
    assert sample_signature(source, SampleConfig(method="hard-negatives", top_k=3)) == sample_signature(
        source, SampleConfig(method="hard-negatives")
    )
    with pytest.warns(FutureWarning, match="use --negatives 5"):  # the old spelling, until llmst 0.2
        old = SampleConfig(method="hard-negatives", top_k=5)
    assert old.negatives == 5 and sample_signature(source, old) == sample_signature(source, config)
    with pytest.raises(ConfigError, match="takes --negatives N"):
        SampleConfig(method="hard-negatives", top_k=5, negatives=4)
    assert "negatives" in TrainConfig.__dataclass_fields__  # llmst train --negatives: the same name
    assert "corpus" not in EvaluatePairsConfig.__dataclass_fields__  # --corpus FILE is pairs sample's only
    assert EvaluatePairsConfig(metrics="retrieval", ranking="candidates").ranking == "candidates"


def test_hard_negatives_then_teacher_then_cprd_end_to_end(tiny_bert_dir, tmp_path):
    """sample --method hard-negatives -> score with a cross-encoder teacher -> train --loss cprd, via the CLI."""
    from sentence_transformers.cross_encoder import CrossEncoder

    teacher = tmp_path / "teacher"
    CrossEncoder(tiny_bert_dir, num_labels=1).save(
        str(teacher)
    )  # any cross-encoder will do as a teacher here
    source = write_jsonl(tmp_path / "train.jsonl", [r for r in _retrieval_pairs(12) if r["label"] == 1])
    run = [sys.executable, "-m", "llmst"]

    def llmst(*args: str) -> dict:
        result = subprocess.run([*run, *args, "--quiet"], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout[result.stdout.index("{") :])

    hn = tmp_path / "hn.jsonl"
    report = llmst(
        "pairs",
        "sample",
        str(source),
        "-o",
        str(hn),
        "--method",
        "hard-negatives",
        "--negatives",
        "3",
        "--encoder",
        tiny_bert_dir,
    )
    assert report["positives"] == 12 and report["negatives"] == 36
    scored = tmp_path / "scored.jsonl"
    llmst("pairs", "score", str(hn), "-o", str(scored), "--teacher", f"cross-encoder:{teacher}", "--no-cache")
    assert all(isinstance(r["positive"], bool) and 0 < r["score"] < 1 for r in read_lines(scored))
    summary = llmst(
        "train",
        str(scored),
        "-o",
        str(tmp_path / "student"),
        "--kind",
        "bi-encoder",
        "--loss",
        "cprd",
        "--positive-field",
        "positive",
        "--student",
        tiny_bert_dir,
        "--epochs",
        "1",
        "--batch-size",
        "4",
    )
    assert summary["rows"] == 12 and (tmp_path / "student" / "modules.json").exists()


# ------------------------------------------------------------------------------------------ IR metrics


@pytest.fixture(scope="module")
def fruit_encoder(tmp_path_factory) -> str:
    """A bag-of-words bi-encoder with hand-set word vectors: apple (1, 0, 0), banana (0.6, 0.8, 0), cherry
    (0, 0, 1), every other token 0; a text's embedding is the mean of its tokens'."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from transformers import AutoTokenizer

    from llmst.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm-l6").path)
    weights = np.zeros((tokenizer.vocab_size, 3), dtype=np.float32)
    for word, vector in {"apple": (1, 0, 0), "banana": (0.6, 0.8, 0), "cherry": (0, 0, 1)}.items():
        weights[tokenizer.convert_tokens_to_ids(word)] = vector
    folder = tmp_path_factory.mktemp("fruit")
    SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_weights=weights)]).save(str(folder))
    (folder / "config.json").write_text("{}")  # llmst takes a folder for a model when it has a config.json
    return str(folder)


# d1 apple, d2 banana, d3 "apple banana" (direction (0.894, 0.447, 0)), d4 cherry
FRUIT_PAIRS = [
    {"text_a": "apple", "text_b": "apple", "label": 0},
    {"text_a": "apple", "text_b": "apple banana", "label": 1},
    {"text_a": "banana", "text_b": "banana", "label": 0},
    {"text_a": "banana", "text_b": "apple", "label": 1},
    {"text_a": "banana", "text_b": "cherry", "label": 1},
    {"text_a": "cherry", "text_b": "cherry", "label": 1},
    {"text_a": "cherry", "text_b": "banana", "label": 0},
    {"text_a": "durian", "text_b": "cherry", "label": 0},  # no relevant passage: left out, counted
]


def test_ir_metrics_on_a_tiny_corpus_equal_hand_computed_values(fruit_encoder, tmp_path):
    pairs = write_jsonl(tmp_path / "fruit.jsonl", FRUIT_PAIRS)
    # all passages: apple ranks d1 (1), d3 (.894), d2 (.6), d4 (0): relevant d3 at rank 2
    #   banana ranks d2 (1), d3 (.894), d1 (.6), d4 (0): relevant d1 at 3, d4 at 4
    #   cherry ranks d4 first: relevant d4 at 1
    log2 = math.log2
    mrr = (1 / 2 + 1 / 3 + 1) / 3
    ndcg = (1 / log2(3) + (1 / log2(4) + 1 / log2(5)) / (1 + 1 / log2(3)) + 1) / 3
    average_precision = (1 / 2 + (1 / 3 + 2 / 4) / 2 + 1) / 3
    result = evaluate_retrieval(fruit_encoder, pairs)
    assert result["mrr@10"] == pytest.approx(mrr, abs=1e-4)
    assert result["ndcg@10"] == pytest.approx(ndcg, abs=1e-4)
    assert result["map"] == pytest.approx(average_precision, abs=1e-4)
    assert result["queries"] == 3 and result["queries_without_relevant"] == 1 and result["corpus_size"] == 4
    # each query against its own candidates only: apple {d1, d3}: d3 at 2; banana {d2, d1, d4}: d1 at 2,
    # d4 at 3; cherry {d4, d2}: d4 at 1
    mrr = (1 / 2 + 1 / 2 + 1) / 3
    ndcg = (1 / log2(3) + (1 / log2(3) + 1 / log2(4)) / (1 + 1 / log2(3)) + 1) / 3
    average_precision = (1 / 2 + (1 / 2 + 2 / 3) / 2 + 1) / 3
    result = evaluate_retrieval(fruit_encoder, pairs, ranking="candidates")
    assert result["mrr@10"] == pytest.approx(mrr, abs=1e-4)
    assert result["ndcg@10"] == pytest.approx(ndcg, abs=1e-4)
    assert result["map"] == pytest.approx(average_precision, abs=1e-4)


def test_evaluate_pairs_retrieval_cli_and_cross_encoders(fruit_encoder, tiny_bert_dir, tmp_path):
    pairs = write_jsonl(tmp_path / "fruit.jsonl", FRUIT_PAIRS)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmst",
            "evaluate-pairs",
            fruit_encoder,
            str(pairs),
            "--metrics",
            "retrieval",
            "--report-dir",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mrr@10"] == pytest.approx((1 / 2 + 1 / 3 + 1) / 3, abs=1e-4)
    assert (tmp_path / "r" / "metrics.png").stat().st_size > 1000
    from sentence_transformers.cross_encoder import CrossEncoder

    CrossEncoder(tiny_bert_dir, num_labels=1).save(str(tmp_path / "ce"))
    with pytest.raises(ConfigError, match="for bi-encoders only"):
        evaluate_retrieval(tmp_path / "ce", pairs, kind="cross-encoder")
    config = EvaluatePairsConfig(metrics="retrieval", ranking="candidates", kind="cross-encoder")
    ce = evaluate_pairs_report(tmp_path / "ce", pairs, config)
    assert ce["queries"] == 3 and 0 < ce["mrr@10"] <= 1
    bad = write_jsonl(tmp_path / "bad.jsonl", [*FRUIT_PAIRS[:2], {**FRUIT_PAIRS[2], "label": "yes"}])
    with pytest.raises(ConfigError, match="line 3: label 'yes' is not true/false or a number"):
        evaluate_retrieval(fruit_encoder, bad)


def test_relevance_is_read_alike_everywhere():
    # one parser for positive markers (groups, hard-negatives) and gold relevance (evaluate-pairs --metrics retrieval)
    for value, expected in [(True, True), (False, False), (1, True), (0, False), (2.5, True), (-1, False)]:
        assert relevance(value) is expected
    assert relevance("1") is True and relevance("0.0") is False
    for value in ("yes", None, "", float("nan"), [1]):
        assert relevance(value) is None


def test_hard_negatives_output_evaluates_directly(fruit_encoder, tmp_path):
    # pairs sample --method hard-negatives writes positive: true/false; evaluate-pairs reads it as relevance
    source = write_jsonl(tmp_path / "fruit.jsonl", FRUIT_PAIRS)
    hn = tmp_path / "hn.jsonl"
    config = SampleConfig(
        method="hard-negatives", encoder=fruit_encoder, positive_field="label", negatives=2, progress=False
    )
    report = sample_pairs(source, hn, config)
    assert {type(r["positive"]) for r in read_lines(hn)} == {bool}
    result = evaluate_retrieval(fruit_encoder, hn, gold_field="positive", ranking="candidates")
    assert result["queries"] == report["positives"] - 1  # banana has two positives: one query
    assert 0 < result["mrr@10"] <= 1
    cli = subprocess.run(
        [sys.executable, "-m", "llmst", "evaluate-pairs", fruit_encoder, str(hn), "--metrics", "retrieval"]
        + ["--gold-field", "positive"],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["queries"] == result["queries"]
