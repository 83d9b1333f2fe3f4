"""`llmst pairs score PAIRS -o SCORED --teacher T[,T2...]`: teacher scores for every pair, combined.

Each teacher scores the pairs into its own resumable file (`SCORED.teacher-<name>.jsonl`, `llmst.pairs.teachers`).
With `--calibrate-on GOLD`, each teacher also scores the gold pairs and is mapped onto their scale (isotonic
regression, monotone and clipped to the gold range, or a linear fit: sklearn), so that teachers on different
scales (a sigmoid cross-encoder squashed into 0..1, an LLM's P(yes)) can be averaged. The output keeps every
input field and adds `id`, `scores: {teacher: raw score}`, `calibrated: {teacher: mapped score}` (with
--calibrate-on) and `score` (their mean). A pair a teacher could not score goes to `SCORED.rejects.jsonl`.
"""

from __future__ import annotations

import time
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from llmst import stage
from llmst.errors import ConfigError
from llmst.pairs.config import ScoreConfig, teacher_name
from llmst.pairs.data import read_scored_pairs, write_pair_outputs
from llmst.pairs.teachers import pair_row_id, score_with_teacher, teacher_identity
from llmst.readers import Reject, iter_checked, read_records
from llmst.records import check_output, keep_input_fields


def score_signature(source: str | Path, config: ScoreConfig) -> str:
    """The signature `score_pairs(source, out, config)` records for `out` (no model loaded)."""
    teachers = [teacher_identity(spec, config) for spec in config.teachers or []]
    inputs = {"input": source, "calibrate_on": config.calibrate_on}
    return stage.signature("pairs-score", config, inputs, teachers=teachers)


def _scores_by_id(path: Path) -> dict[str, float]:
    return {str(r["id"]): float(r["score"]) for _, r in iter_checked(path)}


def fit_mapping(raw: np.ndarray, gold: np.ndarray, method: str):
    """A function mapping a teacher's raw scores onto the gold scale, fitted on the gold pairs."""
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        model = IsotonicRegression(out_of_bounds="clip").fit(raw, gold)
        return model.predict
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit(raw.reshape(-1, 1), gold)
    return lambda x: model.predict(np.asarray(x).reshape(-1, 1))


def _calibration(spec: str, out: Path, config: ScoreConfig):
    gold = read_scored_pairs(config.calibrate_on, config.text_fields, config.gold_field)
    path = out.with_name(f"{out.name}.teacher-{teacher_name(spec)}.gold.jsonl")
    score_with_teacher(spec, config.calibrate_on, path, config, config.overwrite)
    by_id = _scores_by_id(path)
    ids = gold.ids
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ConfigError(
            f"teacher {spec} could not score {len(missing)} gold pairs", hint=f"see {path}.rejects.jsonl"
        )
    raw = np.array([by_id[i] for i in ids])
    return fit_mapping(raw, gold.scores, config.calibration), len(ids)


def score_pairs(source: str | Path, out: str | Path, config: ScoreConfig) -> dict[str, Any]:
    """Score PAIRS with every teacher, map and combine; write OUT, OUT.rejects.jsonl and OUT.report.json
    atomically, then the signature marker. Returns the report."""
    started = time.perf_counter()
    source, out = str(source), Path(out)
    check_output(out, [source, config.calibrate_on])
    raw: dict[str, dict[str, float]] = {}
    mappings, rejects = {}, []
    for spec in config.teachers or []:
        name = teacher_name(spec)
        path = out.with_name(f"{out.name}.teacher-{name}.jsonl")
        score_with_teacher(spec, source, path, config, config.overwrite)
        raw[name] = _scores_by_id(path)
        if config.calibrate_on:
            mappings[name] = _calibration(spec, out, config)
    records, seen = [], set()
    rows = read_records(source)
    for item in rows if config.limit is None else islice(rows, config.limit):
        if isinstance(item, Reject):
            rejects.append(item.to_json())
            continue
        row_id = pair_row_id(item.record, config.text_fields)
        missing = [name for name, scores in raw.items() if row_id not in scores]
        if missing:
            rejects.append(
                {"line": item.line, "reason": f"not scored by {missing} (see their rejects files)"}
            )
            continue
        if row_id in seen:
            raise ConfigError(f"{source}, line {item.line}: duplicate pair id {row_id!r}")
        seen.add(row_id)
        scores = {name: raw[name][row_id] for name in raw}
        record = {**keep_input_fields(item.record), "id": row_id, "scores": scores}
        if mappings:
            record["calibrated"] = {
                name: round(float(mappings[name][0](np.array([value]))[0]), 6)
                for name, value in scores.items()
            }
        combined = record.get("calibrated", scores)
        record["score"] = round(float(np.mean(list(combined.values()))), 6)
        records.append(record)
    report = {
        "input": source,
        "out": str(out),
        "teachers": list(raw),
        "scored": len(records),
        "rejected": len(rejects),
        "calibration": {
            name: {"method": config.calibration, "gold_pairs": m[1]} for name, m in mappings.items()
        },
        "score_mean": round(float(np.mean([r["score"] for r in records])), 4) if records else None,
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_pair_outputs(out, records, rejects, report, score_signature(source, config), "pairs-score")
    return report
