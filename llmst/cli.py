"""The `llmst` command line. Each command only parses options and calls one library function.

Exit codes: 0 success (rows rejected as bad input do not fail a run; they are counted and written to the
rejects file), 1 internal error, 2 usage or configuration error, 3 model backend error (server unreachable
after retries, model failed to load), 130 interrupted (rerun the same command to resume).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from llmst.errors import LlmstError

app = typer.Typer(
    name="llmst",
    help="LLM-centric self-training: label corpora with LLMs, keep what can be trusted, train students.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
models_app = typer.Typer(help="Bundled and local models.", no_args_is_help=True)
tasks_app = typer.Typer(help="Shipped labeling tasks (prompts/).", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(tasks_app, name="tasks")


def _split(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


@app.command("label")
def label_cmd(
    input: Annotated[
        str, typer.Argument(help="Corpus: .jsonl, .csv, .tsv, .parquet, a saved HF dataset, hf:NAME[:SPLIT].")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output JSONL of labeled records.")],
    task: Annotated[
        str | None, typer.Option(help="Task name (llmst tasks list) or a task YAML file.")
    ] = None,
    labels: Annotated[str | None, typer.Option(help="Ad-hoc task: comma-separated label names.")] = None,
    model: Annotated[
        str, typer.Option(help="Bundled name, model folder, .gguf file, hub id, or served name.")
    ] = ("smollm2-135m-instruct"),
    backend: Annotated[str, typer.Option(help="hf (in-process), openai (vLLM/OpenAI server), vllm.")] = "hf",
    base_url: Annotated[str | None, typer.Option(help="Server URL for --backend openai.")] = None,
    text_field: Annotated[
        str | None, typer.Option(help="Field(s) that feed the prompt, comma-separated.")
    ] = None,
    id_field: Annotated[str, typer.Option(help="Input field holding a stable id (else a text hash).")] = "id",
    few_shot: Annotated[
        str | None, typer.Option(help="Labeled file of demonstrations (text + label).")
    ] = None,
    few_shot_label_field: Annotated[str, typer.Option(help="Label field in the few-shot file.")] = "label",
    shots: Annotated[int, typer.Option(help="Demonstrations per prompt.")] = 4,
    select: Annotated[str, typer.Option(help="Demonstration choice: random (fixed, stratified) or knn.")] = (
        "random"
    ),
    calibrate: Annotated[
        str, typer.Option(help="none, contextual (content-free inputs), prior (fit on corpus).")
    ] = ("none"),
    prior: Annotated[
        str | None, typer.Option(help="Target prior for --calibrate prior, e.g. 0.5,0.5.")
    ] = None,
    prior_fit_rows: Annotated[int, typer.Option(help="Rows used to fit --calibrate prior.")] = 5000,
    batch_size: Annotated[int, typer.Option(help="Sequences per forward pass (hf, vllm).")] = 32,
    concurrency: Annotated[int, typer.Option(help="Requests in flight (openai).")] = 32,
    limit: Annotated[int | None, typer.Option(help="Label only the first N input rows.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for few-shot sampling.")] = 0,
    dtype: Annotated[str, typer.Option(help="auto, bfloat16, float16 or float32 (hf, vllm).")] = "auto",
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Do not read or write the answer cache.")
    ] = False,
    cache_path: Annotated[
        str | None, typer.Option(help="sqlite cache file (default ~/.cache/llmst).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output instead of resuming.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Label a text corpus with an LLM: score every label's verbalizer, write records with probs.

    Rerunning the same command after an interruption resumes where it stopped. Bad rows go to
    OUT.rejects.jsonl with their line number and reason. Prints a JSON summary on stdout.
    """
    from llmst.label.run import LabelConfig, label_corpus

    config = LabelConfig(
        task=task,
        labels=_split(labels),
        model=model,
        backend=backend,  # type: ignore[arg-type]
        base_url=base_url,
        text_fields=_split(text_field),
        id_field=id_field,
        few_shot=few_shot,
        few_shot_label_field=few_shot_label_field,
        shots=shots,
        select=select,  # type: ignore[arg-type]
        calibrate=calibrate,  # type: ignore[arg-type]
        prior=[float(x) for x in _split(prior)] if prior else None,
        prior_fit_rows=prior_fit_rows,
        batch_size=batch_size,
        concurrency=concurrency,
        limit=limit,
        seed=seed,
        dtype=dtype,
        cache=not no_cache,
        cache_path=cache_path,
        overwrite=overwrite,
        progress=not quiet,
    )
    summary = label_corpus(input, out, config)
    typer.echo(json.dumps(summary.to_json(), indent=2))


