"""`llmst w2s CONFIG.yaml`: weak-to-strong generalization experiments (Burns et al. 2023) with PGR intervals.

Per seed: the gold train rows are shuffled and split into halves A and B; the weak supervisor is trained on A's
gold labels (or is an LLM labeler that needs no training, or an ensemble of either, soft labels averaged) and
labels B and the test rows; the strong student is trained on B's weak labels (the transfer model, once per
transfer loss and once per selection of the weak labels) and, separately, on B's gold labels (the ceiling).
All are scored on the test rows; PGR = (transfer - weak) / (ceiling - weak), with paired bootstrap intervals
(`llmst.experiments.pgr`). Every stage writes its output under `out_dir/seed<s>/` with its signature, so a
rerun recomputes only what changed and resumes what was interrupted. Under `torchrun` / `accelerate launch`
every rank trains the students together (DDP, or FSDP with `scripts/accelerate/fsdp.yaml`) and rank 0 alone
runs the other stages.

Config (YAML):

    out_dir: runs/w2s-sst2
    data: {train: train.jsonl, test: test.jsonl, text_field: text, gold_field: gold}  # gold-labeled rows
    n_train: 4000                  # train rows used, split 50/50 into A (weak) and B (transfer)
    seeds: [0, 1, 2, 3, 4]
    weak: {student: minilm-l6, epochs: 2}     # or {label: {model: ..., task: ...}} or {ensemble: [...]}
    strong: {student: mpnet-base, epochs: 2}  # any llmst train options (lora: true, ...)
    loss: [xent, logconf]          # xent (soft weak labels) | hard | logconf; one transfer model each
    select: [{method: per-class, fraction: 0.5}]   # llmst filter options; each its own transfer model
    calibration_rows: 0            # > 0: that many gold rows of A are held out of weak training, labeled by
                                   # the weak supervisor, and calibrate conformal/learned selection
    min_gap: 0.02                  # PGR is undefined when ceiling - weak is below this
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from llmst.errors import ConfigError
from llmst.experiments import pgr as pgr_stats
from llmst.experiments.orchestration import log, run_stage, start_experiment
from llmst.experiments.w2s_config import W2SConfig
from llmst.experiments.w2s_report import plot_pgr, report_markdown
from llmst.readers import iter_checked
from llmst.records import label_index, probs_by_id, record_text, write_json_atomic, write_jsonl_atomic
from llmst.stage import signature

DEBATE_FIELD = "debate"


def transcript_text(record: dict[str, Any]) -> str:
    """A debate record's turns as one text: `Debater A (yes): ...` per turn."""
    assigned = record.get("assigned") or {}
    lines = []
    for turn in record.get("turns") or []:
        speaker = turn["speaker"]
        name = "Consultant" if speaker == "Consultant" else f"Debater {speaker}"
        lines.append(f"{name} ({assigned.get(speaker, '?')}): {turn['text']}")
    return "\n".join(lines)


def _log(message: str) -> None:
    log("w2s", message)


def _gold_rows(source: str, data: dict[str, Any], labels: list[str] | None) -> tuple[list[dict], list[str]]:
    """Rows of a gold-labeled file as `{id, <text fields>, gold}` (gold as a label name); a row without its
    text or with a gold value outside the label set is an error naming its line, never dropped."""
    raw = []
    for line, record in iter_checked(source):
        text = record_text(record, data["text_fields"])
        if text is None or not text.strip():
            raise ConfigError(f"{source}, line {line}: no text in field(s) {data['text_fields']}")
        if record.get(data["gold_field"]) in (None, ""):
            raise ConfigError(f"{source}, line {line}: no gold label in field '{data['gold_field']}'")
        raw.append((line, record))
    if labels is None:
        labels = sorted({str(r[data["gold_field"]]) for _, r in raw})
        if len(labels) < 2:
            raise ConfigError(f"{source}: the gold labels hold a single class ({labels})")
    rows, seen = [], set()
    for line, record in raw:
        index = label_index(record[data["gold_field"]], labels)
        if index < 0:
            raise ConfigError(
                f"{source}, line {line}: gold {record[data['gold_field']]!r} is not one of {labels}"
            )
        row_id = str(record.get(data["id_field"]) or f"{Path(source).stem}-{line}")
        if row_id in seen:
            raise ConfigError(f"{source}, line {line}: duplicate id {row_id!r}")
        seen.add(row_id)
        rows.append({"id": row_id, **{f: record[f] for f in data["text_fields"]}, "gold": labels[index]})
    return rows, labels


