"""The issue-9 acceptance table from the suite's saved results (no model runs): majority baseline, the old and new
ad-hoc defaults, `--calibrate none`, `--prior em` and `llmst tune`, macro-F1 per task (✗: not above majority).

    python eval/suite_table.py [--split test]   # reads eval/results/suite_<config>_<split>.json, suite_tune_<split>.json
"""

import argparse
import json

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--split", default="test")
parser.add_argument(
    "--tune",
    nargs="+",
    default=None,
    help="instead: the table of these eval/suite_tune.py JSON files (tasks joined)",
)
args = parser.parse_args()
split = args.split
if args.tune:  # default vs tuned, from suite_tune runs (each scores its own ad-hoc default in the same run)
    rows = [r for path in args.tune for r in json.load(open(path))["results"]]
    print("| task | rows | majority | ad-hoc default | tuned | tuned - default | tuned choice |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        c = r["chosen"]
        mark = "" if r["tuned_f1"] > r["majority_f1"] else " ✗"
        dmark = "" if r["default_f1"] > r["majority_f1"] else " ✗"
        print(f"| {r['task']} | {r['scored_rows']} | {r['majority_f1']:.3f} | {r['default_f1']:.3f}{dmark} | "
              f"{r['tuned_f1']:.3f}{mark} | {r['tuned_f1'] - r['default_f1']:+.3f} | "
              f"{c['prompt']}, {c['shots']}-shot, {c['calibration']} |")  # fmt: skip
    n = len(rows)
    mean = {k: sum(r[k] for r in rows) / n for k in ("majority_f1", "default_f1", "tuned_f1")}
    print(f"| **mean ({n} tasks)** | | {mean['majority_f1']:.3f} | {mean['default_f1']:.3f} | "
          f"{mean['tuned_f1']:.3f} | **{mean['tuned_f1'] - mean['default_f1']:+.3f}** | |")  # fmt: skip
    above = [sum(r[k] > r["majority_f1"] for r in rows) for k in ("default_f1", "tuned_f1")]
    print(f"| above majority | | | {above[0]} of {n} | {above[1]} of {n} | | |")
    raise SystemExit(0)
R = "eval/results/"
cfgs = [
    ("adhoc-question", "old default (question)"),
    ("adhoc-classify", "new default (classify, prior uniform)"),
    ("adhoc-raw", "new, `--calibrate none`"),
    ("adhoc-em", "new, `--prior em`"),
]
res = {c: {r["task"]: r for r in json.load(open(R + f"suite_{c}_{split}.json"))["results"]} for c, _ in cfgs}
tune = {}
for name in (
    f"suite_tune_{split}.json",
    f"suite_tune_{split}_partial.json",
):  # a stopped run writes the latter
    try:
        tune = {r["task"]: r for r in json.load(open(R + name))["results"]}
        break
    except FileNotFoundError:
        pass
tasks = list(res["adhoc-classify"])
head = "| task | rows | majority | " + " | ".join(n for _, n in cfgs) + " | tune (100 dev rows, 0-shot) |"
print(head)
print("|" + "---|" * (4 + len(cfgs)))
means = {c: [] for c, _ in cfgs}
tm = []
for t in tasks:
    r0 = res["adhoc-classify"][t]
    cells = [t, str(r0["rows"]), f"{r0['majority']['macro_f1']:.3f}"]
    for c, _ in cfgs:
        f = res[c][t]["macro_f1"]
        means[c].append(f)
        mark = "" if f > r0["majority"]["macro_f1"] else " ✗"
        cells.append(f"{f:.3f}{mark}")
    if t in tune:
        cells.append(f"{tune[t]['tuned_f1']:.3f}")
        tm.append(tune[t]["tuned_f1"])
    else:
        cells.append("")
    print("| " + " | ".join(cells) + " |")
cells = [
    "**mean**",
    "",
    f"{sum(r['majority']['macro_f1'] for r in res['adhoc-classify'].values()) / len(tasks):.3f}",
]
for c, _ in cfgs:
    cells.append(f"**{sum(means[c]) / len(tasks):.3f}**")
cells.append(f"{sum(tm) / len(tm):.3f} ({len(tm)} tasks)" if tm else "")
print("| " + " | ".join(cells) + " |")
above = {
    c: sum(res[c][t]["macro_f1"] > res["adhoc-classify"][t]["majority"]["macro_f1"] for t in tasks)
    for c, _ in cfgs
}
print("above majority:", above)
print(
    "prior vs none worse by >1pt:",
    [
        (t, round(res["adhoc-classify"][t]["macro_f1"] - res["adhoc-raw"][t]["macro_f1"], 4))
        for t in tasks
        if res["adhoc-classify"][t]["macro_f1"] < res["adhoc-raw"][t]["macro_f1"] - 0.01
    ],
)
