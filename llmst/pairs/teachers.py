"""Teachers of `llmst pairs score`: each scores every pair of a file into its own file (`{id, score}` per pair),
resumably, so that a killed run loses nothing and a rerun reuses what is done.

- `cross-encoder:PATH|HUB_ID`: sentence-transformers `CrossEncoder.predict` (its default activation, so a
  one-label model scores in 0..1), chunk by chunk through `llmst.resumable`, each score cached by the model's
  fingerprint and the pair's texts. With `--backend openai --base-url URL`, `cross-encoder:NAME` is a model
  served there (`vllm serve CE_FOLDER`) and scored through its score API (`POST /score`: the same sigmoid
  score), cached under the served name and the server's description of the model (id, root, context length).
- `bi-encoder:PATH|HUB_ID`: a SentenceTransformer embeds both texts; the score is their cosine clipped to
  [0, 1] (`cosine_to_target`), cached and resumable like a cross-encoder's. This is Trans-Encoder's mapping
  (Liu et al. 2022 train the cross-encoder's BCE on the bi-encoder's raw cosine): a trained sentence encoder
  puts unrelated pairs near 0 and paraphrases near 1, so clipping only ties the rare negative cosines at 0,
  and a bi-encoder later trained with MSE on the cross-encoder's scores stays on the same scale (a shift such
  as (1 + cos) / 2 would squeeze the targets into [0.5, 1] and drift further every cycle).
- `llm:MODEL`: an LLM judge, which is `llmst label` over the pairs with a judge task (so caching, resume and
  rejects are label's own): the score is P(yes) of a yes/no task, or the expected grade of a numeric scale
  rescaled to 0..1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llmst import stage
from llmst.cache import AnswerCache, cache_key
from llmst.errors import ConfigError
from llmst.pairs.config import ScoreConfig, parse_teacher
from llmst.readers import Reject, Row, iter_checked
from llmst.records import record_id, record_text
from llmst.resumable import ResumableOutput, run_resumable
from llmst.shard import shard_filter


def pair_row_id(record: dict[str, Any], fields: list[str]) -> str:
    """The id every teacher gives a pair row: its id field, else the hash `llmst label` gives its texts."""
    return record_id(record, record_text(record, fields) or "")


def _pair_texts(item: Row, fields: list[str]) -> tuple[str, str] | Reject:
    texts = [item.record.get(name) for name in fields]
    if any(not isinstance(t, str) or not t.strip() for t in texts):
        return Reject(item.line, f"no text in field(s) {fields}")
    return texts[0], texts[1]


def teacher_identity(spec: str, config: ScoreConfig) -> str:
    """What a teacher's scores depend on, without loading it: the model's fingerprint (or served name and URL)
    and, for a judge, the judge task's prompt."""
    from llmst.models import model_fingerprint

    kind, model = parse_teacher(spec)
    if kind == "cross-encoder" and config.backend == "openai":  # served: its name at the server's URL
        from llmst.backends import spec_model_identity
        from llmst.backends.base import BackendSpec

        served = BackendSpec(backend="openai", model=model, base_url=config.base_url)
        return f"{kind}:{spec_model_identity(served)}:{config.max_length}"
    if kind in ("cross-encoder", "bi-encoder"):
        return f"{kind}:{model_fingerprint(model)}:{config.max_length}"
    from llmst.label.run import label_signature

    return f"llm:{label_signature('-', judge_config(model, config, Path('-'), overwrite=False))}"


def judge_config(model: str, config: ScoreConfig, out: Path, overwrite: bool):
    """The `llmst label` options of an LLM judge (no calibration: --calibrate-on maps it onto the gold scale)."""
    from llmst.label.config import LabelConfig

    return LabelConfig(
        model=model,
        task=config.judge_task,
        backend=config.backend,
        base_url=config.base_url,
        calibrate="none",
        limit=config.limit,
        cache=config.cache,
        cache_path=config.cache_path,
        overwrite=overwrite,
        progress=config.progress,
        engine=config.engine,
        ray_address=config.ray_address,
        num_workers=config.num_workers,
    )


def judge_values(names: list[str]) -> np.ndarray:
    """The score of each label of a judge task: yes/no -> 1/0; numbers -> rescaled to 0..1."""
    lowered = [name.strip().lower() for name in names]
    if sorted(lowered) == ["no", "yes"]:
        return np.array([1.0 if name == "yes" else 0.0 for name in lowered])
    try:
        values = np.array([float(name) for name in names])
    except ValueError:
        raise ConfigError(
            f"judge task labels {names} are neither yes/no nor numbers",
            hint="use pair-similarity, pair-similarity-scale, or labels such as 0..5",
        ) from None
    if values.max() == values.min():
        raise ConfigError(f"judge task labels {names} are all the same number")
    return (values - values.min()) / (values.max() - values.min())


def score_with_teacher(spec: str, source: str, out: Path, config: ScoreConfig, overwrite: bool) -> Path:
    """Score every pair of `source` with teacher `spec` into `out` (`{id, score}` records; rejects beside it)."""
    kind, model = parse_teacher(spec)
    sig = stage.signature(
        "pairs-teacher",
        {"teacher": teacher_identity(spec, config), "fields": config.text_fields, "limit": config.limit},
        {"input": source},
    )
    if not overwrite and stage.is_current(out, sig):
        return out
    if kind == "llm":
        _judge(model, source, out, config, overwrite)  # label's own --engine ray spreads a judge
    elif config.engine == "ray":
        from llmst.pairs.score_ray import score_parts_with_ray

        score_parts_with_ray(kind, model, source, out, config, sig)
    else:
        model_teacher(kind, model, source, out, config, overwrite)
    stage.write_marker(out, sig, stage="pairs-teacher", teacher=spec)
    return out


