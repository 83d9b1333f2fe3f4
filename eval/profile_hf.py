"""Where the hf backend's labeling time goes on this CPU, against the matmul yardstick of `eval/speed.py`.

    python eval/profile_hf.py [--compile] [--out eval/results/profile_hf.json]

Scores the shipped `sentiment` prompt of every SST-2 *dev* row (872) with the default labeler in bfloat16
through `HFBackend.score` in chunks, as `llmst label` does (the machine's default batching): a warm-up pass
(compiling, with `--compile`), a timed pass, and a pass under `torch.profiler`. Prints the profiled pass's CPU
time per kind of operator (matmuls, attention, the compiled graph's fused kernels or the eager element-wise
operators, the rest), the matmuls' GFLOP/s (the pass's FLOPs over the matmuls' time), the timed pass's GFLOP/s
(2 x non-embedding parameters x tokens, as in speed.py) and the yardstick measured in the same run (bf16
matmul at the model's MLP shape for one batch). It answers issue 12's question of how far the 60%-of-matmul
goal is on this machine: the share of time outside the matmuls bounds it. Test data is never read.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batching import dev_requests, score_in_chunks  # noqa: E402
from data import ensure  # noqa: E402
from speed import _cpu_flags, model_flops  # noqa: E402

from llmst.backends.hf import HFBackend  # noqa: E402
from llmst.models import DEFAULT_LABELER  # noqa: E402

KINDS = {  # profiler operator name -> kind; anything else is "other"
    "aten::mm": "matmul",
    "aten::addmm": "matmul",
    "aten::bmm": "matmul",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
    "aten::mul": "element-wise",
    "aten::add": "element-wise",
    "aten::silu": "element-wise",
    "aten::pow": "element-wise",
    "aten::mean": "element-wise",
    "aten::rsqrt": "element-wise",
    "aten::neg": "element-wise",
    "aten::cat": "element-wise",
    "aten::copy_": "element-wise",
}


def kind_of(name: str) -> str:
    if "CompiledFxGraph" in name:
        return "compiled graph (fused element-wise)"
    return KINDS.get(name, "other")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("eval/results/profile_hf.json"))
    args = parser.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    requests = dev_requests()
    backend = HFBackend(DEFAULT_LABELER, dtype="bfloat16", quiet=True, compile=args.compile)

    def one_pass() -> float:
        return score_in_chunks(backend, requests, backend.chunk_size)

    one_pass()  # warm-up: compiling, the first call of each shape
    seconds = one_pass()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        one_pass()
    times: collections.Counter = collections.Counter()
    for event in prof.key_averages():
        times[kind_of(event.key)] += event.self_cpu_time_total / 1e6
    profiled = sum(times.values())
    yardstick = model_flops(ensure("sst2-dev"), "bfloat16", torch.get_num_threads(), backend.batch_size)
    achieved = yardstick["flop_per_pass"] / seconds / 1e9
    result = {
        "command": "python eval/profile_hf.py " + " ".join(sys.argv[1:]),
        "compile": args.compile,
        "docs": len(requests),
        "batch_size": backend.batch_size,
        "pass_seconds": round(seconds, 2),
        "docs_per_second": round(len(requests) / seconds, 1),
        "profiled_seconds": round(profiled, 2),
        "share_of_profiled_time": {k: round(v / profiled, 3) for k, v in times.most_common()},
        # the model's matmul work over the matmuls' own time (the profiler's FLOP counts miss the matmuls that
        # eager attention and linear layers reach through other operators)
        "matmul_gflops": round(yardstick["flop_per_pass"] / times["matmul"] / 1e9, 1),
        "achieved_gflops": round(achieved, 1),
        "yardstick_gflops": yardstick["matmul_gflops"],
        "yardstick_shape": yardstick["matmul_shape"],
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "cpu_flags": _cpu_flags()},
    }
    print(f"SST-2 dev, {len(requests)} docs, bfloat16{', --compile' if args.compile else ''}, "
          f"batches of up to {backend.batch_size}, CPU flags {', '.join(result['machine']['cpu_flags'])}")  # fmt: skip
    print("| operators | share of the profiled pass |\n|---|---|")
    for kind, share in result["share_of_profiled_time"].items():
        print(f"| {kind} | {100 * share:.1f}% |")
    ratio, matmul_ratio = (
        achieved / result["yardstick_gflops"],
        result["matmul_gflops"] / result["yardstick_gflops"],
    )
    print(
        f"timed pass {seconds:.2f} s ({result['docs_per_second']} docs/s) = {achieved:.0f} GFLOP/s, "
        f"{100 * ratio:.1f}% of the yardstick {result['yardstick_gflops']} GFLOP/s; the matmuls alone "
        f"{result['matmul_gflops']} GFLOP/s ({100 * matmul_ratio:.1f}%)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