@app.command("evaluate")
def evaluate_cmd(
    labeled: Annotated[Path, typer.Argument(help="Labeled JSONL (output of label or predict).")],
    gold_field: Annotated[str, typer.Option(help="Field holding the gold label (name or index).")] = "gold",
    report_dir: Annotated[Path | None, typer.Option(help="Write report.json and PNG plots here.")] = None,
    bins: Annotated[int, typer.Option(help="Bins of the reliability diagram / ECE.")] = 10,
) -> None:
    """Score labeled records against gold labels: accuracy, macro-F1, per-class P/R, ECE, coverage curve."""
    from llmst.evaluate import evaluate_file

    report = evaluate_file(labeled, gold_field=gold_field, report_dir=report_dir, bins=bins)
    typer.echo(json.dumps(report, indent=2))


@app.command("filter")
def filter_cmd(
    labeled: Annotated[str, typer.Argument(help="Labeled records (output of label, predict or aggregate).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output JSONL of the kept records.")],
    method: Annotated[
        str,
        typer.Option(
            help="threshold, per-class, balanced, curriculum, conformal, agreement, learned or student-oof."
        ),
    ] = "threshold",
    score: Annotated[str, typer.Option(help="Trust score: confidence, margin or entropy.")] = "confidence",
    threshold: Annotated[
        float | None,
        typer.Option(
            help="threshold: keep score >= T (entropy: <= T; default 0.9); learned: P(correct) >= T."
        ),
    ] = None,
    prior: Annotated[
        str, typer.Option(help="balanced: target distribution: uniform, estimated, or shares like 0.3,0.7.")
    ] = "uniform",
    fraction: Annotated[
        float | None,
        typer.Option(help="balanced: fraction of all rows to keep; curriculum: fraction of each class."),
    ] = None,
    size: Annotated[int | None, typer.Option(help="balanced: number of rows to keep.")] = None,
    k_per_class: Annotated[int | None, typer.Option(help="balanced: rows to keep per class.")] = None,
    round: Annotated[
        int | None, typer.Option(help="curriculum: self-training round (0-based); fraction from --schedule.")
    ] = None,
    schedule: Annotated[
        str, typer.Option(help="curriculum: START,STEP[,STOP]: fraction = min(STOP, START + STEP * round).")
    ] = "0.2,0.2",
    calibration: Annotated[
        str | None,
        typer.Option(
            help="conformal, learned: gold-labeled rows labeled by the same labeler (100-300 rows)."
        ),
    ] = None,
    gold_field: Annotated[
        str,
        typer.Option(help="Gold label field (name or index) of --calibration; in LABELED, evaluation only."),
    ] = "gold",
    target_precision: Annotated[
        float | None, typer.Option(help="conformal (and learned): precision to guarantee, e.g. 0.95.")
    ] = None,
    delta: Annotated[float, typer.Option(help="The guarantee holds with probability >= 1 - delta.")] = 0.1,
    test: Annotated[
        str, typer.Option(help="Learn-then-Test procedure: multi-start, fixed-sequence or bonferroni.")
    ] = "multi-start",
    conformal: Annotated[
        str,
        typer.Option(
            help="conformal: precision (certified threshold) or lac/aps (keep singleton prediction sets)."
        ),
    ] = "precision",
    coverage: Annotated[float, typer.Option(help="lac/aps: coverage of the prediction sets.")] = 0.9,
    min_agree: Annotated[
        int | None,
        typer.Option(help="agreement: sources that must agree with the label (default: a majority)."),
    ] = None,
    sources_field: Annotated[
        str, typer.Option(help="agreement, learned: field of per-source labels (written by aggregate).")
    ] = "sources",
    text_field: Annotated[
        str | None, typer.Option(help="learned: text field for the length feature (default: text).")
    ] = None,
    embedding_field: Annotated[
        str | None, typer.Option(help="learned: field holding an embedding vector, used as features.")
    ] = None,
    student: Annotated[
        str,
        typer.Option(help="student-oof: student trained on each K-1 folds (bundled name, folder, hub id)."),
    ] = "minilm-l6",
    folds: Annotated[int, typer.Option(help="student-oof: number of folds.")] = 5,
    student_epochs: Annotated[float, typer.Option(help="student-oof: epochs of each fold's student.")] = 2.0,
    seed: Annotated[
        int, typer.Option(help="learned: seed of the calibration split; student-oof: folds.")
    ] = 0,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Do not write PNG plots.")] = False,
) -> None:
    """Select trustworthy pseudo-labels: thresholds, class balance, curricula, guaranteed precision.

    Writes the kept records (unchanged) to OUT, and OUT.report.json with counts per class before and after,
    the method's details (thresholds, quotas, the certified guarantee) and, when gold labels exist, precision
    against coverage; PNG plots OUT.counts.png and OUT.precision_coverage.png. Prints a JSON summary.
    Nothing is written when an input is bad.
    """
    from llmst.filter.run import FilterConfig, run_filter, summarize

    config = FilterConfig(
        method=method,  # type: ignore[arg-type]
        score=score,  # type: ignore[arg-type]
        threshold=threshold,
        prior=prior,
        fraction=fraction,
        size=size,
        k_per_class=k_per_class,
        round=round,
        schedule=schedule,
        calibration=calibration,
        gold_field=gold_field,
        target_precision=target_precision,
        delta=delta,
        test=test,  # type: ignore[arg-type]
        conformal=conformal,  # type: ignore[arg-type]
        coverage=coverage,
        min_agree=min_agree,
        sources_field=sources_field,
        text_field=text_field,
        embedding_field=embedding_field,
        student=student,
        folds=folds,
        student_epochs=student_epochs,
        seed=seed,
        plots=not no_plots,
    )
    report = run_filter(labeled, out, config)
    typer.echo(json.dumps(summarize(report), indent=2))


