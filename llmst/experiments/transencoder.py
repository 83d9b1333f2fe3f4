"""`llmst transencoder CONFIG.yaml`: Trans-Encoder (Liu et al. 2022, "Trans-Encoder: Unsupervised sentence-pair
modelling through self- and mutual-distillations"): sentence-pair models from unlabeled pairs alone.

Cycle c (1..`cycles`): the current bi-encoder scores every pair (`llmst pairs score --teacher bi-encoder:...`:
the cosine clipped to [0, 1]); a cross-encoder learns those scores (`llmst train --kind cross-encoder`, BCE by
default, on both orders of each pair with `symmetric: true`, as the paper does); the cross-encoder scores the
pairs (with `symmetric: true` in both orders, the mean of the two is the score); a bi-encoder learns the
cross-encoder's scores (`llmst train --kind bi-encoder`, MSE of the cosine by default as in the paper, or
CoSENT); it is the next cycle's bi-encoder.

- `first_teacher: llm:MODEL` (or `cross-encoder:PATH`): that teacher scores the pairs of cycle 1 instead of the
  bi-encoder (an LLM judge with the shipped `pair-similarity` task, P(Yes); `score.judge_task` for another;
  both orders averaged with `symmetric: true`). `score.backend` / `score.base_url` apply to it alone: the bi-
  and cross-encoders the cycles train always score in-process.
- Mutual distillation (`start: [A, B]`): two chains, each with its own bi- and cross-encoder; every score the
  models of one kind give is the mean of both chains' models (`llmst pairs score` with both as teachers), so
  each model learns from the pair of models of the other kind.
- `init`: where each model's weights start: `alternate` (the paper: a cross-encoder from its chain's current
  bi-encoder, a bi-encoder from the cross-encoder it learns from, with mean pooling), `continue` (each from its
  own previous version; the first cross-encoder from the start bi-encoder) or `fresh` (every model from the
  start model).

Per cycle, the report gives every bi- and cross-encoder's Spearman x 100 on `dev` and `test` (gold pairs; they
are never trained on, and their pairs are removed from the unlabeled ones) next to the start bi-encoder's. A
pair row without both texts is left out and written to `pairs.rejects.jsonl` with its file and line.
Every stage stays under `out_dir/cycle<c>/` with its signature: a rerun recomputes only what changed.

Config (YAML):

    out_dir: runs/transencoder
    pairs: [stsb-train.jsonl, sick-train.jsonl]   # pair files (text_a, text_b); any score field is ignored
    dev: stsb-dev.jsonl                          # optional gold pairs (gold_field): per-cycle metrics
    test: stsb-test.jsonl
    start: minilm-l6                             # or [minilm-l6, mpnet-base]: mutual distillation
    cycles: 3
    first_teacher: llm:qwen2.5-coder-1.5b-instruct   # optional
    cross: {epochs: 1, batch_size: 32, max_length: 128}        # llmst train options (cross-encoders)
    bi: {loss: mse, epochs: 1, batch_size: 32, learning_rate: 2.0e-5}   # llmst train options (bi-encoders)
    score: {batch_size: 64, max_length: 128}     # llmst pairs score options (judge_task; backend: first_teacher)
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from llmst.errors import ConfigError
from llmst.experiments import pair_stages as stages
from llmst.experiments.orchestration import log, run_stage, start_experiment
from llmst.readers import iter_checked
from llmst.records import write_json_atomic, write_jsonl_atomic
from llmst.stage import signature

OWNER = "transencoder"
INITS = ("alternate", "continue", "fresh")
_OWNED = stages.OWNED_TRAIN | {"student"}


def _names(value: Any, key: str) -> list[str]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"transencoder: {key} must be a name or a list of names, not {value!r}")
    return names


@dataclass
class TransEncoderConfig:
    """A Trans-Encoder experiment: see `llmst.experiments.transencoder`."""

    out_dir: str
    pairs: list[str]
    start: list[str] = field(default_factory=lambda: ["minilm-l6"])
    cycles: int = 3
    dev: str | None = None
    test: str | None = None
    gold_field: str = "label"
    text_field: str = "text_a,text_b"
    first_teacher: str | None = None
    init: Literal["alternate", "continue", "fresh"] = "alternate"
    symmetric: bool = True
    cross: dict[str, Any] = field(default_factory=dict)
    bi: dict[str, Any] = field(default_factory=lambda: {"loss": "mse"})
    score: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None
    seed: int = 0
    source: str | None = None  # the YAML file this came from

    def __post_init__(self) -> None:
        from llmst.pairs.config import parse_teacher, teacher_name

        self.pairs = _names(self.pairs, "pairs")
        for path in [*self.pairs, *(p for p in (self.dev, self.test) if p)]:
            if not Path(path).is_file():
                raise ConfigError(f"transencoder: pair file not found: {path}")
        self.start = _names(self.start, "start")
        if len(self.start) > 2:
            raise ConfigError("transencoder: start takes one bi-encoder, or two for mutual distillation")
        if len(self.start) == 2 and teacher_name(f"bi-encoder:{self.start[0]}") == teacher_name(
            f"bi-encoder:{self.start[1]}"
        ):
            raise ConfigError("transencoder: the two start models share a name: give them distinct folders")
        if not stages.is_int(self.cycles) or self.cycles < 1:
            raise ConfigError("transencoder: cycles must be a whole number >= 1")
        if self.init not in INITS:
            raise ConfigError(f"transencoder: init must be one of {list(INITS)}, not {self.init!r}")
        if not isinstance(self.symmetric, bool) or not stages.is_int(self.seed):
            raise ConfigError("transencoder: symmetric must be true or false and seed an integer")
        if self.limit is not None and (not stages.is_int(self.limit) or self.limit < 2):
            raise ConfigError("transencoder: limit must be a whole number >= 2")
        fields = self.text_field.split(",") if isinstance(self.text_field, str) else []
        if len(fields) != 2:
            raise ConfigError("transencoder: text_field names the two text fields, e.g. text_a,text_b")
        if self.first_teacher is not None:
            kind = parse_teacher(self.first_teacher)[0]
            if kind == "bi-encoder":
                raise ConfigError(
                    "transencoder: first_teacher is llm:MODEL or cross-encoder:PATH",
                    hint="the start bi-encoder already teaches the first cycle when first_teacher is absent",
                )
        self.cross = stages.train_options(self.cross, "cross", OWNER, "cross-encoder", _OWNED)
        self.bi = stages.train_options({"loss": "mse", **self.bi}, "bi", OWNER, "bi-encoder", _OWNED)
        if self.bi["loss"] not in ("mse", "cosent", "angle"):
            raise ConfigError(f"transencoder: bi.loss must be mse, cosent or angle, not {self.bi['loss']!r}")
        self.score = stages.score_options(self.score, "score", OWNER, served=self.first_teacher)

    def fields(self) -> list[str]:
        return [f.strip() for f in self.text_field.split(",")]

    def scoring(self, first_teacher: bool) -> dict[str, Any]:
        """The `llmst pairs score` options of a scoring step: every `score` option for `first_teacher`; for
        the bi- and cross-encoders the cycles train, in-process (`backend`/`base_url` dropped)."""
        return dict(self.score) if first_teacher else stages.in_process(self.score)


def load_transencoder_config(path: str | Path) -> TransEncoderConfig:
    """Read and validate a transencoder YAML; relative paths are taken from the YAML file's folder."""
    return stages.load_config(
        path,
        TransEncoderConfig,
        "transencoder config",
        ("out_dir", "pairs"),
        paths=("pairs", "start", "dev", "test"),
        sections=("cross", "bi", "score"),
    )


