"""Does the instruct model's chat template help ad-hoc labeling? A paired comparison on the suite's dev
slices: each ad-hoc prompt as plain text (scored on ' name') against the same prompt as the user turn of
the model's chat template (scored on the assistant's first words: 'name' / ' name', pooled).

    python eval/chat_template.py [--family classify] [--model NAME] [--limit 100] [--tasks ...]

Both variants are calibrated the same way (`--calibrate prior` with a uniform target: the default) and
scored by macro-F1; answers go to the answer cache. Prints a table and writes
eval/results/chat_template_<family>_<model>.json. Dev slices only: this chooses a default.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite_data  # noqa: E402

from llmst.backends import make_backend  # noqa: E402
from llmst.backends.base import BackendSpec  # noqa: E402
from llmst.cache import AnswerCache  # noqa: E402
from llmst.label.calibrate import prior_bias  # noqa: E402
from llmst.label.run import _Scorer  # noqa: E402
from llmst.label.task import Task, adhoc_task  # noqa: E402
from llmst.models import DEFAULT_LABELER  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def macro_f1(gold: np.ndarray, logprobs: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    pred = (logprobs + prior_bias(logprobs)).argmax(axis=1)
    return float(
        f1_score(gold, pred, labels=list(range(logprobs.shape[1])), average="macro", zero_division=0)
    )


def chat_variant(task: Task) -> Task:
    """The same labels scored as the assistant's first words: 'name' and ' name' pooled."""
    labels = {name: [name, f" {name}"] for name in task.labels}
    return Task(name=task.name + "-chat", labels=labels, prompt=task.prompt, text_fields=task.text_fields)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--family", default="classify")
    parser.add_argument("--model", default=DEFAULT_LABELER)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--tasks", nargs="+", default=list(suite_data.SUITE))
    parser.add_argument("--cache-path", default="/tmp/llmst-eval/cache.sqlite")
    args = parser.parse_args()
    backend = make_backend(BackendSpec(model=args.model, dtype="float32", quiet=True))
    tokenizer = backend.tokenizer  # type: ignore[attr-defined]
    if not getattr(tokenizer, "chat_template", None):
        sys.exit(f"{args.model} has no chat template")
    cache = AnswerCache(Path(args.cache_path))
    results = []
    started = time.perf_counter()
    for name in args.tasks:
        spec = suite_data.SUITE[name]
        rows = suite_data.load_split(name, "dev")[: args.limit]
        gold = np.array([spec.labels.index(r["gold"]) for r in rows])
        plain = adhoc_task(list(spec.labels), list(spec.text_fields), family=args.family)
        chat = chat_variant(plain)
        budget = backend.max_context - 64
        prompts = []
        for r in rows:
            text = "\n".join(str(r[f]) for f in spec.text_fields)
            record = {
                f: backend.truncate(str(r[f]), budget // len(spec.text_fields)) for f in spec.text_fields
            }
            prompts.append(plain.render(record, backend.truncate(text, budget)))
        chat_prompts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in prompts
        ]
        zeros = [0] * len(rows)
        plain_lp = _Scorer(backend, plain, cache).label_logprobs(prompts, zeros)
        chat_lp = _Scorer(backend, chat, cache).label_logprobs(chat_prompts, zeros)
        row = {
            "task": name,
            "rows": len(rows),
            "plain_f1": macro_f1(gold, plain_lp),
            "chat_f1": macro_f1(gold, chat_lp),
        }
        print(f"[chat] {name}: plain {row['plain_f1']:.4f} chat {row['chat_f1']:.4f}", file=sys.stderr)
        results.append(row)
    lines = [f"Chat template, family `{args.family}`, {args.model}, first {args.limit} dev rows, prior calibration",
             "", "| task | plain macro-F1 | chat macro-F1 | chat minus plain |", "|---|---|---|---|"]  # fmt: skip
    for r in results:
        lines.append(
            f"| {r['task']} | {r['plain_f1']:.4f} | {r['chat_f1']:.4f} | {r['chat_f1'] - r['plain_f1']:+.4f} |"
        )
    diffs = [r["chat_f1"] - r["plain_f1"] for r in results]
    lines += [
        "",
        f"mean chat minus plain {np.mean(diffs):+.4f}; chat better on {sum(d > 0 for d in diffs)} of {len(diffs)}",
    ]
    table = "\n".join(lines)
    print(table)
    out = RESULTS / f"chat_template_{args.family}_{args.model}.json"
    out.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "seconds": round(time.perf_counter() - started, 1),
                               "results": results, "table": table}, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
