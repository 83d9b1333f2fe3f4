"""What the pair experiments (`augsbert`, `transencoder`) share: reading their YAML, their stages (train a pair
model, score pairs with teachers, evaluate a model on gold pairs), each a signature-cached `run_stage`, the
validation of the `llmst train` / `llmst pairs score` options a config passes through, and the t-interval over
seeds."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from llmst.errors import ConfigError
from llmst.experiments.orchestration import build, read_experiment_yaml, resolver, run_stage
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
# Where a teacher runs: they apply to an LLM (or served) teacher named in the config, never to the models an
# experiment trains itself, which always score in-process.
SERVER_SCORE = ("backend", "base_url")


def load_config(
    path: str | Path,
    config_cls: type,
    what: str,
    required: tuple[str, ...],
    paths: tuple[str, ...] = (),
    sections: tuple[str, ...] = (),
):
    """An experiment's YAML as `config_cls`: the keys in `paths` (a file or a list of files) and every value of
    the mappings in `sections` that names a file are taken from the YAML file's folder; a missing or unknown
    key is one ConfigError."""
    path = Path(path)
    data = read_experiment_yaml(path, config_cls, what, required)
    resolve = resolver(path.resolve().parent)
    for key in paths:
        if isinstance(data.get(key), list):
            data[key] = [resolve(v) for v in data[key]]
        elif key in data:
            data[key] = resolve(data[key])
    for section in sections:
        if isinstance(data.get(section), dict):
            data[section] = {k: resolve(v) for k, v in data[section].items()}
    try:
        return config_cls(**data, source=str(path))
    except TypeError as error:
        raise ConfigError(f"{path}: {error}") from error


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


def score_options(options: Any, section: str, owner: str, served: str | None = None) -> dict[str, Any]:
    """`llmst pairs score` options (batch size, max length, judge task, backend, cache), checked now. `backend`
    and `base_url` are checked against teacher `served` (transencoder's `first_teacher`) and refused without
    one: the models an experiment trains always score in-process (`in_process`)."""
    from llmst.pairs.config import ScoreConfig

    if not isinstance(options, dict):
        raise ConfigError(f"{owner}: '{section}' must be a mapping of llmst pairs score options")
    taken = OWNED_SCORE & set(options)
    if taken:
        raise ConfigError(
            f"{owner}: '{section}' may not set {sorted(taken)}",
            hint=f"{owner} chooses the teachers and the pairs; no gold calibration of teachers",
        )
    build(ScoreConfig, {**in_process(options), "teachers": "cross-encoder:x"}, section, owner, progress=False)
    server = sorted(set(SERVER_SCORE) & set(options))
    if server and served is None:
        raise ConfigError(
            f"{owner}: '{section}' may not set {server}",
            hint=f"the models {owner} trains score in-process; a server backend is for transencoder's "
            "first_teacher (llm:MODEL)",
        )
    if served is not None:
        build(ScoreConfig, {**options, "teachers": served}, section, owner=owner, progress=False)
    return dict(options)


def in_process(options: dict[str, Any]) -> dict[str, Any]:
    """Score options for the models an experiment trains: `backend`/`base_url` dropped (in-process, hf)."""
    return {k: v for k, v in options.items() if k not in SERVER_SCORE}


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