@app.command("aggregate")
def aggregate_cmd(
    inputs: Annotated[
        list[str], typer.Argument(help="Labeled files of the same corpus (same ids, same labels).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output JSONL of fused records.")],
    method: Annotated[
        str,
        typer.Option(help="vote, weighted (log-odds weights), mean (of probs) or dawid-skene (EM)."),
    ] = "vote",
    names: Annotated[
        str | None, typer.Option(help="Source names, comma-separated, one per file (default: file names).")
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(help="vote, weighted, mean: one weight per source (files, then labeling functions)."),
    ] = None,
    labeling_functions: Annotated[
        str | None,
        typer.Option("--labeling-functions", "--lf", help="Python file of @labeling_function rules."),
    ] = None,
    max_iter: Annotated[int, typer.Option(help="dawid-skene: EM iterations at most.")] = 100,
    smoothing: Annotated[float, typer.Option(help="dawid-skene: pseudo-count per confusion cell.")] = 0.01,
    gold_field: Annotated[
        str, typer.Option(help="When records carry it: each source's gold accuracy in the report.")
    ] = "gold",
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Do not write PNG plots.")] = False,
) -> None:
    """Fuse several labelings of one corpus (models, prompts, samples) and optional labeling functions.

    Records are joined on `id`. Each fused record keeps the first file's fields, with the fused `label`,
    `probs`, confidence/margin/entropy and `sources` ({source: label}). OUT.report.json gives each source's
    estimated accuracy (Dawid-Skene: from its confusion matrix; otherwise agreement with the fused label).
    Prints a JSON summary.
    """
    from llmst.filter.run import AggregateConfig, run_aggregate, summarize

    config = AggregateConfig(
        method=method,  # type: ignore[arg-type]
        names=names,
        weights=weights,
        labeling_functions=labeling_functions,
        max_iter=max_iter,
        smoothing=smoothing,
        gold_field=gold_field,
        plots=not no_plots,
    )
    report = run_aggregate(inputs, out, config)
    typer.echo(json.dumps(summarize(report), indent=2))


