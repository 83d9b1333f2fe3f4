"""What the pair experiments (`augsbert`, `transencoder`) share: their stages (train a pair model, score pairs
with teachers, evaluate a model on gold pairs), each a signature-cached `run_stage`, the validation of the
`llmst train` / `llmst pairs score` options a config passes through, and the t-interval over seeds."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from llmst.errors import ConfigError
from llmst.experiments.orchestration import build, run_stage
from llmst.records import PendingOutputs
from llmst.stage import signature

# Options every pair experiment sets itself on the models it trains and the pairs it scores.
OWNED_TRAIN = {
    "kind",
    "score_field",
    "text_fields",
    "seed",
    "eval",
    "eval_gold_field",
    "progress",
    "overwrite",
}
OWNED_SCORE = {
    *(
        "teachers",
        "text_fields",
        "calibrate_on",
        "calibration",
        "gold_field",
        "limit",
        "overwrite",
        "progress",
    )
}


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def train_options(
    options: Any, section: str, owner: str, kind: str, owned: set[str] = OWNED_TRAIN
) -> dict[str, Any]:
    """`llmst train` options of one section, checked now (one clear error before hours of work)."""
    from llmst.train.config import TrainConfig

    if not isinstance(options, dict):
        raise ConfigError(
            f"{owner}: '{section}' must be a mapping of llmst train options", hint="e.g. {epochs: 1}"
        )
    taken = owned & set(options)
    if taken:
        raise ConfigError(
            f"{owner}: '{section}' may not set {sorted(taken)}",
            hint=f"{owner} sets them itself (the kind, the target field, seeds, evaluation, progress)",
        )
    build(TrainConfig, {**options, "kind": kind}, section, owner=owner, progress=False)
    return dict(options)


def score_options(options: Any, section: str, owner: str) -> dict[str, Any]:
    """`llmst pairs score` options (batch size, max length, judge task, backend, cache), checked now."""
    from llmst.pairs.config import ScoreConfig

    if not isinstance(options, dict):
        raise ConfigError(f"{owner}: '{section}' must be a mapping of llmst pairs score options")
    taken = OWNED_SCORE & set(options)
    if taken:
        raise ConfigError(
            f"{owner}: '{section}' may not set {sorted(taken)}",
            hint=f"{owner} chooses the teachers and the pairs; no gold calibration of teachers",
        )
    build(ScoreConfig, {**options, "teachers": "cross-encoder:x"}, section, owner=owner, progress=False)
    return dict(options)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with PendingOutputs() as pending:
        pending.write_jsonl(path, rows)
        pending.commit()


def train_model(
    name: str, data: Path, out: Path, options: dict[str, Any], owner: str, **overrides: Any
) -> Path:
    """A pair model trained by `llmst train` on `data` (the target in `score_field`) into `out`."""
    from llmst.train import TrainConfig, train, train_signature

    config = TrainConfig(**{**options, **overrides}, progress=False)
    run_stage(
        f"{name} ({Path(config.student).name})",
        out,
        train_signature(data, config),
        lambda fresh: train(data, out, replace(config, overwrite=fresh)),
        owner=owner,
        all_ranks=True,  # under torchrun / accelerate launch every rank trains; other stages run on rank 0
    )
    return out


def score_with(
    name: str, teachers: list[str], source: Path, out: Path, options: dict[str, Any], owner: str
) -> Path:
    """`llmst pairs score` of `source` by `teachers` (their mean in `score`) into `out`."""
    from llmst.pairs.config import ScoreConfig
    from llmst.pairs.score import score_pairs, score_signature

    config = ScoreConfig(**options, teachers=teachers, progress=False)
    run_stage(
        name,
        out,
        score_signature(source, config),
        lambda fresh: score_pairs(source, out, replace(config, overwrite=fresh)),
        owner=owner,
    )
    return out


def evaluate_model(
    name: str, model: str | Path, kind: str, splits: dict[str, str], out: Path, owner: str
) -> dict[str, float]:
    """Spearman x 100 of `model` on each gold pair file of `splits` (`label` field), kept in `out` (JSON)."""
    from llmst.models import model_fingerprint
    from llmst.pairs.evaluate import evaluate_pairs

    if not splits:
        return {}
    sig = signature("pair-eval", {"kind": kind}, splits, model=model_fingerprint(str(model)))

    def run(_fresh: bool) -> None:
        result = {
            split: round(100 * evaluate_pairs(model, path, kind=kind)["spearman"], 2)
            for split, path in splits.items()
        }
        with PendingOutputs() as pending:
            pending.write_json(out, result)
            pending.commit()

    run_stage(f"{name}: Spearman on {', '.join(splits)}", out, sig, run, owner=owner)
    return json.loads(out.read_text())


def t_interval(values: list[float]) -> list[float] | None:
    """The 95% t-interval of the mean of `values` (None for fewer than two)."""
    if len(values) < 2:
        return None
    from scipy import stats

    mean, sem = float(np.mean(values)), float(stats.sem(values))
    half = float(stats.t.ppf(0.975, len(values) - 1) * sem) if sem > 0 else 0.0
    return [round(mean - half, 2), round(mean + half, 2)]
