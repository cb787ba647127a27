#!/usr/bin/env bash
# The measured part of docs/results.md, on a GPU machine (16 CPU cores + one GPU), in two phases
# because the model file travels in two halves (each device call carries at most 64 MiB):
#   PHASE=build  copies MODEL_PART (folder with the GGUF's first half) to /tmp, unpacks the build
#                dependencies (GPU_DEPS_DEBS), builds sparsa_cli with CUDA in $BUILD_DIR.
#   PHASE=table  joins /tmp/model-part.* with MODEL_PART (the second half), checks the sha256,
#                then scripts/results_table.py: every row of the pruning table pruned on the CPU,
#                evaluated on the whole text on the GPU, a few rows also on the CPU over a prefix,
#                then tokens/s on the CPU and on the GPU, one process at a time. Writes
#                $OUT/results.json (rows as they finish) and $OUT/logs.tar.gz.
# TABLE_ARGS: extra results_table.py arguments (e.g. --rows ... --deadline 500).
# Commit $OUT/results.json as bench/results/results-<device>-<date>.json; scripts/results.sh
# renders docs/results.md from it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/results-out}
BUILD_DIR=${BUILD_DIR:-/tmp/build-results}
SRC=${SRC:-/tmp/src-results}
mkdir -p "$OUT"
. scripts/gpu_deps_env.sh
export LD_LIBRARY_PATH=$sparsa_deps_libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

if [ "${PHASE:-build}" = build ]; then
  step "machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/device.txt"
  grep -m1 "model name" /proc/cpuinfo | tee -a "$OUT/device.txt"
  echo "cpus $(nproc)" | tee -a "$OUT/device.txt"
  stage_model_part
  if [ -n "${GPU_DEPS_DEBS:-}" ]; then
    step "unpacking build dependencies from $GPU_DEPS_DEBS"
    use_carried_deps "$GPU_DEPS_DEBS" || exit 2
  fi
  configure_cli_build "$SRC"
  step "build sparsa_cli"
  cmake --build "$BUILD_DIR" -j "$(nproc)" --target sparsa_cli > "$OUT/build.log" 2>&1 \
    || { grep -E "error|FAILED" "$OUT/build.log" | head -40; echo "build FAILED"; exit 2; }
  step "built"
  exit 0
fi

# ---- PHASE=table --------------------------------------------------------------------------------
bin=$BUILD_DIR/sparsa
[ -x "$bin" ] || { echo "no build in $BUILD_DIR: run PHASE=build first"; exit 2; }
step "model"
model=/tmp/model.gguf
join_model "$model" || exit 2
step "table"
logs=/tmp/results-logs
rm -rf "$logs" && mkdir -p "$logs"
# shellcheck disable=SC2086
PYTHONUNBUFFERED=1 python3 scripts/results_table.py --bin "$bin" --model "$model" \
  --out "$OUT/results.json" --logs "$logs" --label "${LABEL:-}" ${TABLE_ARGS:-} 2>&1 | tee "$OUT/table.log"
status=${PIPESTATUS[0]}
tar -czf "$OUT/logs.tar.gz" -C /tmp results-logs
echo "results_device table: exit $status"
exit "$status"
