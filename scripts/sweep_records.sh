#!/usr/bin/env bash
# The committed measured sweeps on this CPU (issue 32 item 6): which hidden and GLU widths the CPU favours, in
# fp32 and bf16, with the CPU cost model's rank correlation. Two grids per dtype:
#   - the check (hidden 704, 768, 832 x GLU 2048, 2304, 2560, 2 layers, 4,096 tokens per pass);
#   - a wider one around ModernBERT-base (hidden 640-896 x GLU 1792-2816, 25 shapes, 2 layers, 2,048 tokens).
# Each shape is our reference ModernBERT, measured in interleaved rounds with an anchor shape in every block
# (docs/benchmarking.md, "What a measured sweep times"). A record, a CSV and a figure per sweep go to
# OUT/cpu/. The kernel timings it needs are measured once per CPU and kept in the kernel cache
# ($MBBENCH_KERNEL_CACHE, else ~/.cache/mbbench/kernels). Run on a QUIET machine (nothing else running). On the
# 2-core AMD EPYC (Zen 3, AVX2, no bf16 units, where oneDNN has no bf16 linear) bf16 GEMMs at ModernBERT-base's
# shapes ran at 9 GFLOP/s against 70 in fp32 (torch's kernel, 2048 rows, a busy machine), so expect about 10
# minutes in fp32 and about an hour in bf16:
#
#     OUT=results THREADS=2 scripts/sweep_records.sh
#
# An interrupted run keeps every finished block; the same command measures the rest. Extra arguments go to
# every sweep, after the script's own, so they win. The CPU smoke of this script (a tiny grid):
#
#     OUT=/tmp/sweep-smoke SMOKE=1 scripts/sweep_records.sh
set -euo pipefail

OUT="${OUT:-results}"
THREADS="${THREADS:-$(nproc)}"
MBBENCH=(${MBBENCH:-python -m mbbench.cli})

if [[ -n "${SMOKE:-}" ]]; then
  GRIDS=("--hidden 64,128 --glu 128,256 --layers 1 --head-dim 32 --tokens 128 --rounds 2 --block 2")
  DTYPES=(float32 bfloat16)
else
  GRIDS=(
    "--hidden 704,768,832 --glu 2048,2304,2560 --layers 2 --tokens 4096 --rounds 6"
    "--hidden 640:896:64 --glu 1792:2816:256 --layers 2 --tokens 2048 --rounds 6"
  )
  DTYPES=(float32 bfloat16)
fi

for dtype in "${DTYPES[@]}"; do
  for grid in "${GRIDS[@]}"; do
    echo "== sweep --measure --dtype $dtype $grid" >&2
    # shellcheck disable=SC2086  # a grid is several options
    PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "${MBBENCH[@]}" sweep --measure --device cpu --dtype "$dtype" \
      --threads "$THREADS" $grid --out "$OUT" "$@"
  done
done
