#!/usr/bin/env bash
# The quality bench at GPT-2-124M's shapes, for a machine with a CUDA GPU (docs/quality.md).
#
# 1. Pre-trains the GPT-2-124M-shaped proxy (12 x 768, GPT-2's own tokenizer from
#    ../shared/models/gpt2-tokenizer/) on the offline prose for PRETRAIN_MINUTES (one H200: about
#    150 s for ~22 M tokens), cached under bench/results/quality/ like the CPU proxies;
# 2. adapts it to tweets, leaving out the person being fine-tuned (ADAPT_MINUTES per person);
# 3. fine-tunes every shared person's tweets, all of them, for 4 epochs with the project's own
#    train(), for the variants in VARIANTS (substrings of bench/quality.py's variant names), and
#    prints the table (rows appended to RESULTS).
#
#   bench/gpu_quality.sh                       # everything, defaults below
#   VARIANTS="default|full lr 2e-4" bench/gpu_quality.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
PRETRAIN_MINUTES=${PRETRAIN_MINUTES:-2.5}
PRETRAIN_TOKENS=${PRETRAIN_TOKENS:-25000000}
ADAPT_MINUTES=${ADAPT_MINUTES:-0.5}
EPOCHS=${EPOCHS:-4}
RESULTS=${RESULTS:-bench/results/quality-gpt2-124m.jsonl}
VARIANTS=${VARIANTS:-default|full lr 2e-4|full lr 1e-3|rsLoRA lr|previous default}

if ! "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "No CUDA GPU here: bench/gpu_quality.sh is for a GPU machine (on a CPU use --shape gpt2-depth)." >&2
    exit 2
fi
IFS='|' read -r -a variants <<< "$VARIANTS"
common=(--shape gpt2-124m --device cuda --pretrain-minutes "$PRETRAIN_MINUTES"
        --pretrain-tokens "$PRETRAIN_TOKENS" --pretrain-batch 96 --pretrain-lr 6e-4
        --adapt-minutes "$ADAPT_MINUTES")
"$PYTHON" -m bench.quality "${common[@]}" --pretrain-only
"$PYTHON" -m bench.quality "${common[@]}" --epochs "$EPOCHS" --in-process \
    --variants "${variants[@]}" --results "$RESULTS"
"$PYTHON" -m bench.quality --table "$RESULTS"
