"""Debate helps weak-to-strong? (Lang et al. 2025, on llmst): debate ensemble vs plain ensemble vs consultancy
ensemble vs a single weak model, same seeds and splits, with paired PGR intervals.

    python eval/w2s_debate.py [--dataset boolq|cosmosqa] [--rows 1000] [--model qwen2.5-coder-1.5b-instruct]
                              [--backend hf|openai|vllm] [--base-url URL | --serve [--port 8011]]
                              [--concurrency 32]
                              [--seeds 0 1 2] [--epochs 2] [--max-length 256] [--weak-max-length 512] [--bf16]
                              [--judge smollm2-135m-instruct]
                              [--out-dir /tmp/llmst-eval/w2s-debate]
                              [--json eval/results/w2s_debate_<dataset>.json]

1. The first `--rows` train rows and the test rows (capped at `--rows`) become debate questions ("yes" / "no"
   as the two answers; BoolQ: question + passage; CosmosQA: "is this answer correct?" with the context), and
   `llmst debate` writes debate and consultancy transcripts with `--model` (the strongest practical
   generative model: on a GPU `qwen2.5-coder-1.5b-instruct`, served or in-process). `--serve` starts a vLLM
   CPU server for `--model` from .venv-vllm on `--port` (only while a transcript is unfinished) and generates
   through it.
2. Four `llmst w2s` runs on the same rows, seeds and strong model (mpnet-base): `single` (one weak minilm-l6),
   `ensemble` (three weak members), `consultancy` and `debate` (the same three members, each reading the
   transcript after its input). The strong model never sees a transcript; its ceiling is trained once per seed
   and copied to the other setups (reused only where its signature matches). Every weak member of every setup
   reads `--weak-max-length` tokens (the transcript comes after the passage, so it needs the room); the strong
   model reads `--max-length`.
3. With `--judge MODEL`, two more setups: `judge` (that LLM labels B and the test rows zero-shot, no training,
   `--calibrate prior` fitted on B) and `judge-debate` (the same labeler with the debate transcript in its
   prompt: a weak judge of the debate), compared with each other.
Prints generation throughput (tokens/s) and the PGR table, and writes JSON with every run's report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import w2s_data  # noqa: E402

from llmst import stage  # noqa: E402
from llmst.debate import DebateConfig  # noqa: E402
from llmst.debate.run import run_debate  # noqa: E402
from llmst.experiments.pgr import ROLES, compare  # noqa: E402
from llmst.experiments.w2s import load_scored, run_w2s  # noqa: E402
from llmst.experiments.w2s_config import W2SConfig, load_w2s_config  # noqa: E402
from llmst.models import resolve_model  # noqa: E402

MEMBERS = [
    {"student": "minilm-l6"},
    {"student": "minilm-l6", "learning_rate": 1e-4},
    {"student": "minilm-l3"},
]

JUDGE_INSTRUCTION = {
    "boolq": "Answer the question about the passage with yes or no.",
    "cosmosqa": "Say whether the answer is the correct answer to the question about the context: yes or no.",
}


def _questions(dataset: str, rows: list[dict]) -> list[dict]:
    """Debate questions for w2s rows: same ids, "yes"/"no" as the two answers to defend."""
    out = []
    for row in rows:
        if dataset == "boolq":
            question, context = row["question"], row["passage"]
        else:
            question = f'Question: {row["question"]}\nIs "{row["answer"]}" the correct answer?'
            context = row["context"]
        out.append({"id": row["id"], "question": question, "context": context, "answers": ["yes", "no"]})
    return out


def _read(path: Path, limit: int) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for _, line in zip(range(limit), handle, strict=False)]


def _share_ceiling(source: Path, target: Path) -> None:
    """Copy one seed's ceiling (the strong model trained on B's gold labels: the same stage in every setup)
    from a setup that finished that seed into another's seed folder, so it is trained once per seed, not four
    times. `run_w2s` reuses a copied stage only when its signature (content of inputs and options) matches."""
    for item in source.glob("ceiling*"):
        dest = target / item.name
        if not dest.exists():
            target.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, dest)


def _generated(summary: Path, key: dict) -> bool:
    """Whether a finished generation on this input with these options left its summary (then reused as is)."""
    if not summary.is_file():
        return False
    saved = json.loads(summary.read_text())
    return all(saved.get(name) == value for name, value in key.items())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=["boolq", "cosmosqa"], default="boolq")
    parser.add_argument("--rows", type=int, default=1000, help="train rows (and at most this many test rows)")
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--backend", choices=["hf", "openai", "vllm"], default="hf")
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--serve", action="store_true", help="start a vLLM CPU server for --model (openai)")
    parser.add_argument("--concurrency", type=int, default=32, help="openai: requests in flight")
    # a fixed port: the transcripts' signature names the served model at the server's URL, so a finished
    # output is current (and its saved summary, with tokens/s, reused) only at the same URL
    parser.add_argument("--port", type=int, default=8011, help="--serve: the server's port")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--max-length", type=int, default=256, help="strong model's tokens per input")
    parser.add_argument("--weak-max-length", type=int, default=512, help="weak members' tokens per input")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast in every training (CPUs with AMX)")
    parser.add_argument("--strong", default="mpnet-base")
    parser.add_argument(
        "--judge",
        default=None,
        help="an LLM labeler (hf backend) as weak supervisor, with and without debate",
    )
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/llmst-eval/w2s-debate"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    out = args.out_dir / args.dataset
    out.mkdir(parents=True, exist_ok=True)
    train_all, test_all = w2s_data.ensure(args.dataset, args.out_dir / "data")
    train, test = out / "train.jsonl", out / "test.jsonl"
    for source, target in ((train_all, train), (test_all, test)):
        target.write_text("".join(json.dumps(r) + "\n" for r in _read(source, args.rows)))
    questions = out / "questions.jsonl"
    rows = _read(train, args.rows) + _read(test, args.rows)
    questions.write_text("".join(json.dumps(q) + "\n" for q in _questions(args.dataset, rows)))

    transcripts = {protocol: out / f"{protocol}.jsonl" for protocol in ("debate", "consultancy")}
    backend, base_url = args.backend, args.base_url
    if args.serve:
        backend, base_url = "openai", f"http://127.0.0.1:{args.port}/v1"
    configs = {
        protocol: DebateConfig(
            model=args.model,
            backend=backend,
            base_url=base_url,
            protocol=protocol,
            turns=3 if protocol == "debate" else 2,
            context_fields="context",
            max_tokens=args.max_tokens,
            concurrency=args.concurrency,
            cache_path=str(args.out_dir / "cache.sqlite"),
        )
        for protocol in transcripts
    }
    # a finished generation leaves its summary, input and options: a rerun with the same needs no server
    saved = {protocol: out / f"{protocol}.summary.json" for protocol in transcripts}
    source = stage.fingerprint(questions)
    keys = {p: {"input": source, "options": stage.signature_fields(configs[p])} for p in configs}
    todo = [p for p in transcripts if not _generated(saved[p], keys[p])]
    with contextlib.ExitStack() as stack:
        if args.serve and todo:
            from llmst.backends.vllm_server import start_vllm_server

            model_dir = resolve_model(args.model).path
            stack.enter_context(
                start_vllm_server(
                    model_dir, served_name=args.model, port=args.port, log_path=out / "vllm.log"
                )
            )
        for protocol in todo:
            summary = run_debate(questions, transcripts[protocol], configs[protocol]).to_json()
            saved[protocol].write_text(json.dumps({**keys[protocol], "summary": summary}, indent=1))
    generation = {protocol: json.loads(saved[protocol].read_text())["summary"] for protocol in transcripts}
    for protocol, summary in generation.items():
        speed = f"{summary['tokens_per_second']} tokens/s ({backend})"
        print(f"[debate] {protocol}: {summary['questions']} questions, {summary['tokens']} tokens generated, "
              f"{speed}", file=sys.stderr, flush=True)  # fmt: skip

    spec = w2s_data.DATASETS[args.dataset]
    options = {"epochs": args.epochs, "max_length": args.max_length, **({"bf16": True} if args.bf16 else {})}
    members = [{**m, **options, "max_length": args.weak_max_length} for m in MEMBERS]
    weak_setups = {
        "single": members[0],
        "ensemble": {"ensemble": members},
        "consultancy": {"ensemble": members, "context": str(transcripts["consultancy"])},
        "debate": {"ensemble": members, "context": str(transcripts["debate"])},
    }
    versus = {"debate": "ensemble", "consultancy": "ensemble", "single": "ensemble"}  # setup -> its baseline
    if args.judge:
        # the ad-hoc prompt with one plain sentence of instruction (not searched), the same with and without
        judge = {
            "label": {
                "model": args.judge, "labels": ",".join(spec["labels"]), "calibrate": "prior",
                "instruction": JUDGE_INSTRUCTION[args.dataset],
                "cache_path": str(args.out_dir / "cache.sqlite"),
            }
        }  # fmt: skip
        weak_setups["judge"] = judge
        weak_setups["judge-debate"] = {**judge, "context": str(transcripts["debate"])}
        versus["judge-debate"] = "judge"

    def run(name: str, seeds: list[int]) -> tuple[dict, W2SConfig]:
        config = {
            "out_dir": str(out / f"w2s-{name}"),
            "data": {"train": str(train), "test": str(test), "text_field": spec["text_fields"],
                     "gold_field": "gold", "labels": spec["labels"]},
            "seeds": seeds,
            "weak": weak_setups[name],
            "strong": {"student": args.strong, **options},
            "loss": "xent",
            "bootstrap": args.bootstrap,
        }  # fmt: skip
        path = out / f"w2s-{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        w2s_config = load_w2s_config(path)
        return run_w2s(w2s_config), w2s_config

    def report(seeds: list[int], runs: dict[str, tuple[dict, W2SConfig]]) -> None:
        """Table and JSON over `seeds` from every setup's finished run on them: written after every seed,
        so an interrupted run leaves the comparison over the seeds it finished (`seeds`, `complete` in the
        JSON)."""
        reports = {name: one for name, (one, _) in runs.items()}
        scored = {name: load_scored(config, one["labels"])["xent"] for name, (one, config) in runs.items()}
        lines = [
            f"seeds {seeds}:",
            "| weak supervisor | weak acc | transfer acc | ceiling acc | PGR acc | 95% CI | weak AUC "
            "| transfer AUC | ceiling AUC | PGR AUC | 95% CI |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, one in reports.items():
            mean = one["mean"]
            cells = [f"{mean[role][metric]:.4f}" for metric in ("accuracy", "auroc") for role in ROLES]
            cells[3:3] = [str(mean["pgr"]["accuracy"]), str(mean["pgr"]["accuracy_ci"])]
            cells += [str(mean["pgr"]["auroc"]), str(mean["pgr"]["auroc_ci"])]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        differences = {
            name: compare(scored[name], scored[base], n_boot=args.bootstrap) for name, base in versus.items()
        }
        lines += [
            "",
            "| setup - baseline | ΔPGR acc | 95% CI | ΔPGR AUC | 95% CI | Δweak acc | 95% CI | Δweak AUC "
            "| 95% CI | Δtransfer acc | 95% CI | Δtransfer AUC | 95% CI |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, diff in differences.items():
            cells = [diff["accuracy"], diff["accuracy_ci"], diff["auroc"], diff["auroc_ci"]]
            for role in ("weak", "transfer"):
                for metric in ("accuracy", "auroc"):
                    cells += [diff[role][metric], diff[role][f"{metric}_ci"]]
            lines.append(f"| {name} - {versus[name]} | " + " | ".join(map(str, cells)) + " |")
        print("\n".join(lines), flush=True)
        path = args.json or Path(f"eval/results/w2s_debate_{args.dataset}.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "command": "python " + " ".join(sys.argv),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "generation": generation,
            "seeds": seeds,
            "complete": seeds == list(args.seeds),
            "w2s_seconds_this_run": round(time.perf_counter() - started, 1),
            "reports": {name: {k: r[k] for k in ("seeds", "mean")} for name, r in reports.items()},
            "versus_ensemble": {name: d for name, d in differences.items() if versus[name] == "ensemble"},
            **({"versus_judge": differences["judge-debate"]} if args.judge else {}),
        }, indent=1))  # fmt: skip

    started = time.perf_counter()
    # every setup on one seed before the next seed, so an interrupted run already holds whole comparisons
    for index, seed in enumerate(args.seeds):
        done = args.seeds[: index + 1]  # the earlier seeds' stages are reused: only this seed's are computed
        runs = {}
        for name in weak_setups:
            if name != "single":
                _share_ceiling(out / "w2s-single" / f"seed{seed}", out / f"w2s-{name}" / f"seed{seed}")
            runs[name] = run(name, done)
        report(done, runs)


if __name__ == "__main__":
    main()
