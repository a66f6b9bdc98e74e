#!/usr/bin/env bash
# One prepared GPU session (issue 7): environment, matmul peak, GPU tests, benchmarks, max batch.
# Run from a plain checkout on the GPU machine:  PYTHONPATH=. OUT=/some/dir [BUDGET_S=480] bash scripts/gpu_check.sh
# Every step logs to $OUT/log.txt and keeps going on failure; records land in $OUT/results/.
set -u
OUT=${OUT:-$(mktemp -d)}
export PYTHONPATH=${PYTHONPATH:-.}
mkdir -p "$OUT/results"
LOG="$OUT/log.txt"
STATUS="$OUT/steps.tsv"
: > "$STATUS"

# The device session is short: steps run in priority order, each capped by what is left of BUDGET_S,
# and a step that would get under 20 s is skipped (and says so) rather than cut off half-way.
BUDGET_S=${BUDGET_S:-480}
STARTED=$(date +%s)

step() {  # step NAME TIMEOUT_S COMMAND...
    local name=$1 limit=$2; shift 2
    local left=$(( BUDGET_S - ($(date +%s) - STARTED) ))
    if (( left < 20 )); then
        printf '%s\tskipped\t(budget of %ss spent)\n' "$name" "$BUDGET_S" | tee -a "$STATUS"
        return
    fi
    (( limit > left )) && limit=$left
    echo "=== $name: $*" | tee -a "$LOG"
    local began=$(date +%s)
    timeout "$limit" "$@" >> "$LOG" 2>&1
    local rc=$?
    printf '%s\t%s\t%ss\n' "$name" "$rc" "$(( $(date +%s) - began ))" | tee -a "$STATUS"
}

step environment 60 python -c "
import json, torch, subprocess
from mbbench.hardware.gpus import detect
from mbbench import environment
d = detect('cuda')
info = {'device': d.__dict__, 'environment': environment.capture()}
info['nvidia_smi'] = subprocess.run(['nvidia-smi', '-q', '-d', 'CLOCK'], capture_output=True, text=True).stdout
json.dump(info, open('$OUT/environment.json', 'w'), indent=2, default=str)
print(d)"
step matmul_peak 90 python -m mbbench.bench.matmul --out "$OUT/matmul_peak.json"
step gpu_tests 150 python -m pytest -q -m gpu tests
step verify_bf16 120 python -m mbbench.cli verify --model modernbert-base --device cuda --dtype bfloat16 --backend varlen --backend flex --backend sdpa
for suite in short-fixed short-variable long-fixed long-variable; do
    case $suite in short-*) docs=2048;; long-*) docs=128;; esac
    step "bench_$suite" 120 python -m mbbench.cli run --model modernbert-base --model hf-modernbert-base --model bert-base \
        --suite $suite --docs $docs --runs 10 --device cuda --out "$OUT/results" --quiet
done
step maxbatch_512 120 python -m mbbench.cli run --max-batch --model modernbert-base --model bert-base --suite short-fixed --device cuda --out "$OUT/results" --quiet
step maxbatch_8192 90 python -m mbbench.cli run --max-batch --model modernbert-base --suite long-fixed --device cuda --out "$OUT/results" --quiet
step maxbatch_24gib 120 python -m mbbench.cli run --max-batch --memory-limit 24GiB --model modernbert-base --model bert-base --suite short-fixed --device cuda --out "$OUT/results" --quiet
# the matrix path on a real GPU (local executor; Ray is not installed there): type label, placement check, NVML by UUID
step matrix_local 90 python -m mbbench.cli matrix --model modernbert-base --model bert-base --suite short-variable \
    --docs 512 --runs 3 --gpu h100 --gpu h200 --out "$OUT/matrix" --quiet
step summary 60 python -m mbbench.cli report --results "$OUT/results" --out "$OUT/report"
echo "=== steps (name, exit status, seconds)"; cat "$STATUS"
python - "$OUT/results" <<'PY'
import sys
from mbbench import results
frame = results.load(sys.argv[1])
print(frame[["model", "suite", "kind", "status", "backend", "dtype", "tokens_per_second", "tps_iqr_over_median",
             "max_batch_size"]].to_string())
PY