@app.command("train")
def train_cmd(
    labeled: Annotated[
        str, typer.Argument(help="Labeled records (llmst label / filter / aggregate output).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write (HF format + model card).")],
    student: Annotated[
        str,
        typer.Option(help="Student: bundled name (minilm-l6, smollm2-135m-instruct, ...), folder or hub id."),
    ] = "minilm-l6",
    kind: Annotated[
        str, typer.Option(help="classifier (sequence classification head) or generative (TRL SFT).")
    ] = "classifier",
    lora: Annotated[
        bool, typer.Option("--lora", help="Train LoRA adapters (merged into the saved model).")
    ] = False,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    lora_target: Annotated[
        str, typer.Option(help="LoRA targets: all-linear or module names.")
    ] = "all-linear",
    soft_labels: Annotated[bool, typer.Option("--soft-labels", help="Fit the labeler's probs.")] = False,
    weight_field: Annotated[
        str | None, typer.Option(help="Per-row loss weight field, e.g. confidence.")
    ] = None,
    loss: Annotated[str, typer.Option(help="ce or doubly-robust (needs --gold and --gold-share).")] = "ce",
    gold: Annotated[str | None, typer.Option(help="Small gold-labeled file mixed into every batch.")] = None,
    gold_field: Annotated[str, typer.Option(help="Gold label field of --gold.")] = "gold",
    gold_share: Annotated[float, typer.Option(help="Share of each batch taken from --gold.")] = 0.0,
    eval_file: Annotated[
        str | None,
        typer.Option("--eval", help="Gold-labeled file scored after training (in the model card)."),
    ] = None,
    eval_gold_field: Annotated[str, typer.Option(help="Gold field of --eval.")] = "gold",
    text_field: Annotated[str | None, typer.Option(help="Text field(s), comma-separated.")] = None,
    labels: Annotated[str | None, typer.Option(help="Label names in order (default: keys of probs).")] = None,
    epochs: Annotated[float, typer.Option(help="Passes over the pseudo-labeled rows.")] = 3.0,
    learning_rate: Annotated[
        float | None, typer.Option(help="Peak learning rate (default 5e-5, LoRA 2e-4).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per batch per process.")] = 16,
    max_length: Annotated[int, typer.Option(help="Tokens per input at most.")] = 128,
    seed: Annotated[int, typer.Option(help="Seed (head init, data order, dropout).")] = 0,
    bf16: Annotated[
        bool | None, typer.Option("--bf16/--no-bf16", help="bf16 autocast (default: on for bf16 GPUs).")
    ] = None,
    save_steps: Annotated[int, typer.Option(help="Checkpoint every N steps (resume point).")] = 200,
    limit: Annotated[int | None, typer.Option(help="Train on the first N rows only.")] = None,
    prompt: Annotated[
        str, typer.Option(help="generative: Jinja prompt template; the target is ' <label>'.")
    ] = "{{ text }}\nLabel:",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing model folder.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Fine-tune a student on labeled records; save an HF model folder with a model card.

    Runs as is on one CPU or GPU, and unchanged under `torchrun --nproc_per_node N -m llmst train ...` or
    `accelerate launch -m llmst train ...` (DDP; FSDP via an accelerate config, see scripts/accelerate/).
    An interrupted run resumes from its last checkpoint (OUT/checkpoints) when rerun. Prints a JSON summary.
    """
    from dataclasses import asdict

    from llmst.train import TrainConfig, train

    config = TrainConfig(
        student=student,
        kind=kind,  # type: ignore[arg-type]
        lora=lora,
        lora_r=lora_r,
        lora_target=lora_target,
        soft_labels=soft_labels,
        weight_field=weight_field,
        loss=loss,  # type: ignore[arg-type]
        gold=gold,
        gold_field=gold_field,
        gold_share=gold_share,
        eval=eval_file,
        eval_gold_field=eval_gold_field,
        text_fields=_split(text_field),
        labels=_split(labels),
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        max_length=max_length,
        seed=seed,
        bf16=bf16,
        save_steps=save_steps,
        limit=limit,
        prompt=prompt,
        overwrite=overwrite,
    )
    summary = train(labeled, out, config, progress=not quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        payload = asdict(summary)
        payload["metrics"] = {k: v for k, v in summary.metrics.items() if k in ("accuracy", "macro_f1", "n")}
        typer.echo(json.dumps(payload, indent=2))


@app.command("predict")
def predict_cmd(
    model_dir: Annotated[Path, typer.Argument(help="A student folder written by llmst train.")],
    input: Annotated[str, typer.Argument(help="Corpus to label (.jsonl, .csv, .parquet, HF dataset).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output JSONL of labeled records.")],
    text_field: Annotated[
        str | None, typer.Option(help="Text field(s) (default: those the student was trained on).")
    ] = None,
    id_field: Annotated[str, typer.Option(help="Input field holding a stable id.")] = "id",
    batch_size: Annotated[int, typer.Option(help="Rows per forward pass.")] = 64,
    limit: Annotated[int | None, typer.Option(help="Only the first N rows.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT.")] = False,
) -> None:
    """Relabel a corpus with a trained student: the same record contract as `llmst label` (label, probs, ...),
    so the output feeds `llmst evaluate` and `llmst filter`. Bad rows go to OUT.rejects.jsonl."""
    from llmst.train import predict_file

    summary = predict_file(
        model_dir,
        input,
        out,
        text_fields=_split(text_field),
        id_field=id_field,
        batch_size=batch_size,
        limit=limit,
        overwrite=overwrite,
    )
    typer.echo(json.dumps(summary, indent=2))


@app.command("selftrain")
def selftrain_cmd(
    config: Annotated[Path, typer.Argument(help="Self-training YAML (see llmst/experiments/selftrain.py).")],
) -> None:
    """Self-training: LLM labels -> filter -> train a student -> the student relabels the pool -> curriculum
    filter -> retrain from the initial weights, for `rounds` rounds.

    Every stage's output stays under out_dir/round<r>/ (labels, kept rows + report, student, relabels); rerun
    the same command to resume. Writes out_dir/report.json, report.md (per-round table) and rounds.png.
    """
    from llmst.experiments import load_selftrain_config, run_selftrain
    from llmst.experiments.selftrain import report_markdown

    report = run_selftrain(load_selftrain_config(config))
    typer.echo(report_markdown(report))


@models_app.command("list")
def models_list_cmd() -> None:
    """List the bundled models and whether they are installed."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from llmst.models import list_models

    table = Table("name", "kind", "installed", "description")
    for row in list_models():
        table.add_row(*(escape(row[key]) for key in ("name", "kind", "installed", "description")))
    Console().print(table)


@models_app.command("prepare")
def models_prepare_cmd(
    spec: Annotated[
        str, typer.Argument(help="Bundled name, .gguf file or folder.")
    ] = "smollm2-135m-instruct",
) -> None:
    """Resolve a model now (a GGUF is converted once to a cached transformers folder) and print its path."""
    from llmst.models import resolve_model

    typer.echo(resolve_model(spec).path)


@tasks_app.command("list")
def tasks_list_cmd() -> None:
    """List the shipped tasks with their labels."""
    from llmst.label.task import available_tasks, load_task

    for name in available_tasks():
        task = load_task(name)
        typer.echo(f"{name}: {', '.join(task.label_names)}  {task.description}")


def main() -> None:
    """Console entry point: known errors become one line on stderr and an exit code."""
    try:
        app(standalone_mode=False)
    except LlmstError as err:
        typer.echo(f"error: {err.message}", err=True)
        if err.hint:
            typer.echo(f"hint: {err.hint}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted: rerun the same command to resume where it stopped", err=True)
        sys.exit(130)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as err:  # click usage errors carry their own exit code
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()