def _judge(model: str, source: str, out: Path, config: ScoreConfig, overwrite: bool) -> None:
    from llmst.label.run import label_corpus

    labeled = out.with_name(out.name.removesuffix(".jsonl") + ".labeled.jsonl")
    label_config = judge_config(model, config, labeled, overwrite)
    # the judge task's text fields are text_a, text_b: other pair fields are renamed by the task, not here
    if config.text_fields != ["text_a", "text_b"]:
        raise ConfigError("llm teachers read the fields text_a, text_b", hint="rename the pair fields first")
    label_corpus(source, labeled, label_config)
    records = list(iter_checked(labeled))
    names = list(records[0][1]["probs"]) if records else []
    values = judge_values(names) if names else np.zeros(0)
    from llmst.records import PendingOutputs

    with PendingOutputs() as pending:
        pending.write_jsonl(
            out,
            (
                {"id": r["id"], "score": round(float(np.dot([r["probs"][n] for n in names], values)), 6)}
                for _, r in records
            ),
        )
        rejects = Path(f"{labeled}.rejects.jsonl")
        pending.write_jsonl(
            out.with_name(out.name + ".rejects.jsonl"),
            (r for _, r in iter_checked(rejects)) if rejects.exists() else [],
        )
        pending.commit()


def cosine_to_target(cosine: np.ndarray) -> np.ndarray:
    """A bi-encoder teacher's score of a pair: the cosine of its two embeddings clipped to [0, 1], the range
    a cross-encoder's BCE target (and a sigmoid score) lives in. Negative cosines all become 0."""
    return np.clip(np.asarray(cosine, dtype=float), 0.0, 1.0)


def _bi_encoder_predictor(model: str, config: ScoreConfig):
    from sentence_transformers import SentenceTransformer

    from llmst.models import resolve_model

    encoder = SentenceTransformer(resolve_model(model).path)
    encoder.max_seq_length = config.max_length

    def predict(pairs: list[tuple[str, str]]) -> np.ndarray:
        options = dict(batch_size=config.batch_size, show_progress_bar=False, normalize_embeddings=True)
        a = encoder.encode([p[0] for p in pairs], **options)
        b = encoder.encode([p[1] for p in pairs], **options)
        return cosine_to_target(np.sum(np.asarray(a, dtype=float) * np.asarray(b, dtype=float), axis=1))

    return predict


def model_teacher(
    kind: str,
    model: str,
    source: str,
    out: Path,
    config: ScoreConfig,
    overwrite: bool,
    shard: str | None = None,
) -> None:
    """A cross-encoder's or a bi-encoder's scores of every pair, chunk by chunk, cached per pair; with `shard`
    ('I/N', the partition of `--shard`), only the pairs of that shard."""
    from llmst.models import llmst_home, model_fingerprint, resolve_model

    if kind == "cross-encoder" and config.backend == "openai":
        from llmst.backends import answer_identity
        from llmst.backends.openai import OpenAIBackend

        server = OpenAIBackend(config.base_url or "", model)
        fingerprint = answer_identity(server)  # not the URL: a server on another port continues the job

        def predict(pairs: list[tuple[str, str]]) -> np.ndarray:
            return np.array(
                server.score_pairs(pairs, batch_size=config.batch_size, truncate=config.max_length)
            )
    elif kind == "cross-encoder":
        from sentence_transformers.cross_encoder import CrossEncoder

        encoder = CrossEncoder(resolve_model(model).path, max_length=config.max_length)
        fingerprint = model_fingerprint(model)

        def predict(pairs: list[tuple[str, str]]) -> np.ndarray:
            return encoder.predict(pairs, batch_size=config.batch_size, show_progress_bar=False)
    else:
        predict = _bi_encoder_predictor(model, config)
        # a bi-encoder's keys name their kind: the same folder scored as a cross-encoder is another teacher
        fingerprint = f"bi:{model_fingerprint(model)}"
    cache = None
    if config.cache:
        cache = AnswerCache(Path(config.cache_path) if config.cache_path else llmst_home() / "cache.sqlite")

    def process(chunk: list[Row | Reject]) -> tuple[list[dict[str, Any]], list[Reject]]:
        good, bad = [], []
        for item in chunk:
            texts = _pair_texts(item, config.text_fields) if isinstance(item, Row) else item
            (bad if isinstance(texts, Reject) else good).append((item, texts))
        keys = [cache_key(model=fingerprint, max_length=config.max_length, pair=list(t)) for _, t in good]
        found = cache.get_many(keys) if cache is not None else {}
        missing = [i for i, key in enumerate(keys) if key not in found]
        if missing:
            scores = predict([good[i][1] for i in missing])
            new = {keys[i]: float(s) for i, s in zip(missing, np.atleast_1d(scores), strict=True)}
            found.update(new)
            if cache is not None:
                cache.put_many(new)
        records = [
            {"id": pair_row_id(item.record, config.text_fields), "score": round(found[key], 6)}
            for (item, _), key in zip(good, keys, strict=True)
        ]
        return records, [texts for _, texts in bad]

    job = {
        "input": stage.fingerprint(source),
        "job": cache_key(teacher=fingerprint, fields=config.text_fields, max_length=config.max_length),
        **({"shard": shard} if shard is not None else {}),
    }
    try:
        stage.clear_marker(out)
        run_resumable(
            source,
            ResumableOutput(out),
            job,
            process,
            chunk_size=max(config.batch_size * 4, 64),
            overwrite=overwrite,
            limit=config.limit,
            progress=config.progress,
            what=f"scoring ({Path(model).name})",
            rate=lambda done, elapsed: f"{done / elapsed:.1f} pairs/s",
            keep=shard_filter(shard, config.text_fields, "id"),
        )
    finally:
        if cache is not None:
            cache.close()
