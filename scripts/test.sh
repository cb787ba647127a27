#!/usr/bin/env bash
# Builds sparsa (CUDA code too when nvcc is present) and runs the whole CPU test suite.
# GPU tests carry the CTest label `gpu`; run them on a GPU machine with scripts/gpu_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_deps.sh
cmake --preset release
cmake --build --preset release
ctest --preset release
