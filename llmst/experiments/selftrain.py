"""`llmst selftrain CONFIG.yaml`: rounds of label -> filter -> train -> predict, with a growing curriculum.

Round 0: the LLM labels the pool, `filter` selects (any llmst filter method), a student is trained and relabels
the pool. Round r >= 1: the previous student's relabels are filtered with a curriculum (the top
`curriculum[r-1]` fraction of each class by confidence) and a new student is trained **from the initial
weights** (restarting avoids concept drift; Cascante-Bonilla et al., AAAI 2021, "Curriculum Labeling").
Every stage writes its output under `out_dir/round<r>/` with its signature (`llmst.stage`): a rerun reuses
every stage whose options and inputs are unchanged, recomputes the others (and so everything downstream),
and resumes a stage that was interrupted.

Config (YAML):

    corpus: pool.jsonl            # unlabeled texts (gold labels there, if any, are only used for reports)
    out_dir: runs/selftrain
    rounds: 2
    dev: dev.jsonl                # optional gold rows: per-round metrics
    test: test.jsonl              # optional gold rows: per-round metrics (never used for any choice)
    gold_field: gold
    curriculum: [0.5, 0.8]        # rounds >= 1: fraction of each class kept
    label: {task: sentiment, calibrate: prior}              # llmst label options
    filter: {method: threshold, threshold: 0.8}             # llmst filter options (round 0)
    train: {student: minilm-l6, epochs: 3}                  # llmst train options
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from llmst.errors import ConfigError
from llmst.experiments.orchestration import (
    build,
    log,
    read_experiment_yaml,
    resolver,
    run_stage,
    start_experiment,
)
from llmst.records import write_json_atomic
from llmst.stage import signature
from llmst.train.config import TrainConfig


@dataclass
class SelfTrainConfig:
    corpus: str
    out_dir: str
    rounds: int = 2
    dev: str | None = None
    test: str | None = None
    gold_field: str = "gold"
    curriculum: list[float] = field(default_factory=lambda: [0.5, 0.8])
    label: dict[str, Any] = field(default_factory=dict)
    filter: dict[str, Any] = field(default_factory=lambda: {"method": "threshold", "threshold": 0.8})
    train: dict[str, Any] = field(default_factory=dict)
    source: str | None = None  # the YAML file this came from

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError("selftrain: rounds must be >= 1")
        if len(self.curriculum) < self.rounds - 1:
            raise ConfigError(
                f"selftrain: curriculum needs {self.rounds - 1} fractions (one per round after the first)",
                hint="e.g. curriculum: [0.5, 0.8]",
            )
        if any(not 0 < f <= 1 for f in self.curriculum):
            raise ConfigError("selftrain: curriculum fractions must be in (0, 1]")


def load_selftrain_config(path: str | Path) -> SelfTrainConfig:
    """Read and validate a selftrain YAML; relative paths are taken from the YAML file's folder."""
    path = Path(path)
    data = read_experiment_yaml(path, SelfTrainConfig, "selftrain config", ("corpus", "out_dir"))
    base = path.resolve().parent
    resolve = resolver(base)
    for key in ("corpus", "dev", "test"):
        data[key] = resolve(data.get(key))
    for section in ("label", "filter", "train"):
        data[section] = {k: resolve(v) for k, v in (data.get(section) or {}).items()}
    try:
        return SelfTrainConfig(**data, source=str(path))
    except TypeError as error:  # e.g. rounds: "two", curriculum: 0.5
        raise ConfigError(f"{path}: {error}") from error


def _build(cls, options: dict[str, Any], section: str, **overrides: Any):
    return build(cls, options, section, **overrides)


def _log(message: str) -> None:
    log("selftrain", message)


def _metrics(path: Path, gold_field: str) -> dict[str, Any]:
    from llmst.evaluate import evaluate_file

    report = evaluate_file(path, gold_field=gold_field)
    return {k: round(report[k], 4) for k in ("accuracy", "macro_f1", "ece")} | {"n": report["n"]}


