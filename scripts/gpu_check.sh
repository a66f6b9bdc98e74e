#!/usr/bin/env bash
# One prepared GPU session (issue 15): OUT=/dir [BUDGET_S=510] [ONLY=step,step] bash scripts/gpu_check.sh
# The driver is scripts/gpu_run.py (steps, caps, budget, archive, summary); docs/gpu-run.md says how to run it.
cd "$(dirname "$0")/.." && exec "$(command -v python3 || command -v python)" scripts/gpu_run.py "$@"