def _log(message: str) -> None:
    log(OWNER, message)


def _unlabeled(config: TransEncoderConfig, out_dir: Path) -> tuple[Path, dict[str, int]]:
    """The pair files as one file of `{id, text_a, text_b}`: every score dropped, each unordered pair once,
    no pair of the dev or test file (in either order); a row without both texts goes to
    `pairs.rejects.jsonl` (file, line); the counts go to `pairs.report.json`."""
    from llmst.pairs.sample import pair_id, pair_key, read_exclusions

    out = out_dir / "pairs.jsonl"
    counts_path = out_dir / "pairs.report.json"
    fields = config.fields()
    evals = [p for p in (config.dev, config.test) if p]
    inputs = {f"pairs{i}": p for i, p in enumerate(config.pairs)} | {
        f"eval{i}": p for i, p in enumerate(evals)
    }
    sig = signature("transencoder-pairs", {"fields": fields, "limit": config.limit, "rejects": 1}, inputs)

    def write(_fresh: bool) -> None:
        excluded, _ = read_exclusions(evals, fields)
        rows, seen, rejects = [], set(), []
        counts = {"read": 0, "duplicate": 0, "excluded_eval_pair": 0, "no_text": 0}
        for path in config.pairs:
            for line, record in iter_checked(path):
                counts["read"] += 1
                texts = [record.get(name) for name in fields]
                if any(not isinstance(t, str) or not t.strip() for t in texts):
                    counts["no_text"] += 1
                    rejects.append({"file": path, "line": line, "reason": f"no text in field(s) {fields}"})
                    continue
                key = pair_key(*texts)
                if key in excluded:
                    counts["excluded_eval_pair"] += 1
                elif key in seen:
                    counts["duplicate"] += 1
                elif config.limit is None or len(rows) < config.limit:
                    seen.add(key)
                    rows.append({"id": pair_id(*texts), "text_a": texts[0], "text_b": texts[1]})
        if len(rows) < 2:
            raise ConfigError(f"transencoder: fewer than 2 usable pairs in {config.pairs}")
        write_jsonl_atomic(out, rows)
        write_jsonl_atomic(out_dir / "pairs.rejects.jsonl", rejects)
        write_json_atomic(counts_path, {**counts, "pairs": len(rows)})

    run_stage("unlabeled pairs", out, sig, write, owner=OWNER)
    return out, json.loads(counts_path.read_text())


