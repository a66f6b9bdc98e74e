#!/usr/bin/env bash
# The committed CPU engine records (issue 24 item 6): transformers' ModernBERT-base (the same seeded fp32
# weights) on the four engines, plus mbbench's reference model on torch, over the paper's four suites
# subsampled as the other CPU records are, and one 1 x 8192 document. Every engine is checked for parity with
# torch before it is timed; the CPU is named in each record (device.name). Run on a QUIET machine:
#
#     OUT=results THREADS=2 scripts/engine_records.sh
#
# Extra arguments go to every command, after the script's own, so they win (click keeps an option's last
# value). The CPU smoke of this script (what CI-sized checks run):
#
#     OUT=/tmp/engine-smoke scripts/engine_records.sh --tiny --runs 1 --docs 2
#
# Per suite: one `run` per engine (absolute tokens/s, parity error, cold start: the report's engines table)
# and one `compare` of every side interleaved (ratios with bootstrap intervals against transformers on torch).
set -euo pipefail

OUT="${OUT:-results}"
THREADS="${THREADS:-$(nproc)}"
MBBENCH=(${MBBENCH:-python -m mbbench.cli})
MODEL=hf-modernbert-base
ENGINES=(torch torch-compile onnxruntime openvino)

# suite, then its subsample: documents, batch size, timed passes
WORKLOADS=(
  "short-fixed --docs 16 --batch-size 16 --runs 10"
  "short-variable --docs 32 --batch-size 32 --runs 10"
  "long-variable --docs 4 --batch-size 4 --runs 5"
  "long-fixed --docs 1 --batch-size 1 --runs 5"  # the 1 x 8192 document (long-fixed's subsample)
)

for workload in "${WORKLOADS[@]}"; do
  read -r suite subsample <<<"$workload"
  common=(--suite "$suite" $subsample --device cpu --dtype float32 --threads "$THREADS" --out "$OUT")
  for engine in "${ENGINES[@]}"; do
    "${MBBENCH[@]}" run --model "$MODEL" --engine "$engine" "${common[@]}" "$@"
  done
  "${MBBENCH[@]}" run --model modernbert-base "${common[@]}" "$@"
  "${MBBENCH[@]}" compare --model modernbert-base --model "$MODEL" --model "$MODEL@torch-compile" \
    --model "$MODEL@onnxruntime" --model "$MODEL@openvino" --baseline "$MODEL" "${common[@]}" "$@"
done
