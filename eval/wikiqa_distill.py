"""Retrieval distillation on WikiQA: a MiniLM-L6 bi-encoder before and after MarginMSE, KL and CPRD-style
distillation from a cross-encoder llmst trains on WikiQA train, with mined hard negatives.

    python eval/wikiqa_distill.py [--seed 0] [--losses marginmse,kldiv,cprd,gold] [--negatives 5]
                                  [--teacher-epochs 1] [--epochs 1] [--limit N] [--test-limit M]
                                  [--out-dir /tmp/llmst-eval/wikiqa] [--json eval/results/wikiqa_distill.json]

Data: ../shared/data/wikiqa (see its SOURCE.md): train 20,360 (question, sentence, label) pairs of 2,118
questions; test 2,351 pairs of the 243 filtered questions. Steps, each a signature-cached llmst stage under
OUT_DIR (a rerun reuses what is current):
1. teacher: `llmst train --kind cross-encoder --score-field label` on the train pairs (MiniLM-L6 weights, new
   head, BCE);
2. `llmst pairs sample --method hard-negatives --positive-field label --negatives NEGATIVES`: each train question's
   correct sentences plus the train sentences MiniLM-L6 ranks highest for it that are not its answers; the test
   pairs are excluded (the leak guard);
3. `llmst pairs score` with the teacher (sigmoid scores);
4. students: `llmst train --kind bi-encoder --loss L --positive-field positive --negatives NEGATIVES` from
   all-MiniLM-L6-v2, for each L; `gold` is the control without a teacher: `--loss cprd --rank-weight 0`, i.e.
   MultipleNegativesRankingLoss on the gold positive against the same mined hard negatives and the batch, so a
   student's gain over it is what the teacher's scores add;
5. `llmst evaluate-pairs --metrics retrieval` on the test questions: against a corpus of all test candidate
   sentences (`all`, bi-encoders) and against each question's own candidates (`candidates`, where the teacher
   can be scored too). "Gap recovered" = (student - MiniLM-L6) / (teacher - MiniLM-L6) in nDCG@10 on
   `candidates`, the one setting both are measured in.
Prints a table and writes JSON. `--limit N` / `--test-limit M` keep the first N train and M test questions (a
smoke run).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from llmst.experiments.orchestration import run_stage
from llmst.pairs.config import SampleConfig, ScoreConfig, sample_signature
from llmst.pairs.evaluate import evaluate_retrieval
from llmst.pairs.sample import sample_pairs
from llmst.pairs.score import score_pairs, score_signature
from llmst.records import PendingOutputs
from llmst.stage import signature
from llmst.train import TrainConfig, train, train_signature

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "wikiqa"
STUDENT = "minilm-l6"


def _stage(name: str, out: Path, sig: str, fn) -> None:
    run_stage(name, out, sig, fn, owner="wikiqa")


def read_wikiqa(split: str, questions: int | None) -> list[dict]:
    """The (question, sentence, label) rows of a split as pair records, for the first `questions` questions."""
    rows, seen = [], []
    with open(DATA / f"WikiQA-{split}.txt", encoding="utf-8") as handle:
        for line in handle:
            question, sentence, label = line.rstrip("\n").split("\t")
            if question not in seen:
                if questions is not None and len(seen) == questions:
                    break
                seen.append(question)
            rows.append({"text_a": question, "text_b": sentence, "label": int(label)})
    return rows


def data_file(args, split: str, questions: int | None) -> Path:
    out = args.out_dir / f"wikiqa-{split}{'' if questions is None else f'-{questions}q'}.jsonl"
    source = DATA / f"WikiQA-{split}.txt"
    sig = signature("wikiqa-data", {"split": split, "questions": questions}, {"source": source})

    def write(_fresh: bool) -> None:
        with PendingOutputs() as pending:
            pending.write_jsonl(out, read_wikiqa(split, questions))
            pending.commit()

    _stage(f"data {split}", out, sig, write)
    return out


def trained(name: str, data: Path, out: Path, config: TrainConfig) -> Path:
    _stage(
        name,
        out,
        train_signature(data, config),
        lambda fresh: train(data, out, TrainConfig(**{**config.__dict__, "overwrite": fresh})),
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--losses", default="marginmse,kldiv,cprd,gold", help="`gold`: no teacher (control)")
    parser.add_argument("--negatives", type=int, default=5)
    parser.add_argument("--teacher-epochs", type=float, default=1.0)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, default=None, help="first N train questions (smoke run)")
    parser.add_argument("--test-limit", type=int, default=None, help="first M test questions (smoke run)")
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/llmst-eval/wikiqa"))
    parser.add_argument("--json", type=Path, default=ROOT / "eval" / "results" / "wikiqa_distill.json")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train_file = data_file(args, "train", args.limit)
    test_file = data_file(args, "test", args.test_limit)

    teacher = trained(
        "teacher cross-encoder",
        train_file,
        args.out_dir / "teacher-ce",
        TrainConfig(
            student=STUDENT,
            kind="cross-encoder",
            score_field="label",
            epochs=args.teacher_epochs,
            batch_size=args.batch_size,
            max_length=128,
            seed=args.seed,
            progress=False,
        ),
    )
    mined = args.out_dir / f"hn-{args.negatives}.jsonl"
    sample = SampleConfig(
        method="hard-negatives",
        positive_field="label",
        negatives=args.negatives,
        encoder=STUDENT,
        exclude=[str(test_file)],
        progress=False,
    )
    _stage(
        "hard negatives",
        mined,
        sample_signature(train_file, sample),
        lambda fresh: sample_pairs(train_file, mined, sample),
    )
    mining = json.loads(Path(f"{mined}.report.json").read_text())
    scored = args.out_dir / f"hn-{args.negatives}-scored.jsonl"
    score = ScoreConfig(teachers=[f"cross-encoder:{teacher}"], max_length=128, progress=False)
    _stage(
        "teacher scores",
        scored,
        score_signature(mined, score),
        lambda fresh: score_pairs(mined, scored, ScoreConfig(**{**score.__dict__, "overwrite": fresh})),
    )

    models = {"MiniLM-L6 (before)": STUDENT}
    seconds = {}
    for loss in [name.strip() for name in args.losses.split(",") if name.strip()]:
        began = time.perf_counter()
        # the control trains on the same groups with the teacher's order weighted 0: gold positives only
        gold_only = loss == "gold"
        models["gold-only student (no teacher)" if gold_only else f"{loss} student"] = trained(
            f"student {loss}",
            scored,
            args.out_dir / f"student-{loss}-seed{args.seed}",
            TrainConfig(
                student=STUDENT,
                kind="bi-encoder",
                loss="cprd" if gold_only else loss,
                rank_weight=0.0 if gold_only else TrainConfig.rank_weight,
                positive_field="positive",
                negatives=args.negatives,
                epochs=args.epochs,
                learning_rate=args.learning_rate,
                batch_size=args.batch_size,
                max_length=128,
                seed=args.seed,
                progress=False,
            ),
        )
        seconds[loss] = round(time.perf_counter() - began, 1)

    rows = {}
    for name, model in models.items():
        rows[name] = {
            "all": evaluate_retrieval(model, test_file, kind="bi-encoder", ranking="all"),
            "candidates": evaluate_retrieval(model, test_file, kind="bi-encoder", ranking="candidates"),
        }
    rows["cross-encoder teacher"] = {
        "candidates": evaluate_retrieval(teacher, test_file, kind="cross-encoder", ranking="candidates")
    }
    base = rows["MiniLM-L6 (before)"]
    gap = rows["cross-encoder teacher"]["candidates"]["ndcg@10"] - base["candidates"]["ndcg@10"]
    for name, row in rows.items():
        if "student" in name:
            gained = row["candidates"]["ndcg@10"] - base["candidates"]["ndcg@10"]
            row["gap_recovered"] = round(gained / gap, 3) if gap > 0 else None
            row["delta_ndcg@10_all"] = round(row["all"]["ndcg@10"] - base["all"]["ndcg@10"], 4)

    print(
        f"WikiQA test: {base['all']['queries']} questions, corpus of {base['all']['corpus_size']} sentences"
    )
    print(
        "| model | MRR@10 (all) | nDCG@10 (all) | MAP (all) | MRR@10 (cand.) | nDCG@10 (cand.) | gap recovered |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        every = row.get("all")
        cells = [f"{100 * every[m]:.2f}" if every else "-" for m in ("mrr@10", "ndcg@10", "map")]
        cells += [f"{100 * row['candidates'][m]:.2f}" for m in ("mrr@10", "ndcg@10")]
        cells.append(f"{row['gap_recovered']:.2f}" if row.get("gap_recovered") is not None else "")
        print(f"| {name} | " + " | ".join(cells) + " |")

    report = {
        "command": " ".join(sys.argv),
        "seed": args.seed,
        "negatives": args.negatives,
        "train_questions": args.limit,
        "test_questions": args.test_limit,
        "mining": {k: mining[k] for k in ("positives", "negatives", "corpus", "dropped", "written")},
        "training_seconds": seconds,
        "results": rows,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": platform.processor() or platform.machine(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
