#!/usr/bin/env bash
# One batch for the GPU entropy decoder (lossless:gpu) on a GPU machine: build the GPU tests and
# bench/gpu_rans for sm_90, run the GpuRans tests, compute-sanitizer memcheck on them, then the
# decode/GEMV benchmark. Dependencies are unpacked as scripts/gpu_check.sh does. Logs and
# gpu-rans.json go to $OUT (default ./gpu-out).
#   GPU_DEPS_DEBS  folder of .deb build dependencies (default .gpu-deps if present)
#   RANS_ARGS      extra arguments for gpu_rans (e.g. --repeats 30)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_deps_env.sh
gpu_batch_start

step "configure"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSPARSA_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90-real -DCMAKE_CUDA_FLAGS="-Xptxas -v" \
  > "$OUT/configure.log" 2>&1 || { tail -40 "$OUT/configure.log"; echo "configure FAILED"; exit 2; }
step "build"
cmake --build "$BUILD_DIR" -j "$(nproc)" --target sparsa_gpu_tests gpu_rans > "$OUT/build.log" 2>&1 \
  || { grep -E "error|FAILED" "$OUT/build.log" | head -40; echo "build FAILED"; exit 2; }
grep -A2 "rans_decode" "$OUT/build.log" | grep -E "registers|spill" | sort | uniq -c | head

step "GpuRans tests"
"$BUILD_DIR/tests/sparsa_gpu_tests" --gtest_filter='GpuRans*' 2>&1 | tee "$OUT/tests.log" | tail -25
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "compute-sanitizer memcheck (GpuRans)"
compute-sanitizer --tool memcheck --leak-check full --error-exitcode 3 \
  "$BUILD_DIR/tests/sparsa_gpu_tests" --gtest_filter='GpuRans.Gemv*:GpuRans.Damaged*:GpuRans.Bad*' \
  > "$OUT/memcheck.log" 2>&1
mc=$?
tail -6 "$OUT/memcheck.log"
[ $mc -eq 0 ] || { echo "memcheck FAILED ($mc)"; status=1; }

step "bench gpu_rans ${RANS_ARGS:-}"
# shellcheck disable=SC2086
"$BUILD_DIR/bench/gpu_rans" ${RANS_ARGS:-} --out "$OUT/gpu-rans.json" 2>&1 | tee "$OUT/bench.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo
echo "gpu_rans_check: exit $status"
exit $status
