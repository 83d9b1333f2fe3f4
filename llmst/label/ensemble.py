"""Prompt ensembles in one `llmst label` run: several prompts, one model load, averaged probabilities.

Members are the prompts of `--task` and of each `--template`, each with `--orders` seeded orders of the
few-shot demonstrations (`--seed`, `--seed + 1`, ...), plus, with `--zero-shot-member`, the zero-shot prompt
of `--task`. Every member is an ordinary labeling job (calibrated on its own, cached and resumable) written
to `OUT.members/<member>.jsonl`; the members are then fused by `llmst aggregate --method mean` into OUT, so
each fused record keeps every member's label in `sources` (for `filter --method agreement`), its
`calibration` is `aggregate:mean` with every member's biases, and the member files keep their
probabilities. OUT's signature covers every member's prompt.

With `--calibration-from POOL` (POOL labeled by the same ensemble), member k takes the calibration of
POOL's member k, so a gold calibration set is scored exactly like the pool.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from llmst import stage
from llmst.aggregate.config import AggregateConfig
from llmst.aggregate.stage import run_aggregate
from llmst.backends import Backend, make_backend
from llmst.errors import ConfigError
from llmst.label.config import LabelConfig
from llmst.label.run import LabelSummary, label_corpus, label_signature, shard_details
from llmst.readers import iter_checked


def members_dir(out: str | Path) -> Path:
    """Where the member outputs of ensemble output `out` live."""
    out = Path(out)
    return out.with_name(out.name + ".members")


def _member_name(task: str, order: int | None) -> str:
    stem = Path(task).stem if task.endswith((".yaml", ".yml")) else task
    return f"{stem}-zero-shot" if order is None else f"{stem}-order{order}"


def ensemble_members(config: LabelConfig) -> dict[str, LabelConfig]:
    """The member labeling jobs of an ensemble config, by member name (in a fixed order)."""
    single = {"templates": None, "orders": 1, "zero_shot_member": False}
    tasks = [config.task, *(config.templates or [])]
    members: dict[str, LabelConfig] = {}
    for task in tasks:
        for order in range(config.orders):
            name = _member_name(task, order if config.few_shot else None)
            if name in members:
                raise ConfigError(f"--template {task} appears twice in the ensemble")
            members[name] = replace(config, task=task, seed=config.seed + order, **single)
    if config.zero_shot_member:
        members[_member_name(config.task, None)] = replace(config, few_shot=None, **single)
    labels = members[next(iter(members))].build_task().label_names
    for name, member in members.items():
        other = member.build_task().label_names
        if other != labels:
            raise ConfigError(
                f"ensemble member {name} has the labels {other}, not {labels} (in this order)",
                hint="every --template must list the labels of --task, in the same order",
            )
    return members


def _check_unique_ids(source: str | Path, config: LabelConfig) -> None:
    """Members are fused by id: refuse a corpus with repeated ids before any member is labeled."""
    from llmst.readers import Row, read_records
    from llmst.records import record_id, record_text

    task = config.build_task()
    seen: dict[str, int] = {}
    for item in read_records(source, config.encoding):
        if not isinstance(item, Row):
            continue
        text = record_text(item.record, task.text_fields)
        if text is None:
            continue
        rid = record_id(item.record, text, config.id_field)
        if rid in seen:
            raise ConfigError(
                f"{source}: lines {seen[rid]} and {item.line} have the same id {rid!r} (an ensemble fuses its "
                "members by id; rows without an id are identified by their text)",
                hint=f"give every row a unique '{config.id_field}' field (--id-field), or drop repeated rows",
            )
        seen[rid] = item.line


def ensemble_prompt_hash(config: LabelConfig) -> str:
    """One hash of every member's prompt (with its demonstrations) and of the fusion."""
    from llmst.label.run import member_prompt_hash

    parts = {name: member_prompt_hash(member) for name, member in ensemble_members(config).items()}
    payload = json.dumps({"members": parts, "fusion": "mean"}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _member_calibration(config: LabelConfig, name: str) -> str | None:
    if not config.calibration_from:
        return None
    path = members_dir(config.calibration_from) / f"{name}.jsonl"
    if not path.exists():
        raise ConfigError(
            f"--calibration-from {config.calibration_from} has no member '{name}' ({path})",
            hint="label the pool with the same ensemble options first",
        )
    return str(path)


def label_ensemble(
    source: str | Path, output: str | Path, config: LabelConfig, backend: Backend | None = None
) -> LabelSummary:
    """Label `source` with every member prompt (one backend for all), then fuse them into `output`."""
    out = Path(output)
    members = ensemble_members(config)
    _check_unique_ids(source, config)
    folder = members_dir(out)
    if out.exists() and not folder.exists() and not config.overwrite:
        raise ConfigError(f"{out} already exists", hint="pass --overwrite to replace it")
    folder.mkdir(parents=True, exist_ok=True)
    own_backend = backend is None
    if backend is None:
        backend = make_backend(config.backend_spec())
    summaries: dict[str, LabelSummary] = {}
    try:
        for name, member in members.items():
            member = replace(member, calibration_from=_member_calibration(config, name))
            summaries[name] = label_corpus(source, folder / f"{name}.jsonl", member, backend=backend)
    finally:
        if own_backend:
            backend.close()
    paths = [str(folder / f"{name}.jsonl") for name in members]
    run_aggregate(paths, out, AggregateConfig(method="mean", plots=False))
    first = next(iter(summaries.values()))
    summary = LabelSummary(
        output=str(out),
        rejects=first.rejects,
        rows_read=first.rows_read,
        labeled=first.labeled,
        rejected=first.rejected,
        truncated=max(s.truncated for s in summaries.values()),
        resumed_rows=first.resumed_rows,
        other_shards=first.other_shards,
        shard=config.shard,
        from_cache=sum(s.from_cache for s in summaries.values()),
        reused_from_prior_fit=sum(s.reused_from_prior_fit for s in summaries.values()),
        computed=sum(s.computed for s in summaries.values()),
        prior_fit_computed=sum(s.prior_fit_computed for s in summaries.values()),
        seconds=round(sum(s.seconds for s in summaries.values()), 3),
        calibration=config.calibrate if not config.calibration_from else first.calibration,
        prompt_hash=ensemble_prompt_hash(config),
        members={name: s.to_json() for name, s in summaries.items()},
    )
    scored = summary.computed + summary.prior_fit_computed
    summary.docs_per_second = round(scored / summary.seconds, 2) if scored and summary.seconds else None
    summary.label_counts = _label_counts(out)
    summary.signature = label_signature(source, config)
    details = {}
    if config.shard is not None:  # what `llmst merge` checks (the members' rejects are those of the rows)
        job = label_signature(source, replace(config, shard=None))
        details = shard_details(config.shard, job, Path(first.rejects).relative_to(out.parent), summary)
    stage.write_marker(
        out, summary.signature, stage="label", rows=summary.labeled, input=str(source), **details
    )
    return summary


def _label_counts(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _line, record in iter_checked(out):
        counts[record["label"]] = counts.get(record["label"], 0) + 1
    return counts
