#!/usr/bin/env bash
# One batch on a GPU machine: configure for sm_90 (plus the sm_90a pass CMake adds), build the
# GPU tests and the GEMM benchmark, run `ctest -L gpu`, compute-sanitizer memcheck on a small
# GPU test, then `bench gemm`. Logs and the benchmark JSON go to $OUT (default ./gpu-out).
#
# Environment:
#   OUT            output folder (default ./gpu-out)
#   BENCH_ARGS     arguments for `bench gemm` (default: the full benchmark); BENCH=0 skips it
#   CTEST_ARGS     extra arguments for `ctest -L gpu` (e.g. -R 'GpuNm24|GpuVnm' for a subset)
#   CUDA_ARCHS     CMAKE_CUDA_ARCHITECTURES (default 90-real; OFF builds only the sm_90a pass,
#                  about half the compile time, for H100/H200 runs)
#   GPU_DEPS_DEBS  folder of Debian packages (.deb) to unpack when the machine lacks sparsa's
#                  build dependencies (see scripts/gpu_deps.sh); default .gpu-deps if present
#   BUILD_DIR      build folder (default build/gpu)
#   PROFILE=1      Nsight Compute on PROFILE_CASES ("NxK:m:pattern" ...), kernels matching
#                  PROFILE_KERNELS (regex, default decode_kernel|prefill_kernel|wgmma)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_deps_env.sh
gpu_batch_start

# ---- cuSPARSELt from PyTorch's site-packages, when present -----------------------------------
cslt_root=$(python3 - <<'EOF' 2>/dev/null
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
for r in roots:
    for h in glob.glob(os.path.join(r, "nvidia", "**", "cusparseLt.h"), recursive=True):
        print(os.path.dirname(os.path.dirname(h))); raise SystemExit
EOF
)
if [ -n "$cslt_root" ]; then
  echo "cuSPARSELt: $cslt_root"
  cmake_extra+=(-DSPARSA_CUSPARSELT_ROOT="$cslt_root")
  export LD_LIBRARY_PATH=$cslt_root/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
else
  echo "cuSPARSELt: not found (cusparselt_us will be left out)"
fi

# ---- configure and build ---------------------------------------------------------------------
step "configure"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSPARSA_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90-real}" -DCMAKE_CUDA_FLAGS="-Xptxas -v" "${cmake_extra[@]}" \
  > "$OUT/configure.log" 2>&1 || { tail -40 "$OUT/configure.log"; echo "configure FAILED"; exit 2; }
grep -E "sparsa:" "$OUT/configure.log"
step "build"
if ! cmake --build "$BUILD_DIR" -j "$(nproc)" --target sparsa_gpu_tests gpu_gemm > "$OUT/build.log" 2>&1; then
  grep -E "error|FAILED" "$OUT/build.log" | head -40
  if [ -n "$cslt_root" ]; then  # a cuSPARSELt mismatch must not cost the whole run
    echo "build FAILED; retrying without cuSPARSELt"
    cmake -S . -B "$BUILD_DIR" -DSPARSA_CUSPARSELT_ROOT=/nonexistent >> "$OUT/configure.log" 2>&1
    cmake --build "$BUILD_DIR" -j "$(nproc)" --target sparsa_gpu_tests gpu_gemm >> "$OUT/build.log" 2>&1 \
      || { echo "build FAILED"; exit 2; }
  else
    echo "build FAILED"; exit 2
  fi
fi
echo "registers / spills of the sparse kernels (ptxas):"
grep -E "bytes stack frame|Used [0-9]+ registers" "$OUT/build.log" | sed 's/ptxas info *: //' | sort | uniq -c | sort -rn | head -12

# ---- tests -----------------------------------------------------------------------------------
step "ctest -L gpu"
# shellcheck disable=SC2086
(cd "$BUILD_DIR" && ctest -L gpu --output-on-failure --timeout 600 ${CTEST_ARGS:-}) 2>&1 | tee "$OUT/ctest.log" | tail -40
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "compute-sanitizer memcheck (small GPU test)"
compute-sanitizer --tool memcheck --leak-check full --error-exitcode 3 \
  "$BUILD_DIR/tests/sparsa_gpu_tests" --gtest_filter='*GemmPicksAPathForEveryM' \
  > "$OUT/memcheck.log" 2>&1
mc=$?
tail -6 "$OUT/memcheck.log"
[ $mc -eq 0 ] || { echo "memcheck FAILED ($mc)"; status=1; }

# ---- optional Nsight Compute profile of a few kernels (PROFILE=1) ----------------------------
if [ "${PROFILE:-0}" != 0 ]; then
  step "ncu"
  bench_bin="$BUILD_DIR/bench/gpu_gemm"
  sections="--section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis --section LaunchStats"
  : > "$OUT/ncu.txt"
  for cfg in ${PROFILE_CASES:-"14336x4096:1:2:4" "14336x4096:16:64:2:8" "4096x4096:2048:2:4" "4096x4096:1:128:2:16"}; do
    shape=${cfg%%:*}; rest=${cfg#*:}; m=${rest%%:*}; pat=${rest#*:}
    echo "--- $shape m=$m $pat" | tee -a "$OUT/ncu.txt"
    # shellcheck disable=SC2086
    ncu -k regex:"${PROFILE_KERNELS:-decode_kernel|prefill_kernel|wgmma}" --launch-skip 3 --launch-count 1 $sections \
      "$bench_bin" bench gemm --shapes "$shape" --m "$m" --patterns "$pat" --repeats 3 >> "$OUT/ncu.txt" 2>&1
  done
  grep -E "^---|Duration|DRAM Throughput|Memory Throughput|Compute \(SM\)|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Warp Cycles Per Issued|Issued Warp|No Eligible|Stall|L1/TEX Hit|L2 Hit|Mem Busy|Max Bandwidth" "$OUT/ncu.txt" | head -150
fi

# ---- benchmark -------------------------------------------------------------------------------
if [ "${BENCH:-1}" != 0 ]; then
  step "bench gemm ${BENCH_ARGS:-}"
  bench_bin="$BUILD_DIR/bench/gpu_gemm"
  # shellcheck disable=SC2086
  "$bench_bin" bench gemm ${BENCH_ARGS:-} --out "$OUT/gemm.json" 2>&1 | tee "$OUT/bench.log" | tail -60
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi
echo
echo "gpu_check: exit $status"
exit $status