def _both_orders(scored: Path, out: Path) -> Path:
    """Each scored pair as (a, b) and (b, a) with the same score: a cross-encoder reads its input in order."""
    sig = signature("transencoder-symmetric", {}, {"scored": scored})

    def write(_fresh: bool) -> None:
        rows = []
        for _, r in iter_checked(scored):
            rows.append({"id": r["id"], "text_a": r["text_a"], "text_b": r["text_b"], "score": r["score"]})
            rows.append(
                {"id": f"{r['id']}-ba", "text_a": r["text_b"], "text_b": r["text_a"], "score": r["score"]}
            )
        write_jsonl_atomic(out, rows)

    run_stage(f"{scored.parent.name}: both orders of each pair", out, sig, write, owner=OWNER)
    return out


def _reversed(pairs: Path) -> Path:
    """The unlabeled pairs as (b, a), each under its own id (for scoring a pair in both orders)."""
    out = pairs.with_name("pairs.ba.jsonl")
    sig = signature("transencoder-reversed", {}, {"pairs": pairs})

    def write(_fresh: bool) -> None:
        rows = [{"id": r["id"], "text_a": r["text_b"], "text_b": r["text_a"]} for _, r in iter_checked(pairs)]
        write_jsonl_atomic(out, rows)

    run_stage("unlabeled pairs in the other order", out, sig, write, owner=OWNER)
    return out


