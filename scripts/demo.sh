#!/usr/bin/env bash
# The main job end to end on the shipped SST-2 demo corpus (examples/sst2_demo, see its SOURCE.md):
#   label the unlabeled pool with the default LLM -> filter -> train a MiniLM student on the kept rows ->
#   label the gold test slice with both -> one table: labeler vs student on the test slice.
#
#   bash scripts/demo.sh            (make demo runs this; outputs under outputs/demo/)
#
# Settings (environment): LLMST=.venv/bin/llmst  PYTHON=<python beside LLMST>  DATA=examples/sst2_demo
#   OUT=outputs/demo  FILTER_ARGS=""  TRAIN_ARGS=""  (extra options of llmst filter / llmst train)
# Every option left out is llmst's default (label: prior calibration; filter: balanced, the most confident
# half; train: MiniLM-L6, 2 epochs; chosen on SST-2 dev by eval/default_path.py). The pool's `gold` field is
# never trained on: the filter only reads it to report the precision of the labels it kept.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
LLMST=${LLMST:-.venv/bin/llmst}
PYTHON=${PYTHON:-$(dirname "$LLMST")/python}
DATA=${DATA:-examples/sst2_demo}
OUT=${OUT:-outputs/demo}
FILTER_ARGS=${FILTER_ARGS:-}
TRAIN_ARGS=${TRAIN_ARGS:-}
mkdir -p "$OUT"
log="$OUT/demo.log"
: >"$log"
start=$(date +%s)
step() { echo "[demo $(($(date +%s) - start))s] $*" >&2; }
run() {  # run a command, its stdout to $1, its stderr to the log; on failure show the log's tail
    local out=$1
    shift
    if ! "$@" >"$out" 2>>"$log"; then
        echo "error: step failed: $*" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
}

step "1/6 label the pool ($(wc -l <"$DATA/pool.jsonl") rows) with the default LLM"
run "$OUT/label.pool.json" "$LLMST" label "$DATA/pool.jsonl" -o "$OUT/pool.labeled.jsonl" \
    --task sentiment --overwrite
step "2/6 label the test slice ($(wc -l <"$DATA/test.jsonl") rows) with the same LLM"
run "$OUT/label.test.json" "$LLMST" label "$DATA/test.jsonl" -o "$OUT/test.labeled.jsonl" \
    --task sentiment --overwrite
step "3/6 filter the pool's labels"
# shellcheck disable=SC2086  # FILTER_ARGS / TRAIN_ARGS are word lists on purpose
run "$OUT/filter.json" "$LLMST" filter "$OUT/pool.labeled.jsonl" -o "$OUT/pool.kept.jsonl" $FILTER_ARGS
step "4/6 train the student on the kept rows"
# shellcheck disable=SC2086
run "$OUT/train.json" "$LLMST" train "$OUT/pool.kept.jsonl" -o "$OUT/student" $TRAIN_ARGS --overwrite
step "5/6 the student labels the test slice"
run "$OUT/predict.json" "$LLMST" predict "$OUT/student" "$DATA/test.jsonl" -o "$OUT/test.student.jsonl" \
    --overwrite
step "6/6 score both against the test slice's gold labels"
run "$OUT/eval.labeler.json" "$LLMST" evaluate "$OUT/test.labeled.jsonl" --gold-field gold \
    --report-dir "$OUT/report/labeler"
run "$OUT/eval.student.json" "$LLMST" evaluate "$OUT/test.student.jsonl" --gold-field gold \
    --report-dir "$OUT/report/student"
seconds=$(($(date +%s) - start))

"$PYTHON" - "$OUT" "$DATA" "$seconds" <<'EOF'
import glob
import json
import sys
from pathlib import Path

out, data, seconds = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])


def load(name):
    text = (out / name).read_text()
    return json.loads(text[text.index("{") :])  # the JSON the command printed


labeler, student = load("eval.labeler.json"), load("eval.student.json")
report = load("filter.json")
pool_rows = sum(1 for _ in open(data / "pool.jsonl"))
precision = (report.get("gold") or {}).get("precision_kept")
kept = f"{report['n_kept']} of {pool_rows} pool rows kept by `{report['method']}`"
if precision is not None:
    kept += f" (precision of the kept labels {precision:.3f}, from the pool's gold field, report only)"
print()
print(f"SST-2 demo: {labeler['n']} gold test rows; {kept}; wall time {seconds // 60} min {seconds % 60} s")
print()
print("| model | accuracy | macro-F1 |")
print("|---|---|---|")
print(f"| labeler: default LLM, zero-shot, prior-calibrated | {labeler['accuracy']:.4f} | {labeler['macro_f1']:.4f} |")
print(f"| student: MiniLM-L6 trained on the kept pseudo-labels | {student['accuracy']:.4f} | {student['macro_f1']:.4f} |")
diff = student["accuracy"] - labeler["accuracy"]
print()
print(f"student minus labeler: {diff:+.4f} accuracy on {labeler['n']} rows "
      f"(a {labeler['n']}-row accuracy has a standard error of about {100 * (0.85 * 0.15 / labeler['n']) ** 0.5:.1f} points)")
plots = sorted(glob.glob(f"{out}/report/*/*.png"))
print("plots: " + ", ".join(plots))
print(f"outputs: {out}/ (labeled files, kept rows, student model, reports; log: {out}/demo.log)")
EOF
