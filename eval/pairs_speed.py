"""Speed of the pair stages on this machine (a benchmark, not a test): pairs/s of cross-encoder scoring and of
LLM-judge scoring (hf in-process and a vLLM server), and bi-encoder training samples/s.

    python eval/pairs_speed.py [--pairs 1000] [--judge-pairs 200] [--teacher DIR] [--no-vllm] [--no-ray]
                               [--json eval/results/pairs_speed.json]

Pairs are the first N of STS-b train (`eval/pairs_data.py`). Cross-encoder: `--teacher` (default the MiniLM-L6
weights with a fresh one-label head: the speed is the architecture's), in-process and with `--engine ray` (2
workers; Ray's start is inside the timing). LLM judge: the default labeler with the
shipped `pair-similarity` task. Every run is cold: no answer cache. Bi-encoder training: one epoch of
`llmst train --kind bi-encoder` (MiniLM-L6, CoSENT, batch 16) over the same pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pairs_data  # noqa: E402

from llmst.models import DEFAULT_LABELER, resolve_model  # noqa: E402
from llmst.pairs.config import ScoreConfig  # noqa: E402
from llmst.pairs.score import score_pairs  # noqa: E402
from llmst.train import TrainConfig, train  # noqa: E402


def _subset(path: Path, n: int, work: Path) -> Path:
    lines = path.read_text(encoding="utf-8").splitlines()[:n]
    out = work / f"pairs-{n}.jsonl"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _timed_score(name: str, source: Path, work: Path, **options) -> dict:
    out = work / f"{name}.jsonl"
    started = time.perf_counter()
    report = score_pairs(source, out, ScoreConfig(cache=False, progress=False, **options))
    seconds = time.perf_counter() - started
    return {
        "method": name,
        "pairs": report["scored"],
        "seconds": round(seconds, 1),
        "pairs_per_second": round(report["scored"] / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--judge-pairs", type=int, default=200)
    parser.add_argument(
        "--teacher", default=None, help="a cross-encoder folder (default: MiniLM-L6, new head)"
    )
    parser.add_argument("--no-vllm", action="store_true")
    parser.add_argument("--no-ray", action="store_true", help="leave out the --engine ray row")
    parser.add_argument("--json", type=Path, default=Path("eval/results/pairs_speed.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llmst-pairs-speed-"))
    train_file = pairs_data.ensure("stsb-train")
    source, judged = _subset(train_file, args.pairs, work), _subset(train_file, args.judge_pairs, work)
    teacher = args.teacher
    if teacher is None:
        from sentence_transformers.cross_encoder import CrossEncoder

        teacher = str(work / "minilm-ce")
        CrossEncoder(resolve_model("minilm-l6").path, num_labels=1).save_pretrained(teacher)
    results = [
        _timed_score("cross-encoder (hf, batch 32)", source, work, teachers=f"cross-encoder:{teacher}")
    ]
    if not args.no_ray:  # the same scoring as Ray tasks (a local 2-CPU Ray, started inside the timing)
        results.append(
            _timed_score(
                "cross-encoder (--engine ray, 2 workers of 1 thread)",
                source,
                work,
                teachers=f"cross-encoder:{teacher}",
                engine="ray",
                num_workers=2,
            )
        )
    results.append(
        _timed_score(f"LLM judge {DEFAULT_LABELER} (hf)", judged, work, teachers=f"llm:{DEFAULT_LABELER}")
    )
    if not args.no_vllm:
        from llmst.backends.vllm_server import start_vllm_server

        with start_vllm_server(
            resolve_model(DEFAULT_LABELER).path, served_name=DEFAULT_LABELER, log_path=work / "vllm.log"
        ) as url:
            results.append(
                _timed_score(
                    f"LLM judge {DEFAULT_LABELER} (vLLM server)",
                    judged,
                    work,
                    teachers=f"llm:{DEFAULT_LABELER}",
                    backend="openai",
                    base_url=url,
                )
            )
    train_file_scored = work / "train.jsonl"
    train_file_scored.write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    summary = train(
        train_file_scored,
        work / "bi",
        TrainConfig(
            student="minilm-l6",
            kind="bi-encoder",
            score_field="label",
            epochs=1,
            batch_size=16,
            progress=False,
        ),
    )
    results.append(
        {
            "method": "bi-encoder training (MiniLM-L6, CoSENT, batch 16)",
            "pairs": summary.rows,
            "seconds": summary.seconds,
            "samples_per_second": summary.samples_per_second,
        }
    )
    print("| stage | pairs | seconds | pairs/s |\n|---|---|---|---|")
    for r in results:
        print(
            f"| {r['method']} | {r['pairs']} | {r['seconds']} | {r.get('pairs_per_second', r.get('samples_per_second'))} |"
        )
    payload = {
        "command": "python eval/pairs_speed.py " + " ".join(sys.argv[1:]),
        "machine": platform.processor() or platform.machine(),
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
