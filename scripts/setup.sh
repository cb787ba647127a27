#!/usr/bin/env bash
# Fresh Debian machine -> dependencies installed, sparsa built, and the main job run:
# generate a Llama-style layer set, prune it to 2:4 and 64:2:8, pack it, and print a table of
# sparsity, bytes per weight and kernel speed against the dense kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_deps.sh
cmake --preset release
cmake --build --preset release
./build/release/sparsa demo "$@"