def run_selftrain(config: SelfTrainConfig) -> dict[str, Any]:
    """Run (or resume) all rounds; returns the report also written to `out_dir/report.json`.

    Every stage's output records its signature (options that change it plus the content fingerprints of
    its inputs): a rerun recomputes exactly the stages whose signature changed, and since each output is
    an input of the next stage, everything downstream of a change follows.
    """
    from llmst.filter.config import FilterConfig
    from llmst.filter.stage import run_filter
    from llmst.label.config import LabelConfig
    from llmst.label.run import label_corpus, label_signature
    from llmst.train import PredictConfig, predict_file, predict_signature, train, train_signature

    out_dir = Path(config.out_dir)
    main = start_experiment(out_dir, config.source)
    # validate every stage's options before any work starts
    label_config = _build(LabelConfig, config.label, "label", progress=False)
    first_filter = _build(FilterConfig, config.filter, "filter")
    train_config = _build(TrainConfig, config.train, "train", progress=False)
    predict_config = PredictConfig(progress=False)
    rounds: list[dict[str, Any]] = []
    report: dict[str, Any] = {"config": asdict(config), "rounds": rounds}
    started = time.perf_counter()

    def label(source: str, out: Path, name: str) -> None:
        sig = label_signature(source, label_config)
        run_stage(
            name, out, sig, lambda fresh: label_corpus(source, out, replace(label_config, overwrite=fresh))
        )

    def predict(model: Path, source: str, out: Path, name: str) -> None:
        sig = predict_signature(model, source, predict_config)
        run_stage(
            name,
            out,
            sig,
            lambda fresh: predict_file(model, source, out, replace(predict_config, overwrite=True)),
        )

    round0 = out_dir / "round0"
    labeled = round0 / "labeled.jsonl"
    label(config.corpus, labeled, f"round 0: label {Path(config.corpus).name} with {label_config.model}")
    if config.dev or config.test:
        report["labeler"] = {}
        for split, path in (("dev", config.dev), ("test", config.test)):
            if path:
                out = round0 / f"labeler.{split}.jsonl"
                label(path, out, f"labeler on {split}")
                report["labeler"][split] = _metrics(out, config.gold_field)
    source = labeled
    for index in range(config.rounds):
        folder = out_dir / f"round{index}"
        kept = folder / "kept.jsonl"
        if index == 0:
            filter_config = first_filter
        else:
            filter_config = FilterConfig(method="curriculum", fraction=config.curriculum[index - 1])
        filter_sig = signature(
            "filter", filter_config, {"labeled": source, "calibration": filter_config.calibration}
        )
        run_stage(
            f"round {index}: filter ({filter_config.method})",
            kept,
            filter_sig,
            lambda _fresh, src=source, cfg=filter_config, out=kept: run_filter(src, out, cfg),
        )
        filter_report = json.loads((folder / "kept.jsonl.report.json").read_text())
        student_dir = folder / "student"
        run_stage(
            f"round {index}: train {train_config.student} on {filter_report['n_kept']} rows",
            student_dir,
            train_signature(kept, train_config),
            lambda fresh, data=kept, out=student_dir: train(
                data, out, replace(train_config, overwrite=fresh)
            ),
            all_ranks=True,
        )
        pool_pred = folder / "pool.predicted.jsonl"
        predict(student_dir, config.corpus, pool_pred, f"round {index}: the student relabels the pool")
        entry: dict[str, Any] = {
            "round": index,
            "filter": filter_config.method,
            "kept": filter_report["n_kept"],
            "coverage": round(filter_report["coverage"], 4),
            "kept_precision": (filter_report.get("gold") or {}).get("precision_kept"),
        }
        for split, path in (("dev", config.dev), ("test", config.test)):
            if path:
                out = folder / f"student.{split}.jsonl"
                predict(student_dir, path, out, f"round {index}: the student labels {split}")
                entry[split] = _metrics(out, config.gold_field)
        rounds.append(entry)
        _log(f"round {index}: " + json.dumps({k: v for k, v in entry.items() if k != "round"}))
        source = pool_pred
    report["seconds"] = round(time.perf_counter() - started, 1)
    if main:
        write_json_atomic(out_dir / "report.json", report)
        (out_dir / "report.md").write_text(report_markdown(report))
        _plot(report, out_dir / "rounds.png")
    return report


def report_markdown(report: dict[str, Any]) -> str:
    labeler = report.get("labeler") or {}
    splits = [s for s in ("dev", "test") if any(s in r for r in report["rounds"])]
    header = (
        "| round | filter | kept | kept precision | " + " | ".join(f"{s} accuracy" for s in splits) + " |"
    )
    lines = [header, "|" + "---|" * (4 + len(splits))]
    if labeler:
        cells = [f"{labeler[s]['accuracy']:.4f}" if s in labeler else "" for s in splits]
        lines.append("| labeler | | | | " + " | ".join(cells) + " |")
    for entry in report["rounds"]:
        precision = entry.get("kept_precision")
        cells = [f"{entry[s]['accuracy']:.4f}" for s in splits]
        lines.append(
            f"| {entry['round']} | {entry['filter']} | {entry['kept']} | "
            f"{'' if precision is None else f'{precision:.4f}'} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    rounds = [r["round"] for r in report["rounds"]]
    for split, marker in (("dev", "o"), ("test", "s")):
        values = [r[split]["accuracy"] for r in report["rounds"] if split in r]
        if values:
            ax.plot(rounds, values, marker=marker, label=f"student ({split})")
            labeler = (report.get("labeler") or {}).get(split)
            if labeler:
                ax.axhline(labeler["accuracy"], linestyle="--", linewidth=1, label=f"labeler ({split})")
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy")
    ax.set_xticks(rounds)
    ax.legend(fontsize=8)
    ax.set_title("Self-training rounds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
