#!/usr/bin/env bash
# The committed CPU engine records (issues 24 item 6 and 25): mbbench's reference ModernBERT-base against
# transformers' ModernBERT-base (the same seeded fp32 weights) on the four engines (torch, torch.compile, ONNX
# Runtime, OpenVINO), interleaved in one process per workload: the paper's four suites subsampled as the other
# CPU records are, with long-fixed's subsample being one 8,192-token document, plus one 4,096-token document;
# and the fused element-wise kernels against eager (scripts/compare_elementwise.py). Every engine is checked for
# parity with torch before it is timed (a failing side is left out, with the reason); each comparison keeps
# every side's tokens/s, parity error, threads and cold start, which the report's engines table reads. The CPU
# is named in each record (device.name). Run on a QUIET machine (about an hour on 2 cores):
#
#     OUT=results THREADS=2 scripts/engine_records.sh
#
# Extra arguments go to every compare, after the script's own, so they win (click keeps an option's last value).
# The CPU smoke of this script (what CI-sized checks run):
#
#     OUT=/tmp/engine-smoke SMOKE=1 scripts/engine_records.sh --tiny --runs 1 --docs 2
set -euo pipefail

OUT="${OUT:-results}"
THREADS="${THREADS:-$(nproc)}"
MBBENCH=(${MBBENCH:-python -m mbbench.cli})
MODEL=hf-modernbert-base
ENGINES=(torch-compile onnxruntime openvino)

# suite, then its subsample: documents, batch size. The 4,096-token document leaves torch.compile out (its
# compile at that length costs minutes; the other workloads measure it). On a 24 GB machine ONNX Runtime and
# OpenVINO are left out of the 8,192-token comparison by the host-memory check (engines/host_memory.py).
WORKLOADS=(
  "short-fixed --docs 16 --batch-size 16"
  "long-fixed --docs 1 --batch-size 1"  # the 1 x 8192 document (long-fixed's subsample)
  "long-variable --docs 4 --batch-size 1"  # one document per batch: 4 x 4,402 padded would need ~24 GB on ORT
  "short-variable --docs 32 --batch-size 32"
  "docs/examples/one-4096.toml --docs 1 --batch-size 1 --no-compile"
)

if [[ -z "${SMOKE:-}" ]]; then
  PYTHONPATH="$PWD" python scripts/compare_elementwise.py --suite short-fixed --docs 16 --batch-size 16 --rounds 6 \
    --threads "$THREADS" --out benchmarks/cpu/elementwise-inductor-vs-eager__short-fixed__bs16__docs16.json
fi
for workload in "${WORKLOADS[@]}"; do
  read -r suite subsample <<<"$workload"
  sides=(--model modernbert-base --model "$MODEL")
  for engine in "${ENGINES[@]}"; do
    [[ "$engine" == torch-compile && "$subsample" == *--no-compile ]] || sides+=(--model "$MODEL@$engine")
  done
  "${MBBENCH[@]}" compare "${sides[@]}" --baseline modernbert-base --suite "$suite" ${subsample%--no-compile} \
    --runs 6 --device cpu --dtype float32 --threads "$THREADS" --out "$OUT" "$@"
done
