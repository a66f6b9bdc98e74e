#!/usr/bin/env bash
# The predicted records committed under results/, made by the tool, never by hand. Rerun after the model changes
# (a new perfmodel MODEL_VERSION or calibration data), from any directory:
#   bash scripts/predictions.sh
# 1. the reference predictions: ModernBERT and BERT on the H100, RTX 4090 and T4 (rigorous protocol), and every
#    model of the paper's RTX 4090 table (paper protocol);
# 2. the GPU session's throughput configurations (scripts/gpu_run.py: throughput_short, throughput_long) on the
#    Hopper GPUs a session may be lent, committed before the session runs so that its first records also measure
#    the model (its `predictions` step compares them; tests/test_prediction_check.py keeps the two lists equal).
set -euo pipefail
cd "$(dirname "$0")/.."
mbbench() { PYTHONPATH=. python -m mbbench.cli "$@"; }
mbbench predict --model modernbert-base --model bert-base --suite short-fixed --suite short-variable \
    --suite long-fixed --suite long-variable --gpu h100 --gpu 4090 --gpu t4 --out results --force --quiet
mbbench predict --model bert-base --model bert-large --model deberta-v3-base --model deberta-v3-large \
    --model gte-en-mlm-base --model gte-en-mlm-base-unpadded --model gte-en-mlm-large \
    --model gte-en-mlm-large-unpadded --model modernbert-base --model modernbert-large --model nomic-bert \
    --model roberta-base --model roberta-large --suite short-fixed --suite short-variable --suite long-fixed \
    --suite long-variable --protocol paper --gpu 4090 --out results --force --quiet
session=(--model modernbert-base --model hf-modernbert-base --model bert-base --gpu h100 --gpu h200
         --out results --force --quiet)
mbbench predict "${session[@]}" --suite short-fixed --suite short-variable --docs 1024
mbbench predict "${session[@]}" --suite long-fixed --suite long-variable --docs 32