def _mean_of_orders(ab: Path, ba: Path, out: Path) -> Path:
    """Per pair, the mean of its (a, b) and (b, a) scores (every teacher's and the combined `score`); the
    orders' scores stay under `orders`. A pair one order could not score is left out, in `OUT.rejects.jsonl`."""
    sig = signature("transencoder-mean-of-orders", {}, {"ab": ab, "ba": ba})

    def write(_fresh: bool) -> None:
        other = {r["id"]: r for _, r in iter_checked(ba)}
        rows, rejects = [], []
        for line, r in iter_checked(ab):
            if r["id"] not in other:
                rejects.append(
                    {"id": r["id"], "line": line, "reason": f"not scored in order (b, a): see {ba}"}
                )
                continue
            s = other[r["id"]]
            scores = {name: round((value + s["scores"][name]) / 2, 6) for name, value in r["scores"].items()}
            rows.append(
                {
                    "id": r["id"],
                    "text_a": r["text_a"],
                    "text_b": r["text_b"],
                    "scores": scores,
                    "score": round((r["score"] + s["score"]) / 2, 6),
                    "orders": {"ab": r["score"], "ba": s["score"]},
                }
            )
        write_jsonl_atomic(out, rows)
        write_jsonl_atomic(out.with_name(out.name + ".rejects.jsonl"), rejects)

    run_stage(f"{out.parent.name}: mean of both orders", out, sig, write, owner=OWNER)
    return out


def _score(
    config: TransEncoderConfig, name: str, teachers: list[str], pairs: list[Path], out: Path, first: bool
) -> Path:
    """`llmst pairs score` of the unlabeled pairs by `teachers`; with `symmetric` and a teacher that reads a
    pair in order (a cross-encoder or an LLM: a bi-encoder's cosine is symmetric), in both orders
    (`pairs`: the pairs and `_reversed` of them) and their mean."""
    from llmst.pairs.config import parse_teacher

    options = config.scoring(first_teacher=first)
    ordered = any(parse_teacher(t)[0] != "bi-encoder" for t in teachers)
    if not (config.symmetric and ordered):
        return stages.score_with(name, teachers, pairs[0], out, options, OWNER)
    orders = []
    for order, source in zip(("ab", "ba"), pairs, strict=True):
        scored = out.with_name(f"{out.stem}.{order}.jsonl")
        orders.append(stages.score_with(f"{name} ({order})", teachers, source, scored, options, OWNER))
    return _mean_of_orders(*orders, out)


def _inits(config: TransEncoderConfig, own: list[str], other: list[str]) -> list[str]:
    """Where each chain's next model starts: `alternate` from the other kind's model, `continue` from its
    own previous one, `fresh` from the start model."""
    return {"alternate": other, "continue": own, "fresh": config.start}[config.init]


def _train_chains(
    config: TransEncoderConfig, kind: str, cycle: int, data: Path, inits: list[str], folder: Path
) -> list[str]:
    """Each chain's `kind` model (cross or bi) of `cycle`, trained on `data`'s scores from `inits`."""
    names = _chain_names(config)
    suffixes = [f"-{k}" for k in range(len(names))] if len(names) > 1 else [""]
    options = {"cross": config.cross, "bi": config.bi}[kind]
    return [
        str(
            stages.train_model(
                f"cycle {cycle}: {kind}-encoder {name}",
                data,
                folder / f"{kind}{suffix}",
                {**options, "score_field": "score", "seed": config.seed},
                OWNER,
                kind=f"{kind}-encoder",
                student=init,
            )
        )
        for name, suffix, init in zip(names, suffixes, inits, strict=True)
    ]


def _chain_names(config: TransEncoderConfig) -> list[str]:
    from llmst.pairs.config import teacher_name

    return [teacher_name(f"bi-encoder:{spec}") for spec in config.start]


