#!/usr/bin/env bash
# The main job end to end on a small built-in example, no download needed:
# make a SOUSA dataset -> validate it -> pack it into WebDataset shards -> verify -> stream.
# Everything goes to ./demo (recreated on each run).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/sousa-wds ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e .
fi
export PATH="$PWD/.venv/bin:$PATH"

rm -rf demo
sousa-wds example demo/sousa --samples 60 --quiet
sousa-wds check demo/sousa
sousa-wds pack demo/sousa demo/packed --shard-size 8MB --quiet
sousa-wds verify demo/packed --deep --quiet
sousa-wds stream demo/packed --split train --limit 5
