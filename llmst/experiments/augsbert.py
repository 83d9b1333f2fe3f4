"""`llmst augsbert CONFIG.yaml`: Augmented SBERT (Thakur et al. 2021, "Augmented SBERT: Data Augmentation Method
for Improving Bi-Encoders for Pairwise Sentence Scoring Tasks"), in-domain.

A gold train pair that is also a dev or test pair (either order, compared as the leak guard compares) is
dropped from training, counted in the report and written to `data/train.rejects.jsonl` with its line. A
cross-encoder teacher learns the gold train pairs (`llmst train --kind cross-encoder`); new pairs are sampled
from the gold train sentences (`llmst pairs sample`, one file per method, with the dev and test pairs excluded:
the leak guard, and the gold train pairs themselves); the silver set takes one pair from each method in turn
(each method's pairs in a seeded order, a pair already taken skipped) until it holds `silver` pairs, or every
sampled pair when `silver` is absent, and is scored by the teacher (`llmst pairs score`). Per seed,
bi-encoders learn the gold pairs alone (the baseline) and the gold plus silver pairs (`llmst train --kind
bi-encoder`), and, with `control: true`, gold plus exactly as many randomly paired silver pairs (the control:
AugSBERT found random pairs hurt). Every model is scored by Spearman x 100 on dev and test
(`llmst.pairs.evaluate`); the report gives the mean over seeds with a 95% t-interval and the paired difference
to gold-only. The seeds vary the bi-encoder students only (head, data order, dropout): the teacher, the sampled
pairs and the silver sets are the same for every seed, so the intervals measure student training alone. Every
stage's output stays under `out_dir` with its signature: a rerun recomputes only what changed (change
`student.epochs` and the teacher and silver pairs are reused).

Config (YAML):

    out_dir: runs/augsbert-stsb
    data: {train: stsb-train.jsonl, dev: stsb-dev.jsonl, test: stsb-test.jsonl,
           gold_field: label, gold_scale: 1}     # gold / gold_scale is the target (it must lie in 0..1)
    teacher: {student: minilm-l6, epochs: 3}     # llmst train options of the cross-encoder teacher
    sample: {methods: [bm25, semantic], top_k: 3}   # llmst pairs sample options, one file per method
    silver: 6000                                 # silver pairs (all sampled pairs when absent), >= methods
    control: true                                # also gold + as many random silver pairs
    score: {max_length: 128, batch_size: 64}     # llmst pairs score options of the teacher
    student: {student: minilm-l6, loss: cosent, epochs: 1, learning_rate: 2.0e-5}   # the bi-encoders
    seeds: [0, 1, 2, 3, 4]

Outputs: `data/` (the gold files as `id, text_a, text_b, label`; `train.rejects.jsonl` and `report.json`:
the train pairs dropped as dev or test pairs), `teacher/`, `silver/` (sampled, subset and
scored pairs per variant), `train/<variant>.jsonl`, `seed<s>/<variant>/` (each student) with `<variant>.eval.json`,
and `report.json`, `report.md`, `augsbert.png`.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmst.errors import ConfigError
from llmst.experiments import pair_stages as stages
from llmst.experiments.orchestration import build, log, run_stage, start_experiment
from llmst.readers import iter_checked
from llmst.records import write_json_atomic, write_jsonl_atomic
from llmst.stage import signature

OWNER = "augsbert"
SPLITS = ("train", "dev", "test")
_OWNED_SAMPLE = {
    *("method", "exclude", "text_fields", "progress", "corpus", "positive_field", "limit", "new_only")
}


@dataclass
class AugSBERTConfig:
    """An Augmented SBERT experiment: see `llmst.experiments.augsbert`."""

    out_dir: str
    data: dict[str, Any]
    teacher: dict[str, Any] = field(default_factory=dict)
    student: dict[str, Any] = field(default_factory=lambda: {"loss": "cosent"})
    sample: dict[str, Any] = field(default_factory=lambda: {"methods": ["bm25", "semantic"]})
    silver: int | None = None
    control: bool = False
    subset_seed: int = 0
    score: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    source: str | None = None  # the YAML file this came from

    def __post_init__(self) -> None:
        from llmst.pairs.config import SampleConfig

        data = self.data if isinstance(self.data, dict) else {}
        unknown = set(data) - {*SPLITS, "text_field", "gold_field", "gold_scale"}
        if unknown:
            raise ConfigError(f"augsbert: unknown data keys {sorted(unknown)}")
        for key in ("train", "test"):
            if not data.get(key):
                raise ConfigError(f"augsbert: data.{key} is required (a file of gold-scored pairs)")
        for key in SPLITS:
            if data.get(key) and not Path(data[key]).is_file():
                raise ConfigError(f"augsbert: data.{key} not found: {data[key]}")
        text = data.get("text_field", "text_a,text_b")
        fields = text.split(",") if isinstance(text, str) else list(text)
        scale = data.get("gold_scale", 1)
        if len(fields) != 2 or isinstance(scale, bool) or not isinstance(scale, int | float) or scale <= 0:
            raise ConfigError(
                "augsbert: data.text_field names two fields and data.gold_scale is a number > 0"
            )
        self.data = {
            **{key: str(data[key]) if data.get(key) else None for key in SPLITS},
            "text_fields": [f.strip() for f in fields],
            "gold_field": data.get("gold_field", "label"),
            "gold_scale": float(scale),
        }
        if (
            not isinstance(self.seeds, list)
            or not self.seeds
            or not all(stages.is_int(s) for s in self.seeds)
        ):
            raise ConfigError("augsbert: seeds must be a non-empty list of integers", hint="seeds: [0, 1, 2]")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("augsbert: seeds must be distinct")
        if self.silver is not None and (not stages.is_int(self.silver) or self.silver < 1):
            raise ConfigError("augsbert: silver must be a whole number >= 1 (or absent: every sampled pair)")
        if not isinstance(self.control, bool) or not stages.is_int(self.subset_seed):
            raise ConfigError("augsbert: control must be true or false and subset_seed an integer")
        self.teacher = stages.train_options(self.teacher, "teacher", OWNER, "cross-encoder")
        self.student = stages.train_options(self.student, "student", OWNER, "bi-encoder")
        self.score = stages.score_options(self.score, "score", OWNER)
        if not isinstance(self.sample, dict):
            raise ConfigError("augsbert: 'sample' must be a mapping", hint="e.g. {methods: [bm25, semantic]}")
        sample = dict(self.sample)
        methods = sample.pop("methods", ["bm25", "semantic"])
        methods = [methods] if isinstance(methods, str) else methods
        allowed = ("bm25", "semantic", "random", "recombine")
        if not isinstance(methods, list) or not methods or any(m not in allowed for m in methods):
            raise ConfigError(
                f"augsbert: sample.methods must be one or more of {list(allowed)}, not {methods}"
            )
        if len(set(methods)) != len(methods):
            raise ConfigError("augsbert: sample.methods must be distinct")
        if self.silver is not None and self.silver < len(methods):
            raise ConfigError(
                f"augsbert: silver ({self.silver}) is less than the number of sample.methods ({len(methods)})",
                hint="every method gives at least one silver pair: raise silver or list fewer methods",
            )
        taken = _OWNED_SAMPLE & set(sample)
        if taken:
            raise ConfigError(
                f"augsbert: 'sample' may not set {sorted(taken)}",
                hint="list the methods in sample.methods; the dev and test pairs and the gold train pairs "
                "are always excluded from the silver pairs",
            )
        for method in {*methods, *(["random"] if self.control else [])}:
            build(SampleConfig, sample, "sample", owner=OWNER, method=method, progress=False)
        self.sample = {"methods": methods, **sample}

    def variants(self) -> dict[str, list[str]]:
        """Each bi-encoder variant and the sampling methods of its silver pairs (none: gold only)."""
        out = {"gold": [], "augsbert": list(self.sample["methods"])}
        if self.control:
            out["random"] = ["random"]
        return out


def load_augsbert_config(path: str | Path) -> AugSBERTConfig:
    """Read and validate an augsbert YAML; relative paths are taken from the YAML file's folder."""
    sections = ("data", "teacher", "student", "sample", "score")
    required = ("out_dir", "data")
    return stages.load_config(path, AugSBERTConfig, "augsbert config", required, sections=sections)


