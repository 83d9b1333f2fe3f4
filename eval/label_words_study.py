"""How `llmst tune --label-words` finds label words, chosen on the suite's dev slices (never test).

    python eval/label_words_study.py [--tasks T ...] [--model NAME] [--json eval/results/label_words_study.json]

For each task and ad-hoc prompt family (zero-shot), the first 100 dev rows are the gold rows words are
found on (`llmst.tune.verbalizers.choose_words`) and the rest of the dev slice is scored: macro-F1 with prior
calibration, the label names alone against the names pooled with the words found. A grid over the
search's settings (min gain, words per label, pool) is scored from one pass of the model per row (the
next-token distributions are kept under --work). Prints a table per setting and writes JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite_data  # noqa: E402

import llmst.tune.verbalizers as verbalizers  # noqa: E402
from llmst.backends import make_backend  # noqa: E402
from llmst.backends.base import BackendSpec  # noqa: E402
from llmst.label.calibrate import prior_bias  # noqa: E402
from llmst.label.config import LabelConfig  # noqa: E402
from llmst.label.run import Labeler  # noqa: E402
from llmst.label.scoring import Scorer  # noqa: E402
from llmst.label.task import ADHOC_FAMILIES, adhoc_task  # noqa: E402
from llmst.models import DEFAULT_LABELER  # noqa: E402
from llmst.readers import Row  # noqa: E402
from llmst.tune.run import _macro_f1  # noqa: E402

GOLD_ROWS = 100
GRID = list(itertools.product([1e-3, 3e-3, 1e-2, 3e-2], [1, 2, 3, 5], [10, 50]))  # min gain, per label, pool


def _key(setting: tuple[float, int, int]) -> str:
    return f"{setting[0]:g}/{setting[1]}/{setting[2]}"


def distributions(name: str, family: str, backend, work: Path) -> dict[str, np.ndarray]:
    """Label-name log-probs and word log-probs of every dev row (kept on disk: the words any label's gold
    rows rank in their top 200)."""
    path = work / f"{name}-{family}.npz"
    if path.exists():
        return dict(np.load(path))
    spec = suite_data.SUITE[name]
    rows = suite_data.load_split(name, "dev")
    gold = np.array([spec.labels.index(r["gold"]) for r in rows])
    task = adhoc_task(list(spec.labels), list(spec.text_fields), family=family)
    labeler = Labeler(LabelConfig(task="study", text_fields=task.text_fields), task, backend, None)
    prepared, rejects = labeler.prepare([Row(i + 1, r) for i, r in enumerate(rows)])
    assert not rejects, rejects[:1]
    prompts = [p.prompt for p in prepared]
    own = Scorer(backend, task, None).label_logprobs(prompts, [0] * len(prompts))
    logprobs, words = verbalizers.word_logprobs(backend, prompts)
    head = gold[:GOLD_ROWS]
    keep = sorted(
        {
            int(w)
            for c in set(head.tolist())
            for w in np.argsort(-logprobs[:GOLD_ROWS][head == c].mean(0))[:200]
        }
    )
    data = {
        "own": own,
        "logprobs": logprobs[:, keep],
        "gold": gold,
        "words": np.array([words[w] for w in keep]),
    }
    work.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return data


def score(data: dict[str, np.ndarray], task, setting) -> float:
    """Macro-F1 (prior calibration) on the rows after the first 100, with words found on those 100."""
    min_gain, per_label, pool = setting
    own, logprobs, gold, words = data["own"], data["logprobs"], data["gold"], list(data["words"])
    pooled = own.copy()
    if per_label:
        found = verbalizers.choose_words(
            own[:GOLD_ROWS], logprobs[:GOLD_ROWS], gold[:GOLD_ROWS], words, task, per_label, pool, min_gain
        )
        for c, label in enumerate(task.label_names):
            for word in found[label]:
                pooled[:, c] = np.logaddexp(pooled[:, c], logprobs[:, words.index(word)])
    rest = pooled[GOLD_ROWS:]
    pred = (rest + prior_bias(rest)).argmax(axis=1)
    return _macro_f1(gold[GOLD_ROWS:], pred, len(task.label_names))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    tasks = [t for t in suite_data.SUITE if t != "boolq"]  # BoolQ's passages: hours on this CPU
    parser.add_argument("--tasks", nargs="+", choices=list(suite_data.SUITE), default=tasks)
    parser.add_argument("--model", default=DEFAULT_LABELER)
    parser.add_argument("--work", type=Path, default=Path("/tmp/llmst-eval/label-words"))
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "label_words_study.json"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    backend = make_backend(BackendSpec(model=args.model, quiet=True))
    cells = {}
    for name in args.tasks:
        for family in ADHOC_FAMILIES:
            spec = suite_data.SUITE[name]
            task = adhoc_task(list(spec.labels), list(spec.text_fields), family=family)
            data = distributions(name, family, backend, args.work / args.model)
            cells[f"{name}/{family}"] = {
                "rows_scored": int(len(data["gold"]) - GOLD_ROWS),
                "names_only": round(score(data, task, (0, 0, 0)), 4),
                **{_key(s): round(score(data, task, s), 4) for s in GRID},
            }
            print(
                f"[study] {name} {family}: names only {cells[f'{name}/{family}']['names_only']:.4f}",
                file=sys.stderr,
            )
    lines = [
        "| min gain | words per label | pool | mean gain in macro-F1 | better | worse | of |",
        "|---|---|---|---|---|---|---|",
    ]
    summary = []
    for setting in GRID:
        key = _key(setting)
        gains = [cell[key] - cell["names_only"] for cell in cells.values()]
        row = {"setting": key, "mean_gain": round(float(np.mean(gains)), 4), "better": sum(g > 5e-4 for g in gains),
               "worse": sum(g < -5e-4 for g in gains), "cells": len(gains)}  # fmt: skip
        summary.append(row)
        lines.append(f"| {setting[0]:g} | {setting[1]} | {setting[2]} | {row['mean_gain']:+.4f} | {row['better']} | {row['worse']} | {row['cells']} |")  # fmt: skip
    table = "\n".join(lines)
    print(table)
    args.json.write_text(json.dumps({
        "command": "python " + " ".join(sys.argv), "model": args.model, "gold_rows": GOLD_ROWS,
        "seconds": round(time.perf_counter() - started, 1), "summary": summary, "cells": cells, "table": table,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