def _check_disjoint(train: list[dict], test: list[dict], data: dict[str, Any]) -> None:
    """A test row that is also a train row (same id, or same text) would leak gold labels into training."""
    text_of = lambda row: "\n".join(str(row[f]) for f in data["text_fields"])  # noqa: E731
    test_ids, test_texts = {row["id"] for row in test}, {text_of(row) for row in test}
    for row in train:
        if row["id"] in test_ids or text_of(row) in test_texts:
            raise ConfigError(
                f"w2s: train row {row['id']!r} is also in {data['test']} (same id or same text)",
                hint="train and test must be disjoint; drop the shared rows from one of them",
            )


def _check_same_rows(labeled: Path, source: Path) -> None:
    """The weak labels of B cover exactly B's rows: a row a labeler rejected would silently shrink transfer."""
    expected = {str(row["id"]) for _, row in iter_checked(source)}
    found = {str(row["id"]) for _, row in iter_checked(labeled)}
    if found != expected:
        missing = sorted(expected - found)
        raise ConfigError(
            f"w2s: {labeled} has {len(found)} rows, {source} {len(expected)}"
            + (f" (e.g. {missing[0]!r} has no weak label)" if missing else ""),
            hint=f"see {labeled}.rejects.jsonl",
        )


class _Seed:
    """The stages of one seed, under `out_dir/seed<s>/`."""

    def __init__(self, config: W2SConfig, seed: int, labels: list[str], test: Path):
        from llmst.train import PredictConfig

        self.config, self.seed, self.labels, self.test = config, seed, labels, test
        self.folder = Path(config.out_dir) / f"seed{seed}"
        self.predict_config = PredictConfig(progress=False)

    def _train_config(self, options: dict[str, Any], text_fields: list[str] | None = None, **overrides: Any):
        from llmst.train.config import TrainConfig

        return TrainConfig(
            **{**options, **overrides},
            labels=self.labels,
            text_fields=text_fields or self.config.data["text_fields"],
            seed=self.seed,
            progress=False,
        )

    def train(self, name: str, data: Path, train_config) -> Path:
        import llmst.train as train_module

        out = self.folder / name
        run_stage(
            f"seed {self.seed}: train {name} ({train_config.student})",
            out,
            train_module.train_signature(data, train_config),
            lambda fresh: train_module.train(data, out, replace(train_config, overwrite=fresh)),
            owner="w2s",
            all_ranks=True,  # under torchrun / accelerate launch every rank trains; other stages run on rank 0
        )
        return out

    def predict(self, model: Path, source: Path, out: Path) -> Path:
        import llmst.train as train_module

        run_stage(
            f"seed {self.seed}: {model.name} labels {source.name}",
            out,
            train_module.predict_signature(model, source, self.predict_config),
            lambda _fresh: train_module.predict_file(
                model, source, out, replace(self.predict_config, overwrite=True)
            ),
            owner="w2s",
        )
        return out

    def split(self) -> tuple[Path, Path, Path | None]:
        """Halves A (weak training) and B (transfer) of a seeded shuffle of the gold train rows, and (with
        `calibration_rows`) the first rows of A held out of weak training as a gold calibration slice."""
        folder = self.folder / "split"
        a, b, a_cal = folder / "A.jsonl", folder / "B.jsonl", folder / "A-calibration.jsonl"
        held_out = self.config.calibration_rows
        data = self.config.data
        options = {**data, "n_train": self.config.n_train, "seed": self.seed, "labels": self.labels}
        if held_out:  # only then: runs without a slice keep their signature
            options["calibration_rows"] = held_out
        sig = signature("w2s-split", options, {"train": data["train"]})

        def write(_fresh: bool) -> None:
            rows, _ = _gold_rows(data["train"], data, self.labels)
            n = self.config.n_train or len(rows)
            if n > len(rows):
                raise ConfigError(f"w2s: n_train is {n} but {data['train']} has {len(rows)} rows")
            if held_out and held_out > n // 2 - 2:
                raise ConfigError(
                    f"w2s: calibration_rows ({held_out}) leaves fewer than 2 rows of A ({n // 2}) to train "
                    "the weak model",
                    hint="lower calibration_rows or use more train rows (n_train)",
                )
            order = np.random.default_rng(self.seed).permutation(len(rows))[:n]
            chosen = [{**rows[i], "label": rows[i]["gold"]} for i in order]
            if held_out:
                write_jsonl_atomic(a_cal, chosen[:held_out])
            write_jsonl_atomic(a, chosen[held_out : n // 2])
            write_jsonl_atomic(b, chosen[n // 2 :])

        run_stage(f"seed {self.seed}: split", folder, sig, write, owner="w2s")
        return a, b, (a_cal if held_out else None)

    def _label_config(
        self, options: dict[str, Any], calibration_from: Path | None, text_fields: list[str] | None
    ) -> Any:
        """An LLM weak member's `LabelConfig`; a judge of the debate (`text_fields` has it) reads it too."""
        from llmst.label.config import LabelConfig

        extra = {"calibration_from": str(calibration_from)} if calibration_from else {}
        options = {"text_fields": text_fields or self.config.data["text_fields"], **options, **extra}
        label_config = LabelConfig(**options, progress=False)
        fields = label_config.text_fields or []
        if text_fields and DEBATE_FIELD in text_fields and DEBATE_FIELD not in fields:
            label_config = replace(label_config, text_fields=[*fields, DEBATE_FIELD])
        return label_config

    def _label(
        self,
        options: dict[str, Any],
        source: Path,
        out: Path,
        calibration_from: Path | None,
        text_fields: list[str] | None,
    ) -> None:
        from llmst.label.run import label_corpus, label_signature

        label_config = self._label_config(options, calibration_from, text_fields)
        run_stage(
            f"seed {self.seed}: {label_config.model} labels {source.name}",
            out,
            label_signature(source, label_config),
            lambda fresh: label_corpus(source, out, replace(label_config, overwrite=fresh)),
            owner="w2s",
        )
        first = next(iter_checked(out), (0, {}))[1]
        if first and set(first.get("probs", {})) != set(self.labels):
            raise ConfigError(
                f"w2s: the weak labeler's labels {sorted(first.get('probs', {}))} are not the data's "
                f"labels {self.labels}",
                hint="give data.labels in the labeler's order, or a task whose labels match the gold ones",
            )

    def weak_labels(self, a: Path, b: Path, a_cal: Path | None = None) -> dict[str, Path]:
        """The weak supervisor's labels (the ensemble's mean when several) of B, of the test rows and, when
        there is one, of A's gold calibration slice: `{"B": ..., "test": ..., "calibration": ...}`."""
        members = self.config.weak_members()
        text_fields = None
        inputs = {"B": b, "test": self.test, **({"calibration": a_cal} if a_cal else {})}
        context = self.config.weak.get("context")
        if context:  # every weak member reads the debate transcript after the row's own text
            if any("label" not in member for member in members):  # an LLM labeler does not use A
                a = self._with_context(a, Path(context))
            inputs = {split: self._with_context(path, Path(context)) for split, path in inputs.items()}
            # a trained member's input, or an LLM labeler's prompt (an ad-hoc task renders `Debate: ...`;
            # a task YAML places `{{ debate }}` itself)
            text_fields = [*self.config.data["text_fields"], DEBATE_FIELD]
            for member in [m for m in members if "label" in m]:  # a blind judge fails before any training
                _check_shows_transcript(self._label_config(member["label"], None, text_fields))
        outputs: dict[str, list[Path]] = {split: [] for split in inputs}
        for index, member in enumerate(members):
            name = "weak" if len(members) == 1 else f"weak{index}"
            labeled = {split: self.folder / f"{name}.{split}.jsonl" for split in inputs}
            if "label" in member:
                self._label(member["label"], inputs["B"], labeled["B"], None, text_fields)
                # every other split gets B's fitted calibration: nothing is fitted on test or gold rows
                for split in [split for split in inputs if split != "B"]:
                    self._label(member["label"], inputs[split], labeled[split], labeled["B"], text_fields)
            else:
                model = self.train(name, a, self._train_config(member, text_fields))
                for split, source in inputs.items():
                    self.predict(model, source, labeled[split])
            _check_same_rows(labeled["B"], b)
            if a_cal:
                _check_same_rows(labeled["calibration"], inputs["calibration"])
            for split, path in labeled.items():
                outputs[split].append(path)
        if len(members) == 1:
            return {split: paths[0] for split, paths in outputs.items()}
        return {split: self._average(paths, split) for split, paths in outputs.items()}

    def _with_context(self, rows: Path, debates: Path) -> Path:
        """`rows` with each row's debate transcript (joined on id) in the field `debate`; a row without one is
        an error, never dropped."""
        out = self.folder / "context" / rows.name
        sig = signature("w2s-context", {"field": DEBATE_FIELD}, {"rows": rows, "debates": debates})

        def write(_fresh: bool) -> None:
            transcripts: dict[str, str] = {}
            for line, record in iter_checked(debates):
                if str(record["id"]) in transcripts:
                    raise ConfigError(
                        f"w2s: {debates} line {line}: a second transcript for id {record['id']!r}"
                    )
                transcripts[str(record["id"])] = transcript_text(record)
            joined = []
            for line, row in iter_checked(rows):
                if str(row["id"]) not in transcripts:
                    raise ConfigError(
                        f"w2s: {rows.name} line {line} (id {row['id']!r}) has no transcript in {debates}",
                        hint="run llmst debate on every train and test row (same ids)",
                    )
                joined.append({**row, DEBATE_FIELD: transcripts[str(row["id"])]})
            write_jsonl_atomic(out, joined)

        run_stage(f"seed {self.seed}: debate context for {rows.name}", out, sig, write, owner="w2s")
        return out

    def _average(self, inputs: list[Path], split: str) -> Path:
        from llmst.aggregate.config import AggregateConfig, aggregate_signature
        from llmst.aggregate.stage import run_aggregate

        out = self.folder / f"weak.{split}.jsonl"
        aggregate_config = AggregateConfig(method="mean", gold_field="gold", plots=False)
        run_stage(
            f"seed {self.seed}: average the weak ensemble on {split}",
            out,
            aggregate_signature(inputs, aggregate_config),
            lambda _fresh: run_aggregate(inputs, out, aggregate_config),
            owner="w2s",
        )
        return out

    def select(self, name: str, weak: dict[str, Path], options: dict[str, Any]) -> Path:
        """The weak labels of B kept by one `llmst filter` selection; conformal and learned selection
        calibrate on the weak labels of A's gold slice (rows the weak model never trained on)."""
        from llmst.experiments.w2s_config import CALIBRATED_SELECTORS
        from llmst.filter.config import FilterConfig, filter_signature
        from llmst.filter.stage import run_filter

        if options.get("method") in CALIBRATED_SELECTORS:
            options = {**options, "calibration": str(weak["calibration"]), "gold_field": "gold"}
        filter_config = FilterConfig(**options)
        weak_b = weak["B"]
        out = self.folder / f"kept-{name}.jsonl"
        run_stage(
            f"seed {self.seed}: select weak labels ({filter_config.method})",
            out,
            filter_signature(weak_b, filter_config),
            lambda _fresh: run_filter(weak_b, out, filter_config),
            owner="w2s",
        )
        return out


def _check_shows_transcript(config: Any) -> None:
    """Refuse an LLM labeler whose prompt would not show the debate (e.g. a task template that renders only
    `{{ text }}` while `text` is a field of its own): its labels would silently be the no-debate ones."""
    task = config.build_task()
    marker = "\x1fthe-debate-transcript\x1f"
    record = {**{name: "..." for name in task.text_fields}, DEBATE_FIELD: marker}
    if marker not in task.render(record, record_text(record, task.text_fields) or ""):
        raise ConfigError(
            f"w2s: weak.context: the LLM labeler's prompt (task '{task.name}') does not show the transcript",
            hint="an ad-hoc task (labels: ...) shows it after the text; a task YAML must place {{ debate }}",
        )


def _transfer_options(loss: str) -> dict[str, Any]:
    return {"soft_labels": loss != "hard", "loss": "logconf" if loss == "logconf" else "ce"}


def load_scored(config: W2SConfig, labels: list[str]) -> dict[str, list[pgr_stats.Scored]]:
    """Every variant's per-seed test predictions of a completed run (weak, transfer and ceiling probabilities
    against the gold labels), for `llmst.experiments.pgr` (also across runs: `pgr.compare`)."""
    out_dir = Path(config.out_dir)
    test_rows = [row for _, row in iter_checked(out_dir / "test.jsonl")]
    ids = [str(row["id"]) for row in test_rows]
    gold = np.array([labels.index(row["gold"]) for row in test_rows])
    scored: dict[str, list[pgr_stats.Scored]] = {name: [] for name, _, _ in config.variants()}
    for seed in config.seeds:
        folder = out_dir / f"seed{seed}"
        fixed = {  # weak.test.jsonl: the single weak model's, or the ensemble's mean
            "weak": probs_by_id(folder / "weak.test.jsonl", ids, labels),
            "ceiling": probs_by_id(folder / "ceiling.test.jsonl", ids, labels),
        }
        for name in scored:
            transfer = probs_by_id(folder / f"transfer-{name}.test.jsonl", ids, labels)
            scored[name].append(pgr_stats.Scored(gold, {**fixed, "transfer": transfer}))
    return scored


def run_w2s(config: W2SConfig) -> dict[str, Any]:
    """Run (or resume) every seed; returns the report also written to `out_dir/report.json`."""
    out_dir = Path(config.out_dir)
    main = start_experiment(out_dir, config.source)
    started = time.perf_counter()
    # the label set is data.labels, else that of the train rows
    train_rows, labels = _gold_rows(config.data["train"], config.data, config.data["labels"])
    test_rows, _ = _gold_rows(config.data["test"], config.data, labels)
    _check_disjoint(train_rows, test_rows, config.data)
    test = out_dir / "test.jsonl"
    test_sig = signature("w2s-test", {**config.data, "labels": labels}, {"test": config.data["test"]})
    run_stage("test rows", test, test_sig, lambda _fresh: write_jsonl_atomic(test, test_rows), owner="w2s")
    variants = config.variants()
    for seed in config.seeds:
        stages = _Seed(config, seed, labels, test)
        a, b, a_cal = stages.split()
        weak = stages.weak_labels(a, b, a_cal)
        ceiling = stages.train("ceiling", b, stages._train_config(config.strong))
        stages.predict(ceiling, test, stages.folder / "ceiling.test.jsonl")
        for name, loss, options in variants:
            source = weak["B"] if options is None else stages.select(name, weak, options)
            model = stages.train(
                f"transfer-{name}", source, stages._train_config(config.strong, **_transfer_options(loss))
            )
            stages.predict(model, test, stages.folder / f"transfer-{name}.test.jsonl")
    scored = load_scored(config, labels)
    ids = [row["id"] for row in test_rows]
    report: dict[str, Any] = {"config": asdict(config), "labels": labels, "n_test": len(ids)}
    report["variants"] = {
        name: pgr_stats.summarize(scored[name], config.min_gap, config.bootstrap) for name, _, _ in variants
    }
    primary = variants[0][0]
    report["primary"] = primary
    report.update(report["variants"][primary])  # seeds / mean of the first variant at the top level
    report["versus_" + primary] = {
        name: pgr_stats.compare(scored[name], scored[primary], config.min_gap, config.bootstrap)
        for name, _, _ in variants[1:]
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    if main:
        write_json_atomic(out_dir / "report.json", report)
        (out_dir / "report.md").write_text(report_markdown(report))
        plot_pgr(report, out_dir / "pgr.png")
    return report