def _log(message: str) -> None:
    log(OWNER, message)


def _gold_rows(source: str, data: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """A gold pair file as (line, `{id, text_a, text_b, label}`) (label = gold / gold_scale); a row without
    both texts or a numeric gold score is an error naming its line, never dropped."""
    from llmst.pairs.data import read_pair_rows
    from llmst.records import record_id

    return [
        (
            row.line,
            {
                "id": record_id(row.record, f"{row.text_a}\n{row.text_b}"),  # as read_scored_pairs does
                "text_a": row.text_a,
                "text_b": row.text_b,
                "label": float(row.target) / data["gold_scale"],
            },
        )
        for row in read_pair_rows(source, data["text_fields"], data["gold_field"])
    ]


def _data(config: AugSBERTConfig, out_dir: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """The gold files as `data/<split>.jsonl` in the fields every later stage reads, less the train pairs that
    are also dev or test pairs (`pair_key`: either order, whitespace and case folded, as the leak guard
    compares): those go to `data/train.rejects.jsonl` with their line, their counts to `data/report.json`."""
    from llmst.pairs.sample import pair_key

    folder = out_dir / "data"
    files = {split: config.data[split] for split in SPLITS if config.data[split]}
    options = {k: config.data[k] for k in ("text_fields", "gold_field", "gold_scale")}
    options["drop_eval_pairs"] = True

    def write(_fresh: bool) -> None:
        rows = {split: _gold_rows(source, config.data) for split, source in files.items()}
        evals = {
            split: {pair_key(r["text_a"], r["text_b"]) for _, r in rows[split]}
            for split in ("dev", "test")
            if split in rows
        }
        kept, rejects = [], []
        counts = {"train": len(rows["train"]), **{f"also_{split}": 0 for split in evals}}
        for line, row in rows["train"]:
            found = [split for split, keys in evals.items() if pair_key(row["text_a"], row["text_b"]) in keys]
            for split in found:
                counts[f"also_{split}"] += 1
            if found:
                rejects.append({"line": line, "reason": f"also a {' and '.join(found)} pair", **row})
            else:
                kept.append(row)
        if not kept:
            raise ConfigError(f"augsbert: every pair of {files['train']} is also a dev or test pair")
        counts |= {"dropped": len(rejects), "kept": len(kept)}
        for split in files:
            write_jsonl_atomic(
                folder / f"{split}.jsonl", kept if split == "train" else [r for _, r in rows[split]]
            )
        write_jsonl_atomic(folder / "train.rejects.jsonl", rejects)
        write_json_atomic(folder / "report.json", counts)
        if rejects:
            _log(f"dropped {len(rejects)} gold train pair(s) that are also dev/test pairs: see {folder}")

    run_stage("gold pairs", folder, signature("augsbert-data", options, files), write, owner=OWNER)
    counts = json.loads((folder / "report.json").read_text())
    return {split: folder / f"{split}.jsonl" for split in files}, counts


def _sampled(config: AugSBERTConfig, method: str, gold: dict[str, Path], out_dir: Path) -> Path:
    from llmst.pairs.config import SampleConfig, sample_signature
    from llmst.pairs.sample import sample_pairs

    options = {k: v for k, v in config.sample.items() if k != "methods"}
    exclude = [str(gold[split]) for split in ("dev", "test") if split in gold]
    sample_config = SampleConfig(**options, method=method, exclude=exclude, new_only=True, progress=False)
    out = out_dir / "silver" / f"sampled-{method}.jsonl"
    run_stage(
        f"sample {method} pairs from the gold train sentences",
        out,
        sample_signature(gold["train"], sample_config),
        lambda _fresh: sample_pairs(gold["train"], out, sample_config),
        owner=OWNER,
    )
    return out


def round_robin(pools: list[Iterator[dict[str, Any]]], quota: int | None) -> list[dict[str, Any]]:
    """One record from each pool in turn, a record whose `id` is already taken skipped, until `quota` records
    are taken (every record of every pool when None) or the pools run out."""
    rows: list[dict[str, Any]] = []
    taken: set[str] = set()
    active = list(pools)
    while active and (quota is None or len(rows) < quota):
        for pool in list(active):
            if quota is not None and len(rows) >= quota:
                break
            record = next((r for r in pool if r["id"] not in taken), None)
            if record is None:
                active.remove(pool)
            else:
                taken.add(record["id"])
                rows.append(record)
    return rows


def _subset(
    config: AugSBERTConfig, name: str, sampled: list[Path], quota: int | None, out_dir: Path, exact: bool
) -> Path:
    """The silver pairs of variant `name`: `round_robin` over the methods' sampled pairs, each method's in
    a seeded order, up to `quota` pairs; `exact`: exactly `quota` or an error (the control's size)."""
    out = out_dir / "silver" / f"{name}.jsonl"
    options = {"quota": quota, "exact": exact, "seed": config.subset_seed, "take": "round-robin"}
    sig = signature("augsbert-subset", options, {f"sampled{i}": path for i, path in enumerate(sampled)})

    def write(_fresh: bool) -> None:
        pools = []
        for path in sampled:
            records = [record for _, record in iter_checked(path)]
            random.Random(config.subset_seed).shuffle(records)
            pools.append(iter(records))
        rows = round_robin(pools, quota)
        if not rows:
            raise ConfigError(
                f"augsbert: the {name} sampling found no new pairs", hint="see silver/*.report.json"
            )
        if exact and len(rows) < quota:
            raise ConfigError(
                f"augsbert: the {name} control has {len(rows)} new pairs, fewer than the {quota} silver pairs "
                "of augsbert it must match",
                hint="raise sample.top_k or lower silver; see silver/sampled-random.jsonl.report.json",
            )
        write_jsonl_atomic(out, rows)

    run_stage(f"silver subset {name}", out, sig, write, owner=OWNER)
    return out


def _rows(path: Path) -> int:
    return sum(1 for _ in iter_checked(path))


def _training_file(name: str, gold: Path, scored: Path, out_dir: Path) -> Path:
    """Gold pairs (their label) plus silver pairs (the teacher's score as their label)."""
    out = out_dir / "train" / f"{name}.jsonl"
    sig = signature("augsbert-train-file", {"name": name}, {"gold": gold, "silver": scored})

    def write(_fresh: bool) -> None:
        rows = [row for _, row in iter_checked(gold)]
        rows += [
            {"id": r["id"], "text_a": r["text_a"], "text_b": r["text_b"], "label": r["score"]}
            for _, r in iter_checked(scored)
        ]
        write_jsonl_atomic(out, rows)

    run_stage(f"training pairs {name}", out, sig, write, owner=OWNER)
    return out


def _summary(values: dict[str, list[float]]) -> dict[str, Any]:
    return {
        "per_seed": values,
        "mean": {split: round(float(np.mean(v)), 2) for split, v in values.items()},
        "ci": {split: stages.t_interval(v) for split, v in values.items()},
    }


def _paired(values: list[float], baseline: list[float]) -> dict[str, Any]:
    diffs = [round(a - b, 2) for a, b in zip(values, baseline, strict=True)]
    return {"mean": round(float(np.mean(diffs)), 2), "ci": stages.t_interval(diffs), "per_seed": diffs}


def run_augsbert(config: AugSBERTConfig) -> dict[str, Any]:
    """Run (or resume) the experiment; returns the report also written to `out_dir/report.json`."""
    out_dir = Path(config.out_dir)
    main = start_experiment(out_dir, config.source)
    started = time.perf_counter()
    gold, gold_counts = _data(config, out_dir)
    evals = {split: str(gold[split]) for split in ("dev", "test") if split in gold}
    teacher_options = {"score_field": "label", **config.teacher}
    teacher = stages.train_model(
        "teacher cross-encoder",
        gold["train"],
        out_dir / "teacher",
        teacher_options,
        OWNER,
        kind="cross-encoder",
    )
    report: dict[str, Any] = {"config": asdict(config), "gold": gold_counts}
    report["teacher"] = stages.evaluate_model(
        "teacher", teacher, "cross-encoder", evals, out_dir / "teacher.eval.json", OWNER
    )
    start = config.student.get("student", "minilm-l6")
    report["start"] = stages.evaluate_model(
        "start student", start, "bi-encoder", evals, out_dir / "start.eval.json", OWNER
    )
    variants = {name: methods for name, methods in config.variants().items() if methods}
    methods = dict.fromkeys(m for names in variants.values() for m in names)
    sampled = {method: _sampled(config, method, gold, out_dir) for method in methods}
    pools = [sampled[m] for m in variants["augsbert"]]
    subsets = {"augsbert": _subset(config, "augsbert", pools, config.silver, out_dir, exact=False)}
    if config.control:  # the control: exactly as many pairs as the augsbert set holds
        size = _rows(subsets["augsbert"])
        subsets["random"] = _subset(config, "random", [sampled["random"]], size, out_dir, exact=True)
    files, silver = {"gold": gold["train"]}, {}
    for name, subset in subsets.items():
        scored = stages.score_with(
            f"the teacher scores the {name} silver pairs",
            [f"cross-encoder:{teacher}"],
            subset,
            out_dir / "silver" / f"{name}.scored.jsonl",
            stages.in_process(config.score),
            OWNER,
        )
        silver[name] = {"methods": variants[name], "pairs": _rows(scored)}
        files[name] = _training_file(name, gold["train"], scored, out_dir)
    if len({entry["pairs"] for entry in silver.values()}) > 1:
        raise ConfigError(
            f"augsbert: the teacher scored unequal silver sets {silver}",
            hint="see silver/<variant>.scored.jsonl.rejects.jsonl",
        )
    report["silver"] = silver
    results: dict[str, dict[str, list[float]]] = {name: {s: [] for s in evals} for name in files}
    for seed in config.seeds:
        for name, data in files.items():
            folder = out_dir / f"seed{seed}"
            model = stages.train_model(
                f"seed {seed}: bi-encoder {name}",
                data,
                folder / name,
                {"score_field": "label", **config.student},
                OWNER,
                kind="bi-encoder",
                seed=seed,
            )
            scores = stages.evaluate_model(
                f"seed {seed}: {name}", model, "bi-encoder", evals, folder / f"{name}.eval.json", OWNER
            )
            for split, value in scores.items():
                results[name][split].append(value)
    report["variants"] = {name: _summary(values) for name, values in results.items()}
    report["versus_gold"] = {
        name: {split: _paired(values[split], results["gold"][split]) for split in values}
        for name, values in results.items()
        if name != "gold"
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    if main:
        from llmst.experiments.pair_report import augsbert_markdown, plot_augsbert

        write_json_atomic(out_dir / "report.json", report)
        (out_dir / "report.md").write_text(augsbert_markdown(report))
        plot_augsbert(report, out_dir / "augsbert.png")
    _log("done: " + ", ".join(f"{n} {v['mean']}" for n, v in report["variants"].items()))
    return report