def run_transencoder(config: TransEncoderConfig) -> dict[str, Any]:
    """Run (or resume) every cycle; returns the report also written to `out_dir/report.json`."""
    out_dir = Path(config.out_dir)
    main = start_experiment(out_dir, config.source)
    started = time.perf_counter()
    pairs, counts = _unlabeled(config, out_dir)
    evals = {}
    if config.dev or config.test:  # the gold files, in the fields `llmst.pairs.evaluate` reads
        evals = _eval_files(config, out_dir)
    names = _chain_names(config)
    unlabeled = [pairs, _reversed(pairs)] if config.symmetric else [pairs]
    report: dict[str, Any] = {"config": asdict(config), "pairs": counts, "chains": names}
    report["start"] = {
        name: stages.evaluate_model(
            f"start {name}", spec, "bi-encoder", evals, out_dir / "start" / f"{name}.eval.json", OWNER
        )
        for name, spec in zip(names, config.start, strict=True)
    }
    bi = list(config.start)  # each chain's current bi-encoder
    cross: list[str] = list(config.start)  # each chain's latest cross-encoder (its start weights at first)
    cycles = []
    for cycle in range(1, config.cycles + 1):
        folder = out_dir / f"cycle{cycle}"
        first = cycle == 1 and config.first_teacher
        teachers = [config.first_teacher] if first else [f"bi-encoder:{model}" for model in bi]
        labels = _score(
            config,
            f"cycle {cycle}: {'the first teacher' if first else 'the bi-encoder(s)'} score the pairs",
            teachers,
            unlabeled,
            folder / "bi-scores.jsonl",
            first=bool(first),
        )
        cross_data = _both_orders(labels, folder / "cross-train.jsonl") if config.symmetric else labels
        cross = _train_chains(config, "cross", cycle, cross_data, _inits(config, cross, bi), folder)
        cross_scores = _score(
            config,
            f"cycle {cycle}: the cross-encoder(s) score the pairs",
            [f"cross-encoder:{model}" for model in cross],
            unlabeled,
            folder / "cross-scores.jsonl",
            first=False,
        )
        bi = _train_chains(config, "bi", cycle, cross_scores, _inits(config, bi, cross), folder)
        entry: dict[str, Any] = {"cycle": cycle, "teacher": config.first_teacher if first else "bi-encoder"}
        for kind, models in (("cross", cross), ("bi", bi)):
            entry[kind] = {
                name: stages.evaluate_model(
                    f"cycle {cycle}: {kind}-encoder {name}",
                    model,
                    f"{kind}-encoder",
                    evals,
                    Path(model).with_name(Path(model).name + ".eval.json"),
                    OWNER,
                )
                for name, model in zip(names, models, strict=True)
            }
        cycles.append(entry)
        _log(f"cycle {cycle}: bi {entry['bi']}, cross {entry['cross']}")
    report["cycles"] = cycles
    report["seconds"] = round(time.perf_counter() - started, 1)
    if main:
        from llmst.experiments.pair_report import plot_transencoder, transencoder_markdown

        write_json_atomic(out_dir / "report.json", report)
        (out_dir / "report.md").write_text(transencoder_markdown(report))
        plot_transencoder(report, out_dir / "transencoder.png")
    return report


def _eval_files(config: TransEncoderConfig, out_dir: Path) -> dict[str, str]:
    """dev and test as `{id, text_a, text_b, label}` files under `out_dir/eval/`."""
    from llmst.pairs.data import read_scored_pairs

    files = {split: path for split, path in (("dev", config.dev), ("test", config.test)) if path}
    folder = out_dir / "eval"
    sig = signature("transencoder-eval-files", {"fields": config.fields(), "gold": config.gold_field}, files)

    def write(_fresh: bool) -> None:
        for split, path in files.items():
            gold = read_scored_pairs(path, config.fields(), config.gold_field)
            rows = zip(gold.ids, gold.text_a, gold.text_b, gold.scores, strict=True)
            write_jsonl_atomic(
                folder / f"{split}.jsonl",
                [{"id": i, "text_a": a, "text_b": b, "label": float(s)} for i, a, b, s in rows],
            )

    run_stage("gold dev/test pairs", folder, sig, write, owner=OWNER)
    return {split: str(folder / f"{split}.jsonl") for split in files}
